"""The Python API on new photos: `load_head` gives a `Predictor`, a head with the backbone,
weights, grid and mode it was trained on (the weights checked against its fingerprint),
pooling as `pipeline score` does; scores are power means (mean p^k)^(1/k) in [0, 1]."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from pipeline.config import ExtractConfig
from pipeline.datasets import Sample
from pipeline.datasets.base import whole_image
from pipeline.datasets.image_files import ImageFilesDataset
from pipeline.datasets.pixels import array_rgb, shown_rgb
from pipeline.errors import BackboneUnavailable, CacheError, DataError, MidlevelError
from pipeline.evaluation.pooling import image_log_scores, score_power
from pipeline.evaluation.score_maps import score_map
from pipeline.features.registry import fingerprint_part
from pipeline.features.work import check_photo_work
from pipeline.store.keys import CacheKey

if TYPE_CHECKING:  # store/ needs h5py: imported where a head is read (predict --model has none)
    from pipeline.store.head_files import HeadRecord

PREDICT_SPLIT = "predict"  # the cache split of photos predicted through the cache


@dataclass(frozen=True)
class ImagePrediction:
    sample_id: str
    path: Path
    scores: np.ndarray  # [C] power means (mean p^k)^(1/k)
    log_scores: np.ndarray  # [C] log mean p^k, as in score's ap-scores.csv
    boxes: np.ndarray  # [N, 4] patch boxes
    probs: np.ndarray  # [N, C] p(class | patch)
    width: int
    height: int


class Predictor:
    """A head with its backbone, ready to score images. Build it with `load_head`."""

    def __init__(self, path: Path, head, record: HeadRecord, *, device: str, weights: str | None,
                 runtime: str = "auto", batch_size: int | None = None,
                 precision: str | None = None):  # fmt: skip
        if record.settings("task").name != "object":
            raise CacheError(
                f"{path}: an action head scores person boxes; score VOC Action splits with "
                "pipeline score --task action"
            )
        self.path, self.head, self.record = path, head, record
        self.classes = record.classes
        self.k = float(record.k)
        backbone = record.settings("backbone")
        self.backbone_config = replace(backbone, weights=weights or backbone.weights)
        self.grid = record.settings("grid")
        self.fingerprint = record.fingerprint or {}
        self._check_weights(self.fingerprint.get("backbone") or {})
        self.trained_precision = backbone.precision
        if precision is not None:  # the net at another precision than the head's features
            self.backbone_config = replace(self.backbone_config, precision=precision)
        self.device, self.runtime, self.batch_size = device, runtime, batch_size
        if hasattr(head, "device"):  # a head fitted on a GPU still predicts on this machine
            head.set_params(device=device)
        self._backbone = None

    def _check_weights(self, trained: dict) -> None:
        try:
            here = fingerprint_part(self.backbone_config)
        except BackboneUnavailable as exc:
            raise BackboneUnavailable(
                f"{self.path}: the head's backbone cannot be built here ({exc}); pass "
                "--weights FILE with a copy of the weights it was trained with"
            ) from None
        if here != trained:
            learnt = CacheKey.from_file(self.fingerprint)
            was, now = learnt.describe_against(CacheKey({**learnt.settings, "backbone": here}))
            raise CacheError(
                f"{self.path}: trained on {was}, but here the head's settings give {now}; pass "
                "--weights FILE with the weights it was trained with"
            )

    @property
    def backbone(self):
        """The frozen backbone, built on first use."""
        if self._backbone is None:
            from pipeline.features.engine import load_backbone

            calibration = None
            if self.backbone_config.precision == "int8":
                calibration = self.calibration()
            self._backbone = load_backbone(
                ExtractConfig(
                    backbone=self.backbone_config,
                    device=self.device,
                    runtime=self.runtime,
                    batch_size=self.batch_size,
                ),
                calibration=calibration,
            )
        return self._backbone

    def calibration(self):
        """The training images an int8 net calibrates on: those of the head's training split
        (the same draw as its extract made, so the same int8 net), read from its dataset."""
        from pipeline.datasets import open_dataset
        from pipeline.features.quantize import calibration_set
        from pipeline.store.cache import SplitCache

        training = SplitCache.of_head(self.path)
        source, split = training and training.source, self.record.config.get("split")
        try:
            dataset = open_dataset(source or "")
            data = dataset.load(split, task=self.record.settings("task"))
        except MidlevelError as exc:
            raise BackboneUnavailable(
                f"{self.path}: int8 calibrates on the head's training images ({source}, split "
                f"{split}), which cannot be read here ({exc}); use --precision fp32, or export "
                "the model where they are"
            ) from None
        return calibration_set(dataset, split, data, self.grid, self.record.settings("task"))

    def _pool(self, features: np.ndarray, k: float) -> tuple[np.ndarray, np.ndarray]:
        """([C] log mean p^k, [N, C] patch probabilities) of one image's patch features."""
        n = len(self.classes)
        index = np.zeros(len(features), dtype=np.int64)
        log_probs = self.head.predict_log_proba(features)
        log_scores = image_log_scores(self.head, features, index, 1, k, log_probs=log_probs)
        return log_scores[0, :n], np.exp(log_probs[:, :n])

    def result(self, sample: Sample, boxes, features, k: float) -> ImagePrediction:
        log_scores, probs = self._pool(features, k)
        return ImagePrediction(
            sample.sample_id, sample.image_path, np.exp(log_scores / score_power(self.head, k)), log_scores,
            boxes, probs, sample.width, sample.height,
        )  # fmt: skip

    def predict_samples(self, samples: list[Sample], *, k: float | None = None, workers=0,
                        timing=None):  # fmt: skip
        """Yield an ImagePrediction, or an item {index, error}, per sample, in order."""
        from pipeline.features.engine import iter_image_features
        from pipeline.features.images import PatchImages
        from pipeline.features.patches import IGNORED

        k = self.k if k is None else k
        refused = {i: why for i, sample in enumerate(samples) if (why := self.refusal(sample))}
        patches = PatchImages(
            samples, [i for i in range(len(samples)) if i not in refused], grid=self.grid,
            rule=self.record.settings("labels"), background=IGNORED, keep_all=True,
            patch_labels=False,
        )  # fmt: skip
        items = iter_image_features(self.backbone, patches, workers=workers, timing=timing)
        for index in range(len(samples)):
            item = {"index": index, "error": refused[index]} if index in refused else next(items)
            if "error" in item:
                yield item
            else:
                sample = samples[item["index"]]
                yield self.result(sample, item["boxes"], item["features"], k)

    def refusal(self, sample: Sample) -> str | None:
        """Why a readable photo is not predicted: its work on this grid is over the limit
        (known from its size, before it is decoded); None for the others."""
        if sample.error is not None:
            return None  # the dataset's own error item says why
        x0, y0, x1, y1 = sample.region
        try:
            self._check_work(round(x1 - x0), round(y1 - y0), str(sample.image_path))
        except DataError as exc:
            return str(exc)
        return None

    def _check_work(self, width: int, height: int, name: str) -> None:
        """DataError naming the limit when one photo would cost hundreds of normal ones."""
        backbone = self.backbone
        check_photo_work(width, height, self.grid, backbone.input_size, backbone.mode, name)

    def _one(self, image, k: float | None) -> ImagePrediction:
        if isinstance(image, str | Path):
            sample = ImageFilesDataset([str(image)]).load(PREDICT_SPLIT).samples[0]
            (result,) = self.predict_samples([sample], k=k)
            if isinstance(result, dict):
                raise DataError(result["error"])
            return result
        from pipeline.features.engine import array_features

        pixels = _as_array(image)
        height, width = pixels.shape[:2]
        self._check_work(width, height, "array")
        boxes, features = array_features(self.backbone, pixels, self.grid)
        sample = whole_image("array", Path(""), width, height)
        return self.result(sample, boxes, features, self.k if k is None else k)

    def predict(self, image, *, k: float | None = None) -> dict[str, float]:
        """{class: score} of one image (a path, an [H, W, 3] uint8 array or a PIL image)."""
        result = self._one(image, k)
        return {c: float(v) for c, v in zip(self.classes, result.scores, strict=True)}

    def score_maps(self, image, *, reduce: str = "mean") -> dict[str, np.ndarray]:
        """{class: [h, w] map} of one image: per 4-pixel cell, the mean (or max) of
        p(class | patch) over the patches covering it (pipeline/evaluation/score_maps.py)."""
        if self.grid.kind != "patches":
            raise CacheError(f"{self.path}: a whole-image head has no patches to map")
        result = self._one(image, None)
        maps = score_map(result.boxes, result.probs, result.width, result.height, reduce=reduce)
        return dict(zip(self.classes, maps, strict=True))


def _as_array(image) -> np.ndarray:
    """[H, W, 3] uint8 of a PIL image or a uint8 numpy array, as a file of it would show."""
    return shown_rgb(image) if isinstance(image, Image.Image) else array_rgb(image)


def load_head(
    head: str | Path, *, cache_dir: str | Path = "cache", device: str = "auto",
    weights: str | None = None, runtime: str = "auto", batch_size: int | None = None,
    trust_pickle: bool = False, precision: str | None = None,
) -> Predictor:  # fmt: skip
    """A fitted head ready to predict: `head` is a heads/<name>.safetensors file, or the name
    of the one head of that name in `cache_dir`; `weights` a local copy of its weights file;
    `runtime` and `batch_size` as extract's; `trust_pickle` loads a head midlevel 0.3 pickled
    (loading a pickle runs any code it holds: only for a file you made yourself); `precision`
    the frozen net's (None: that of the features the head was trained on)."""
    from pipeline.store.head_files import find_head, load_head_file

    path = find_head(str(head), cache_dir)
    estimator, record = load_head_file(path, trust_pickle=trust_pickle)
    return Predictor(
        path, estimator, record, device=device, weights=weights, runtime=runtime,
        batch_size=batch_size, precision=precision,
    )  # fmt: skip
