"""Settings of every stage as frozen dataclasses, with the paper's values as defaults.

Defaults cite Oquab, Bottou, Laptev, Sivic, "Learning and Transferring Mid-Level Image
Representations using Convolutional Neural Networks", CVPR 2014 (section 3.1 for the patch
grid and labels, 3.2 for the adaptation layers, 4 for the pooling exponent). The CLI builds
these objects; the library only receives them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from pipeline import __version__

GRID_KINDS = ("patches", "whole")
POOLS = ("max", "lse", "topk", "mean-pk")  # the weak head's poolings (pipeline/weak_head.py)
# Shard layout version, part of the cache digest: 2 added `sampled` and `image_labels`.
CACHE_FORMAT = 2


@dataclass(frozen=True)
class GridConfig:
    """Multi-scale square patch grid.

    The paper uses about 500 square patches per image at 8 scales with 50% overlap. Patch
    side = min(W, H) * s, s geometric from 1 down to `min_scale`; the stride is
    side * (1 - overlap), and the positions per axis are spread evenly from border to
    border so that every pixel is covered at every scale. Because of that border cover,
    min_scale 0.15 (not the 0.13 of a floor-count grid) gives the paper's count: exactly
    500 patches on a 500x375 VOC image.

    kind "whole" is the whole-image baseline the paper compares against (DeCAF; Razavian et
    al. 2014): one "patch" per image, the whole image squashed to the net's input square,
    trained on image-level labels. The other fields are then unused.
    """

    scales: int = 8
    min_scale: float = 0.15
    overlap: float = 0.5
    kind: str = "patches"  # "patches" (the paper's grid) or "whole" (one feature per image)


@dataclass(frozen=True)
class LabelRule:
    """The paper's patch labelling rule and the background subsampling of training splits.

    A patch P is labelled with class o when, for a box B of o, |P∩B| >= min_patch_cover*|P|
    and |P∩B| >= min_box_cover*|B| (paper: 0.2 and 0.6), and no box of another class meets
    the rule. Patches touching no box are background; about 10% of them are kept in
    training splits (paper), chosen with a seed per image so that the choice does not
    depend on the order or the machine that processes the image.
    """

    min_patch_cover: float = 0.2
    min_box_cover: float = 0.6
    background_ratio: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class TaskConfig:
    """Which recognition task the cache serves (pipeline/datasets/voc_action.py: action)."""

    name: str = "object"  # "object": VOC classification; "action": VOC 2012 Action persons
    context: float = 0.5  # action: the person box grows by this times its size (half per side)


@dataclass(frozen=True)
class BackboneConfig:
    """Which frozen network produces the features, and from which weights."""

    name: str = "efficientnet_lite0"
    weights: str | None = None  # None: the registry's ImageNet weights; a path; or "random"
    input_size: int | None = None  # None: the backbone's own input size
    # "crop": every patch cropped and run through the whole net (the paper; the reference);
    # "shared": the convolutional trunk once per image and scale, patches pooled from its map
    mode: str = "crop"


@dataclass(frozen=True)
class FeatureSettings:
    """Everything that changes the cached features and labels: its digest keys the cache.

    `data` is the dataset's kind and class list (None for PASCAL VOC's own classes, whose
    caches keep the digests they had before datasets were keyed): two datasets never share
    a cache, while a head serves any split whose settings other than `data` are its own.
    """

    backbone: dict
    grid: GridConfig = field(default_factory=GridConfig)
    labels: LabelRule = field(default_factory=LabelRule)
    task: TaskConfig = field(default_factory=TaskConfig)
    data: dict | None = None

    def as_dict(self) -> dict:
        settings = {
            "format": CACHE_FORMAT,
            "backbone": self.backbone,
            "grid": asdict(self.grid),
            "labels": asdict(self.labels),
        }
        if self.task != TaskConfig():  # object caches keep the keys they had before tasks
            settings["task"] = asdict(self.task)
        if self.data is not None:
            settings["data"] = self.data
        return settings

    def digest(self) -> str:
        """Short, stable hash of the settings; the code version is kept beside it, not in it."""
        text = json.dumps(self.as_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class CacheSettings:
    """Where the dataset and the cache are, and the feature settings that key the cache:
    every stage takes these, so fit and score find exactly what extract wrote.

    `data` is "KIND:PATH" or a path whose kind is detected (pipeline/datasets); "" where the
    stage reads the cache alone (fit and score then take the one dataset cached with these
    settings). `image_dir` is where a COCO JSON's or a CSV's images are, when not beside it.
    """

    data: str = ""
    cache_dir: str = "cache"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    labels: LabelRule = field(default_factory=LabelRule)
    task: TaskConfig = field(default_factory=TaskConfig)
    image_dir: str | None = None


KEEP_CHOICES = ("auto", "sample", "all")


@dataclass(frozen=True)
class ExtractConfig(CacheSettings):
    split: str = "trainval"
    # which patches a split stores: "sample" (training: object patches + a label-blind sample
    # of all), "all" (evaluation), "auto": by the split's role, a name starting with "train"
    keep: str = "auto"
    device: str = "auto"
    # the frozen net's runtime: "auto" is ONNX Runtime on a CPU, torch (fp16) on CUDA; not
    # part of the cache key (pipeline/onnx_runtime.py says why)
    runtime: str = "auto"
    batch_size: int | None = None  # patches per forward; None: the backbone's fastest
    workers: int = 1
    images_per_shard: int = 64
    limit: int | None = None  # first N images of the split, for quick looks
    overwrite: bool = False
    on_error: str = "stop"  # a bad image stops the run (one line), or "skip": logged, recorded


@dataclass(frozen=True)
class MLPConfig:
    """FCa (hidden units, ReLU, dropout) and FCb (classes + background, softmax): paper 3.2."""

    hidden: int = 2048
    dropout: float = 0.5
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    epochs: int = 20
    batch_size: int = 256
    background_weight: float = 1.0


@dataclass(frozen=True)
class SVMConfig:
    """Linear one-vs-rest SVM baseline on the same patch features."""

    C: float = 1.0
    epochs: int = 10
    background_weight: float = 1.0


@dataclass(frozen=True)
class WeakConfig:
    """The weak head (pipeline/weak_head.py): the MLP's adaptation layers (hidden, dropout,
    lr, ... of MLPConfig) trained from image labels through a pooling of patch scores.

    Oquab et al., CVPR 2015 pool with the global max. The default is mean-pk (the 2014
    paper's scoring, with the fit's k) because it won a 4-fold cross-validated sweep of the
    four poolings on the real VOC subset's trainval by 11 points (README, "Learning from
    image labels"): trained from a training split's label-blind patch sample, the mean of
    p^k sees every sampled patch where the max learns from one. r 5 is a middle sharpness
    for log-sum-exp; top_fraction 0.1 and bottom_weight 0.7 follow the shape of WILDCAT
    (Durand et al., CVPR 2017), whose negative evidence is off by default (bottom_fraction 0).
    """

    pool: str = "mean-pk"  # one of POOLS
    r: float = 5.0  # lse sharpness
    top_fraction: float = 0.1  # topk: share of an image's patches averaged at the top
    bottom_fraction: float = 0.0  # topk: share averaged at the bottom (0: no bottom term)
    bottom_weight: float = 0.7  # topk: weight of the bottom term
    batch_images: int = 16  # images per SGD step (all their patches)


@dataclass(frozen=True)
class FitConfig(CacheSettings):
    split: str = "trainval"
    head: str = "mlp"
    classes: tuple[str, ...] | None = None  # None: every class with labelled patches
    mlp: MLPConfig = field(default_factory=MLPConfig)
    svm: SVMConfig = field(default_factory=SVMConfig)
    weak: WeakConfig = field(default_factory=WeakConfig)
    device: str = "auto"
    seed: int = 0
    k: float = 5.0  # pooling exponent recorded with the head: score's default (sweeps tune it)


@dataclass(frozen=True)
class ScoredSplit(CacheSettings):
    """A split seen through a fitted head: what score and localize share, and what finds
    the head (it lives beside the train split's features)."""

    split: str = "test"
    train_split: str = "trainval"
    head: str = "mlp"
    classes: tuple[str, ...] | None = None  # None: the classes the head was fitted on


@dataclass(frozen=True)
class ScoreConfig(ScoredSplit):
    k: float | None = None  # None: the head's (paper section 4: mean of p(class|patch)^k, k = 5)
    output: str = "ap.csv"
    scores_output: str | None = None  # None: <output stem>-scores.csv beside it
    export: str | None = None  # a directory for the VOC evaluation server's comp1 files


def code_version() -> str:
    return __version__


@dataclass(frozen=True)
class LocalizeConfig(ScoredSplit):
    """`pipeline localize`: per-class score maps from patch scores, and how well they point."""

    output: str = "localize"  # directory: maps.h5, overlays/, pointing.csv
    reduce: str = "mean"  # how the patches covering a pixel combine: "mean" or "max"
    top: int = 2  # classes overlaid per image (highest map peaks)
    overlays: int | None = 50  # overlay PNGs written (first N images); None: all


@dataclass(frozen=True)
class SweepConfig:
    """`pipeline sweep`: each setting (overrides of `base`) scored by K-fold cross-validation
    over the images of the training split, in parallel processes."""

    base: FitConfig
    settings: tuple[dict, ...]
    folds: int = 4
    jobs: int = -1  # joblib n_jobs: -1 is one process per core
    output: str = "sweep.csv"
    best_output: str | None = None  # None: <output stem>-best.toml beside it


@dataclass(frozen=True)
class CompareConfig:
    """`pipeline compare`: whole-image SVM, patches + SVM, patches + MLP and the weak head
    (patches, image labels only), one backbone, trained on `base.split` and scored on
    `test_split`, into one report."""

    base: FitConfig  # its grid is the patch grid; the whole-image run swaps in kind "whole"
    test_split: str = "test"
    output: str = "compare"
    # method -> head settings that replace the base ones for it (e.g. a sweep's best config)
    method_settings: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ReportConfig:
    """`pipeline report`: figures and a results table from one or more scored runs."""

    runs: tuple[str, ...]  # ap.csv files written by `pipeline score`, their sidecars beside them
    output: str = "report"  # directory for the PNGs and results.md
    names: tuple[str, ...] | None = None  # None: each run's head and file stem
    data: str | None = None  # None: the dataset recorded in each run's sidecar
    top: int = 6  # images per end of each class's ranking in the contact sheets


@dataclass(frozen=True)
class PredictConfig:
    """`pipeline predict`: a fitted head on new photos, with the head's own feature settings.

    `head` is a head file (`.../heads/mlp.joblib`) or the name of a head in `cache_dir`;
    `sources` image files, folders or globs. `cached` None goes through the feature cache
    (resumable) for more than CACHE_ABOVE images, in memory otherwise.
    """

    head: str
    sources: tuple[str, ...]
    cache_dir: str = "cache"
    output: str = "predictions.csv"
    maps: str | None = None  # a directory for maps.h5 and overlays (patch heads)
    k: float | None = None  # None: the head's
    top: int = 3  # classes named per image in the `top` column
    weights: str | None = None  # a local copy of the head's weights file, checked by digest
    device: str = "auto"
    runtime: str = "auto"
    batch_size: int | None = None
    workers: int = 1
    cached: bool | None = None
    on_error: str = "skip"  # a bad photo is skipped with a logged line, or "stop"
