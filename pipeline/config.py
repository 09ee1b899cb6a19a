"""Every stage's settings as frozen dataclasses, with the paper's values as defaults, each
checked where it is declared (a ConfigError names the setting at fault).

Defaults cite Oquab, Bottou, Laptev, Sivic, CVPR 2014: section 3.1 the patch grid and labels,
3.2 the adaptation layers, 4 the pooling exponent; the heads' own are pipeline/heads/defaults.py.
A setting is declared once, as its field (`ranged` or `declared`): its default, the values it
may take, its help and its public name, which is the same everywhere (a flag without its
dashes, a sweep parameter, a key of a config file); `PLACES`, derived from the fields, says
where a name goes, and the CLI's options are made from the same fields.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, fields, replace

from pipeline.errors import ConfigError
from pipeline.heads import defaults
from pipeline.heads.pools import POOLS

GRID_KINDS = ("patches", "whole")
TASKS = ("object", "action")
MODES = ("crop", "shared")
KEEP_CHOICES = ("auto", "sample", "all")
RUNTIMES = ("auto", "torch", "onnxruntime")  # the frozen net's: auto is ONNX Runtime on a CPU
# the frozen net's numbers: int8 is ONNX Runtime's static quantization (docs/deploy.md)
PRECISIONS = ("fp32", "int8")
DEVICES = ("auto", "cpu", "cuda")
ON_ERROR = ("stop", "skip")
HEADS = ("mlp", "svm", "weak")
REDUCES = ("mean", "max")  # how the patches covering a pixel make its score
PROTOCOLS = ("union", "vissl")  # how a label budget draws images (docs/labels.md)
# which images to label next; the label-free ones need no head, so they pick a first batch
STRATEGIES = ("auto", "uncertainty", "diversity", "combined", "typical", "balanced")
LABEL_FREE = ("diversity", "typical")  # they never use a head
FIRST_BATCH = (*LABEL_FREE, "auto")  # they pick with no head (auto: typical)
NO_HEAD = "none"  # suggest --head none: no labels yet, the first batch of a task
# where a simulation starts: no label (its first batch the strategy's), or one positive a class
STARTS = ("cold", "one-per-class")
SCHEDULES = ("epochs", "steps")  # a label budget's SGD: its epochs, or the whole split's steps


def _check(ok: bool, setting: str, value, problem: str) -> None:
    if not ok:
        raise ConfigError(setting, value, problem)


def check_choice(setting: str, value, choices: tuple) -> None:
    """Refuse a value not among `choices`, naming the setting."""
    _check(value in choices, setting, value, f"choose one of {', '.join(map(str, choices))}")


@dataclass(frozen=True)
class Range:
    """Where a number setting may be: a whole number (an int) or a finite real, from `low` to
    `high`, each bound included unless `above` / `below` says the value must be beyond it;
    `none`: None is allowed too (a default chosen later)."""

    low: float
    high: float
    whole: bool = False
    above: bool = False
    below: bool = False
    none: bool = False

    def holds(self, value) -> bool:
        if value is None:
            return self.none
        if isinstance(value, bool) or not isinstance(value, int if self.whole else numbers.Real):
            return False
        if not math.isfinite(value):
            return False
        low_ok = value > self.low if self.above else value >= self.low
        return low_ok and (value < self.high if self.below else value <= self.high)

    def __str__(self) -> str:
        if self.whole:
            return f"give a whole number from {self.low:,} to {self.high:,}"
        opening, closing = "(" if self.above else "[", ")" if self.below else "]"
        return f"give a finite number in {opening}{self.low:g}, {self.high:g}{closing}"


def check_range(setting: str, value, allowed: Range) -> None:
    """Refuse a value outside `allowed` (NaN, inf, a float for a count...), naming the setting."""
    _check(allowed.holds(value), setting, value, str(allowed))


def declared(
    default,
    *,
    help: str | None = None,
    choices: tuple | None = None,
    setting: str | None = None,
    flags: tuple[str, ...] = (),
    allowed: Range | None = None,
):
    """A setting's dataclass field: its default, the values `Settings` lets it take (a Range,
    or `choices`), its `help` (its flag's: a field with help is a flag of the CLI), its name
    where flags and files use another than the field's (svm.C is svm_c), and its `flags`
    where they are not --NAME (grid.kind is --grid)."""
    metadata = {"setting": setting, "help": help, "choices": choices, "flags": flags}
    if allowed is not None:
        metadata["range"] = allowed
    return field(default=default, metadata=metadata)


def ranged(default, allowed: Range, **declaration):
    """A number setting's field, checked against `allowed` (the rest as `declared`)."""
    return declared(default, allowed=allowed, **declaration)


def setting_name(declaration) -> str:
    """The public name of a declared field: a flag without its dashes, a key of a file."""
    return declaration.metadata.get("setting") or declaration.name


class Settings:
    """Base of every config: each declared field's range, then its choices, checked on creation."""

    def __post_init__(self):
        for f in fields(self):
            if "range" in f.metadata:
                check_range(setting_name(f), getattr(self, f.name), f.metadata["range"])
        for f in fields(self):
            if f.metadata.get("choices"):
                check_choice(setting_name(f), getattr(self, f.name), f.metadata["choices"])


COUNT = Range(1, 10**9, whole=True)  # a number of things: images, rows, classes named
SHARE = Range(0, 1, above=True)  # a share of something that must not be nothing
SEED = Range(0, 2**32 - 1, whole=True)  # what numpy's and torch's generators take
POWER = Range(0, 100, above=True)  # the pooling exponent k: p^k underflows to 0 past ~100
JOBS = Range(-1, 256, whole=True)  # processes at once; -1: one per core (0 is refused)
FOLDS = Range(2, 100, whole=True)  # cross-validation folds
BATCH = Range(1, 65536, whole=True, none=True)  # patches per forward; None: the fastest
WORKERS = Range(0, 64, whole=True)  # DataLoader decode processes; 0: in this one
TOP = Range(1, 1000, whole=True)  # classes or images shown


def check_jobs(jobs: int) -> None:
    _check(jobs != 0, "jobs", jobs, "give -1 (one per core) or a count from 1")


def check_path(setting: str, value: str | None) -> None:
    """A file or folder setting: None (its default) or a path that names something."""
    _check(
        value is None or (isinstance(value, str) and value.strip() != "" and "\0" not in value),
        setting, value, "give a path",
    )  # fmt: skip


def check_name(setting: str, value: str) -> None:
    """A split's (or head's) name, which becomes part of a file name in the cache: never empty,
    a path, or a name that leaves the cache directory."""
    _check(
        isinstance(value, str) and value.strip() == value and value not in ("", ".", "..")
        and not any(c in value for c in "/\\\0"),
        setting, value, "give a name without slashes (a split of the dataset: trainval, test...)",
    )  # fmt: skip


@dataclass(frozen=True)
class GridConfig(Settings):
    """Square patches at `scales` sizes, side = min(W, H) * s with s geometric from 1 down to
    `min_scale`, neighbours overlapping by at least `overlap`, spread from border to border.
    The paper's ~500 patches, 8 scales, 50% overlap: min_scale 0.15 (not a floor-count grid's
    0.13, since the border is always covered) gives exactly 500 on a 500x375 VOC image.
    kind "whole": one feature per image, squashed to the net's input (the DeCAF baseline).
    An overlap above 0.9 would make 100x the patches of the paper's for nearly the same view."""

    scales: int = ranged(8, Range(1, 32, whole=True), help="Patch scales.")
    min_scale: float = ranged(0.15, SHARE, help="Smallest patch side / min(W, H).")
    overlap: float = ranged(0.5, Range(0, 0.9), help="Minimum overlap of neighbouring patches.")
    kind: str = declared(
        "patches", choices=GRID_KINDS, setting="grid_kind", flags=("--grid",),
        help="'patches': the paper's multi-scale grid; 'whole': one feature per image (baseline).",
    )  # fmt: skip


@dataclass(frozen=True)
class LabelRule(Settings):
    """The paper's label rule: P is class o when a box B of o has |P∩B| >= min_patch_cover*|P|
    and >= min_box_cover*|B| (0.2, 0.6) and no box of another class does. Training splits
    keep a seeded, label-blind `background_ratio` share of all patches (paper: about 10%)."""

    min_patch_cover: float = ranged(0.2, SHARE, help="Label rule: |P∩B| >= this * |P|.")
    min_box_cover: float = ranged(0.6, SHARE, help="Label rule: |P∩B| >= this * |B|.")
    background_ratio: float = ranged(
        0.1, Range(0, 1), help="Share of background patches kept in train/trainval."
    )
    seed: int = ranged(0, SEED, help="Seed of background subsampling and head training.")


@dataclass(frozen=True)
class TaskConfig(Settings):
    """Which task the cache serves: VOC classification, or VOC 2012 Action persons, whose
    box grows by `context` times its size (half per side) for its patches."""

    name: str = declared(
        "object", choices=TASKS, setting="task_name", flags=("--task",),
        help="'object': VOC classification; 'action': VOC 2012 Action, one sample per person.",
    )  # fmt: skip
    context: float = ranged(
        0.5, Range(0, 10),
        help="Action: the person box grows by this times its size (half per side) for its patches.",
    )  # fmt: skip


@dataclass(frozen=True)
class BackboneConfig(Settings):
    """The frozen net and its weights (None: the registry's ImageNet weights; a file; or
    "random", untrained). mode "crop" runs every patch through the whole net (the paper);
    "shared" runs the trunk once per image and scale and pools each patch from its map.
    `input_size` from 32 px (the nets' five stride-2 stages leave one cell) to 1024."""

    # its flag's help lists the registry's nets (pipeline/cli/options.py)
    name: str = declared("efficientnet_lite0", setting="backbone")
    weights: str | None = declared(
        None,
        help="Local state-dict FILE, or 'random' (untrained, plumbing only). Default: ImageNet.",
    )
    input_size: int | None = ranged(
        None, Range(32, 1024, whole=True, none=True),
        help="Patch side fed to the net [default: the net's].",
    )  # fmt: skip
    mode: str = declared(
        "crop", choices=MODES,
        help="'crop': each patch through the whole net (the paper); 'shared': the trunk once per "
        "image and scale, patches pooled from its map (faster).",
    )  # fmt: skip
    precision: str = declared(
        "fp32", choices=PRECISIONS,
        help="The frozen net's numbers: 'int8' is static quantization calibrated on the training "
        "split, about 2x faster on a CPU; its features are a cache of their own "
        "(docs/deploy.md#int8).",
    )  # fmt: skip

    def __post_init__(self):
        super().__post_init__()
        check_path("weights", self.weights)


@dataclass(frozen=True)
class CacheSettings(Settings):
    """Where the dataset and the cache are, and the feature settings that key the cache, so
    that fit and score find exactly what extract wrote. `data` is KIND:PATH or a path ("":
    read the cache alone); `image_dir` where a COCO JSON's or a CSV's images are."""

    data: str = ""
    cache_dir: str = "cache"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    labels: LabelRule = field(default_factory=LabelRule)
    task: TaskConfig = field(default_factory=TaskConfig)
    image_dir: str | None = None
    keep: str = declared(
        "auto", choices=KEEP_CHOICES,
        help="Patches a split's cache keeps: 'sample' (object patches + a label-blind sample: "
        "training), 'all' (evaluation); 'auto' by the split's role (a name starting with 'train' "
        "samples). Each rule has its own cache.",
    )  # fmt: skip

    def __post_init__(self):
        super().__post_init__()
        check_path("cache_dir", self.cache_dir)
        check_path("image_dir", self.image_dir)


def same_cache(config: CacheSettings) -> dict:
    """Every setting that finds `config`'s cache, by name: another stage's config built from
    these reads the same cache (a field left out would fall back to its default, silently)."""
    return {f.name: getattr(config, f.name) for f in fields(CacheSettings)}


@dataclass(frozen=True)
class ExtractConfig(CacheSettings):
    """What stage one runs on; the runtime is not part of the cache key (docs/cache.md)."""

    split: str = "trainval"
    device: str = "auto"
    runtime: str = "auto"
    batch_size: int | None = ranged(None, BATCH)  # patches per forward; None: the fastest
    workers: int = ranged(1, WORKERS)
    images_per_shard: int = ranged(64, Range(1, 100_000, whole=True))
    limit: int | None = ranged(None, Range(1, 10**9, whole=True, none=True))  # the first N images
    overwrite: bool = False
    on_error: str = "stop"  # a bad image stops the run, or is skipped, logged and recorded

    def __post_init__(self):
        super().__post_init__()
        check_choice("device", self.device, DEVICES)
        check_choice("runtime", self.runtime, RUNTIMES)
        check_choice("on_error", self.on_error, ON_ERROR)
        check_name("split", self.split)


@dataclass(frozen=True)
class MLPConfig(Settings):
    """FCa (hidden units, ReLU, dropout) and FCb (classes + background, softmax): paper 3.2.
    The optimiser's settings are common SGD defaults, not the paper's; a momentum of 1 or
    more, or a learning rate past 10, only diverges."""

    hidden: int = ranged(defaults.HIDDEN, Range(1, 65536, whole=True), help="MLP: FCa units.")
    dropout: float = ranged(
        defaults.DROPOUT, Range(0, 1, below=True), help="MLP: dropout after FCa."
    )
    lr: float = ranged(
        defaults.LR, Range(0, 10, above=True), help="MLP: SGD learning rate (cosine decay)."
    )
    momentum: float = ranged(defaults.MOMENTUM, Range(0, 1, below=True), help="MLP: SGD momentum.")
    weight_decay: float = ranged(defaults.WEIGHT_DECAY, Range(0, 1), help="MLP: L2 weight decay.")
    epochs: int = ranged(
        defaults.EPOCHS, Range(1, 10_000, whole=True), help="MLP: epochs over the shards."
    )
    batch_size: int = ranged(
        defaults.BATCH_SIZE, Range(1, 1 << 20, whole=True), help="MLP: minibatch size."
    )
    background_weight: float = ranged(
        1.0, Range(0, 1000, above=True), help="Loss weight of the background class."
    )


@dataclass(frozen=True)
class SVMConfig(Settings):
    """The linear one-vs-rest SVM baseline on the same features."""

    C: float = ranged(
        defaults.SVM_C, Range(0, 1e6, above=True), setting="svm_c", help="SVM: regularisation C."
    )
    epochs: int = ranged(
        defaults.SVM_EPOCHS, Range(1, 10_000, whole=True), setting="svm_epochs",
        help="SVM: SGD epochs over the shards (patch grid).",
    )  # fmt: skip
    # one setting with MLPConfig's: its flag is declared there
    background_weight: float = ranged(1.0, Range(0, 1000, above=True))


@dataclass(frozen=True)
class WeakConfig(Settings):
    """The weak head: the MLP's layers trained from image labels through a pooling of patch
    scores. mean-pk won a cross-validated sweep of the four (docs/weak-supervision.md); lse r
    5 is a middle sharpness; topk's 0.1 and 0.7 follow WILDCAT, its bottom term off (0)."""

    pool: str = declared(
        defaults.POOL, choices=POOLS,
        help="Weak: how patch scores pool into the image score it learns from.",
    )  # fmt: skip
    r: float = ranged(defaults.LSE_R, POWER, setting="lse_r", help="Weak, lse: sharpness r.")
    top_fraction: float = ranged(
        defaults.TOP_FRACTION, SHARE, help="Weak, topk: share of patches averaged at the top."
    )
    bottom_fraction: float = ranged(
        defaults.BOTTOM_FRACTION, Range(0, 1),
        help="Weak, topk: share averaged at the bottom (0: none).",
    )  # fmt: skip
    bottom_weight: float = ranged(
        defaults.BOTTOM_WEIGHT, Range(0, 100), help="Weak, topk: weight of the bottom term."
    )
    batch_images: int = ranged(
        defaults.BATCH_IMAGES, Range(1, 100_000, whole=True), help="Weak: images per SGD step."
    )


@dataclass(frozen=True)
class FitConfig(CacheSettings):
    """A head trained on `split`'s cache; `k` is recorded with it as score's pooling power."""

    split: str = declared("trainval", help="Split whose cached features train the head.")
    head: str = declared(
        "mlp", choices=HEADS,
        help="Adaptation layers on box labels (mlp), the SVM baseline, or the adaptation layers "
        "on image labels alone (weak).",
    )  # fmt: skip
    classes: tuple[str, ...] | None = None  # None: every class with a labelled patch
    mlp: MLPConfig = field(default_factory=MLPConfig)
    svm: SVMConfig = field(default_factory=SVMConfig)
    weak: WeakConfig = field(default_factory=WeakConfig)
    device: str = declared("auto", choices=DEVICES, help="MLP training device.")
    seed: int = ranged(defaults.SEED, SEED)  # one setting with labels.seed: its flag is there
    k: float = ranged(
        defaults.K, POWER, flags=("-k", "--k"),
        help="Pooling exponent recorded with the head (score's default; weak mean-pk's power).",
    )  # fmt: skip

    def __post_init__(self):
        super().__post_init__()
        check_name("split", self.split)
        _check(
            self.grid.kind == "patches" or self.head == "svm", "head", self.head,
            "whole-image features are one row per image, no patches to score and pool; use "
            "{head} svm with {grid_kind} whole, or fit {head} " + self.head + " on the patch grid",
        )  # fmt: skip


@dataclass(frozen=True)
class ScoredSplit(CacheSettings):
    """A split seen through a fitted head (named, or a file), which lives beside the
    features of `train_split`: what score and localize share."""

    split: str = "test"
    train_split: str = "trainval"
    head: str = "mlp"
    classes: tuple[str, ...] | None = None  # None: the head's
    trust_pickle: bool = False  # load a head midlevel 0.3 pickled: it runs any code it holds

    def __post_init__(self):
        super().__post_init__()
        check_name("split", self.split)
        check_name("train_split", self.train_split)
        check_path("head", self.head)


@dataclass(frozen=True)
class ScoreConfig(ScoredSplit):
    k: float | None = ranged(None, Range(0, 100, above=True, none=True))  # None: the head's
    output: str = "ap.csv"
    scores_output: str | None = None  # None: <output stem>-scores.csv beside it
    export: str | None = None  # a directory for the VOC evaluation server's files

    def __post_init__(self):
        super().__post_init__()
        check_path("output", self.output)
        check_path("scores_output", self.scores_output)
        check_path("export", self.export)


@dataclass(frozen=True)
class SuggestConfig(ScoredSplit):
    """The `batch` images of `split` (a pool, unlabelled or not) to label next for a head
    trained on `train_split`, by `strategy`; their contact sheet at `sheet`."""

    strategy: str = "typical"
    batch: int = ranged(20, COUNT)
    output: str = "suggest.csv"
    sheet: str | None = None  # None: <output stem>.png beside it

    def __post_init__(self):
        super().__post_init__()
        check_choice("strategy", self.strategy, STRATEGIES)
        _check(
            self.head != NO_HEAD or self.strategy in FIRST_BATCH, "strategy", self.strategy,
            f"with --head {NO_HEAD} (no labels yet) pick the first batch with "
            f"{', '.join(FIRST_BATCH)}",
        )  # fmt: skip
        check_path("output", self.output)
        check_path("sheet", self.sheet)


@dataclass(frozen=True)
class LocalizeConfig(ScoredSplit):
    """Score maps of a split that keeps every patch, overlays of the first `overlays` images
    (None: all, 0: none), `top` classes each, and pointing."""

    output: str = "localize"
    reduce: str = "mean"
    top: int = ranged(2, TOP)
    overlays: int | None = ranged(50, Range(0, 10**9, whole=True, none=True))

    def __post_init__(self):
        super().__post_init__()
        check_choice("reduce", self.reduce, REDUCES)
        check_path("output", self.output)
        kind, task = self.grid.kind, self.task.name
        _check(kind == "patches", "grid_kind", kind, "maps need the patch grid; use {grid_kind} patches")  # fmt: skip
        _check(task == "object", "task_name", task, "maps are made of the object task's patches")  # fmt: skip


@dataclass(frozen=True)
class SweepConfig(Settings):
    """Each setting (overrides of `base`) scored by K-fold cross-validation over the training
    split's images, `jobs` processes at once (-1: one per core)."""

    base: FitConfig
    settings: tuple[dict, ...]
    folds: int = ranged(4, FOLDS)
    jobs: int = ranged(-1, JOBS)  # -1: one per core; 0 is refused
    output: str = "sweep.csv"
    best_output: str | None = None  # None: <output stem>-best.toml beside it

    def __post_init__(self):
        super().__post_init__()
        check_jobs(self.jobs)
        check_path("output", self.output)
        check_path("best_output", self.best_output)


@dataclass(frozen=True)
class CurveConfig(Settings):
    """AP on `test_split` against labelled training images: each method (a head on its grid,
    `method_settings` replacing base settings) fitted on the images each budget buys, `seeds`
    draws each; with `simulate`, rounds of `batch` images picked by each strategy up to `up_to`."""

    base: FitConfig
    methods: tuple[str, ...] = ("patches-mlp", "patches-svm", "patches-weak", "whole-svm")
    method_settings: dict = field(default_factory=dict)
    test_split: str = "test"
    # the methods were not named (the default heads): one whose feature grid was not
    # extracted is left out, and the summary says what to extract, instead of a refusal
    skip_unextracted: bool = False
    shots: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)  # k positive images per class
    images: tuple[int, ...] = ()  # labelled images in all
    all_data: bool = True  # a row on the whole training split too
    seeds: int = ranged(5, Range(1, 100, whole=True))
    protocol: str = "union"
    schedule: str = "epochs"
    simulate: tuple[str, ...] = ()  # strategies beside random; () runs no simulation
    simulate_methods: tuple[str, ...] | None = None  # None: every method
    batch: int = ranged(10, COUNT)
    up_to: int = ranged(100, COUNT)
    start: str = "cold"
    jobs: int = ranged(-1, JOBS)  # -1: one per core; 0 is refused
    output: str = "curve.csv"
    plot: str | None = None  # None: <output stem>.png beside it

    def __post_init__(self):
        super().__post_init__()
        check_jobs(self.jobs)
        check_name("test_split", self.test_split)
        check_path("output", self.output)
        check_path("plot", self.plot)
        check_choice("protocol", self.protocol, PROTOCOLS)
        check_choice("schedule", self.schedule, SCHEDULES)
        for strategy in self.simulate:
            check_choice("simulate", strategy, STRATEGIES)
        check_choice("start", self.start, STARTS)
        counts = (*self.shots, *self.images)
        _check(all(COUNT.holds(n) for n in counts), "shots", counts, "give counts >= 1")
        _check(bool(counts) or self.all_data, "shots", counts, "give --shots and/or --images")
        vissl = self.protocol == "vissl"
        _check(
            not vissl or not self.images, "protocol", self.protocol,
            "the vissl protocol draws k positives per class; use --shots, not --images",
        )  # fmt: skip
        _check(
            not vissl or set(self.methods) == {"whole-svm"}, "protocol", self.protocol,
            "vissl trains one SVM per class on its own images: only --heads whole-svm does so "
            "(the patch heads learn every class from the same rows; use --protocol union)",
        )  # fmt: skip


@dataclass(frozen=True)
class CompareConfig(Settings):
    """The paper's comparison on one backbone: whole-image SVM, patches + SVM, + MLP, and the
    weak head, trained on `base.split`, scored on `test_split`, into one report.
    `method_settings`: method -> head settings replacing the base ones (a sweep's best)."""

    base: FitConfig
    test_split: str = "test"
    output: str = "compare"
    method_settings: dict = field(default_factory=dict)

    def __post_init__(self):
        super().__post_init__()
        check_name("test_split", self.test_split)
        check_path("output", self.output)


@dataclass(frozen=True)
class ReportConfig(Settings):
    """Figures and a results table from scored runs (the ap.csv files of score)."""

    runs: tuple[str, ...]
    output: str = "report"
    names: tuple[str, ...] | None = None  # None: each run's head and file stem
    data: str | None = None  # None: the dataset each run's sidecar recorded
    top: int = ranged(6, Range(1, 100, whole=True))  # images per end of each class's ranking

    def __post_init__(self):
        super().__post_init__()
        check_path("output", self.output)
        given = len(self.names or self.runs)
        _check(
            given == len(self.runs), "names", self.names,
            f"{given} names for {len(self.runs)} runs; give one name per run",
        )  # fmt: skip


@dataclass(frozen=True)
class PredictConfig(Settings):
    """A fitted head (a file, or a name in `cache_dir`) on image files, folders or globs.
    `cached` None: through the feature cache (resumable) for many images, else in memory."""

    head: str | None
    sources: tuple[str, ...]
    model: str | None = None  # an exported model folder, run without torch (instead of head)
    precision: str | None = None  # the frozen net's; None: that of the head's features
    cache_dir: str = "cache"
    output: str = "predictions.csv"
    maps: str | None = None  # a directory for maps.h5 and overlays (patch heads)
    k: float | None = ranged(None, Range(0, 100, above=True, none=True))  # None: the head's
    top: int = ranged(3, TOP)  # classes named per image
    weights: str | None = None  # a local copy of the head's weights file, checked by digest
    device: str = "auto"
    runtime: str = "auto"
    batch_size: int | None = ranged(None, BATCH)
    workers: int = ranged(1, WORKERS)
    cached: bool | None = None
    on_error: str = "skip"
    trust_pickle: bool = False  # load a head midlevel 0.3 pickled: it runs any code it holds

    def __post_init__(self):
        super().__post_init__()
        check_choice("device", self.device, DEVICES)
        check_choice("runtime", self.runtime, RUNTIMES)
        check_choice("on_error", self.on_error, ON_ERROR)
        check_path("cache_dir", self.cache_dir)
        check_path("output", self.output)
        check_path("maps", self.maps)
        _check((self.head is None) != (self.model is None), "head", self.head,
               "pass either --head or --model DIR")  # fmt: skip
        check_path("head", self.head)
        check_path("model", self.model)
        check_path("weights", self.weights)
        _check(bool(self.sources), "sources", self.sources, "give photos: files, folders or globs")
        for source in self.sources:
            check_path("sources", source)
        if self.precision is not None:
            check_choice("precision", self.precision, PRECISIONS)
            _check(self.model is None, "precision", self.precision,
                   "an exported model has the precision it was exported at")  # fmt: skip


NESTED = {
    "backbone": BackboneConfig, "grid": GridConfig, "labels": LabelRule, "task": TaskConfig,
    "mlp": MLPConfig, "svm": SVMConfig, "weak": WeakConfig,
}  # fmt: skip


def _places() -> dict[str, tuple[str, ...]]:
    """Each setting a nested config declares, at its "root.field" places in NESTED's order,
    after the config's own field of the same name (FitConfig.seed before labels.seed)."""
    found: dict[str, list[str]] = {}
    for root, config_type in NESTED.items():
        for f in fields(config_type):
            name = setting_name(f)
            found.setdefault(name, [] if name in NESTED else [name]).append(f"{root}.{f.name}")
    return {name: tuple(where) for name, where in found.items()}


# Where a setting goes: the first place that a config has is where its value is read; a value
# is written to every such place. A name not here is a config's own field.
PLACES = _places()


def places(config_type: type, name: str) -> list[tuple[str, str]]:
    """(field, nested field or "") of each place of setting `name` in `config_type`."""
    own = {f.name for f in fields(config_type)}
    found = [p.partition(".")[::2] for p in PLACES.get(name, (name,))]
    return [(root, leaf) for root, leaf in found if root in own]


def setting(config, name: str):
    """The value of setting `name` in `config` (its first place)."""
    root, leaf = places(type(config), name)[0]
    return getattr(getattr(config, root), leaf) if leaf else getattr(config, root)


def with_settings(config, settings: dict):
    """`config` with each setting (name -> value) in its places, checked all at once."""
    top, nested = {}, {}
    for name, value in settings.items():
        found = places(type(config), name)
        if not found:
            raise TypeError(f"{type(config).__name__} has no setting {name!r}")
        for root, leaf in found:
            if leaf:
                nested.setdefault(root, {})[leaf] = value
            else:
                top[root] = value
    top |= {root: replace(getattr(config, root), **leaves) for root, leaves in nested.items()}
    return replace(config, **top)


@dataclass(frozen=True)
class ExportConfig(Settings):
    """A fitted head (a file, or a name in `cache_dir`) into a model folder that runs without
    torch (pipeline/deploy/runtime.py): its ONNX graphs and model.json."""

    head: str
    output: str = "model"
    cache_dir: str = "cache"
    precision: str | None = None  # the frozen net's; None: that of the head's features
    weights: str | None = None  # a local copy of the head's weights file, checked by digest
    trust_pickle: bool = False

    def __post_init__(self):
        super().__post_init__()
        for name in ("head", "output", "cache_dir", "weights"):
            check_path(name, getattr(self, name))
        if self.precision is not None:
            check_choice("precision", self.precision, PRECISIONS)


@dataclass(frozen=True)
class ServeConfig(Settings):
    """An exported model folder behind HTTP on host:port (port 0: any free port); what
    each setting means: docs/serve.md."""

    model: str  # the folder `pipeline export` wrote, or a head (file, or name in cache_dir)
    host: str = "127.0.0.1"  # this machine only; 0.0.0.0 serves every interface
    port: int = ranged(8000, Range(0, 65535, whole=True))  # 0: any free port
    # A 12-megapixel phone JPEG is 3-8 MB; 20 MB leaves room for PNGs without letting one
    # client hold much memory (max_pending uploads at most are held at once); past 1 GB an
    # upload is no photo.
    max_upload_mb: float = ranged(20.0, Range(0, 1024, above=True))
    # predictions at once [default: server.split_threads]
    threads: int | None = ranged(None, Range(1, 256, whole=True, none=True))
    # requests with their whole body in, running or waiting; more get 503
    max_pending: int = ranged(64, Range(1, 100_000, whole=True))
    # a body not in this many seconds after its headers gets 408 (a stalled or dripping
    # client): a 4 MB photo in 60 s needs 0.6 Mbit/s; nginx's client_body_timeout is 60 s too
    body_timeout: float = ranged(60.0, Range(1, 3600))
    example: str | None = None  # a photo the page offers to try, served at /example
    cache_dir: str = "cache"  # where a head given by name is found

    def __post_init__(self):
        super().__post_init__()
        for name in ("model", "host", "example", "cache_dir"):
            check_path(name, getattr(self, name))


@dataclass(frozen=True)
class LabelStudioConfig(Settings):
    """midlevel as a Label Studio ML backend on host:port, fetching from the Label Studio at
    `label_studio` with `api_key`; what each setting means: docs/label-studio.md."""

    label_studio: str  # its URL, e.g. http://localhost:8080: tasks, annotations, images
    api_key: str  # a legacy token or a personal access token (Account & Settings)
    host: str = declared(
        "127.0.0.1", help="Interface to listen on (0.0.0.0: every interface)."
    )  # fmt: skip
    port: int = ranged(
        9090, Range(0, 65535, whole=True), help="0: any free port (the printed line names it)."
    )  # fmt: skip
    workdir: str = declared(
        "label-studio", help="Each project's export, images, feature cache and heads, under "
        "project-<id>/.",
    )  # fmt: skip
    threshold: float = ranged(
        0.5, Range(0, 1, above=True), help="A class is pre-labelled where the head scores it "
        "this or more.",
    )  # fmt: skip
    strategy: str = declared(
        SuggestConfig.strategy, choices=STRATEGIES,
        help="The labelling priority each task's score gives (suggest's strategies).",
    )  # fmt: skip
    # Label Studio gives up on /predict at 100 s (its ML_TIMEOUT_PREDICT): the rest follow
    # the next retrieval
    predict_wait: float = ranged(
        30.0, Range(0, 90), help="Seconds /predict waits for tasks not extracted yet."
    )  # fmt: skip
    basic_auth: str | None = declared(
        None, help="user:password Label Studio must send (Settings -> Model). Env: "
        "MIDLEVEL_BASIC_AUTH.",
    )  # fmt: skip
    max_upload_mb: float = ranged(
        32.0, Range(0, 1024, above=True), help="Larger request bodies and images are refused."
    )  # fmt: skip
    body_timeout: float = ranged(
        60.0, Range(1, 3600), help="Seconds a request body may take to arrive; then 408."
    )  # fmt: skip
    features: ExtractConfig = field(default_factory=ExtractConfig)

    def __post_init__(self):
        super().__post_init__()
        check_path("workdir", self.workdir)
        _check(
            self.basic_auth is None or ":" in self.basic_auth, "basic_auth", "***",
            "write user:password",
        )  # fmt: skip


@dataclass(frozen=True)
class DemoConfig(Settings):
    """The embedded demo tree: `trainval` and `test` images laid out by `seed` (each class
    needs 2 trainval and 1 test image; past 5,000 a demo is no longer small)."""

    output: str = "data/demo"
    trainval: int = ranged(48, Range(1, 5000, whole=True))
    test: int = ranged(32, Range(1, 5000, whole=True))
    seed: int = ranged(0, SEED)

    def __post_init__(self):
        super().__post_init__()
        check_path("output", self.output)
