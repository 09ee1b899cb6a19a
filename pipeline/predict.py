"""A fitted head on new photos: the feature path of extract with the head's own settings.

`Predictor` loads a head file with its record, rebuilds the frozen backbone, weights, patch
grid and mode the head was trained on (checking the weights against the head's
fingerprint), and pools patch probabilities into one score per class exactly as `pipeline
score` does: log of the mean of p^k over the image's patches. What it returns is that
pooled value as a power mean, (mean p^k)^(1/k), in [0, 1]: the same ranking as score's
log score, readable as a probability-like number (`log_score = k * log(score)`).

`predict_files` is `pipeline predict`: many files, in memory for a few, through the feature
cache (resumable, like extract) for many, into predictions.csv and its sidecar.
"""

from __future__ import annotations

import csv
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.config import BackboneConfig, ExtractConfig, GridConfig, PredictConfig
from pipeline.datasets import Sample
from pipeline.datasets.base import whole_image
from pipeline.datasets.image_files import ImageFilesDataset
from pipeline.errors import BackboneUnavailable, CacheError, DataError
from pipeline.evaluation.pooling import image_log_scores, score_power
from pipeline.evaluation.score_maps import REDUCES, score_map
from pipeline.features.registry import fingerprint_part
from pipeline.reporting.provenance import write_sidecar
from pipeline.store.head_files import find_head, head_sidecar, load_head_file
from pipeline.store.shards import FeatureCache

CACHE_ABOVE = 200  # images: more go through the feature cache, so that a killed run resumes
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

    def __init__(self, path: Path, head, record: dict, *, device: str, weights: str | None,
                 runtime: str = "auto", batch_size: int | None = None):  # fmt: skip
        config = record.get("config", {})
        fingerprint = record.get("fingerprint") or {}
        if (config.get("task") or {}).get("name", "object") != "object":
            raise CacheError(
                f"{path}: an action head scores person boxes; score VOC Action splits with "
                "pipeline score --task action"
            )
        self.path, self.head, self.record = path, head, record
        self.classes = tuple(record["classes"])
        self.k = float(record.get("k", 5.0))
        saved = config.get("backbone") or {}
        self.backbone_config = BackboneConfig(
            saved.get("name", BackboneConfig.name),
            weights or saved.get("weights"),
            saved.get("input_size"),
            saved.get("mode", "crop"),
        )
        self.grid = GridConfig(**(config.get("grid") or {}))
        self._check_weights(fingerprint.get("backbone") or {})
        self.fingerprint = fingerprint
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
            raise CacheError(
                f"{self.path}: trained on {_describe(trained)}, but here the head's settings give "
                f"{_describe(here)}; pass --weights FILE with the weights it was trained with"
            )

    @property
    def backbone(self):
        """The frozen backbone, built on first use."""
        if self._backbone is None:
            from pipeline.features.engine import load_backbone

            self._backbone = load_backbone(
                ExtractConfig(
                    backbone=self.backbone_config,
                    device=self.device,
                    runtime=self.runtime,
                    batch_size=self.batch_size,
                )  # fmt: skip
            )
        return self._backbone

    def _pool(self, features: np.ndarray, k: float) -> tuple[np.ndarray, np.ndarray]:
        """([C] log mean p^k, [N, C] patch probabilities) of one image's patch features."""
        n = len(self.classes)
        index = np.zeros(len(features), dtype=np.int64)
        log_probs = self.head.predict_log_proba(features)
        log_scores = image_log_scores(self.head, features, index, 1, k, log_probs=log_probs)
        return log_scores[0, :n], np.exp(log_probs[:, :n])

    def _result(self, sample: Sample, boxes, features, k: float) -> ImagePrediction:
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
        patches = PatchImages(
            samples, list(range(len(samples))), grid=self.grid, rule=_rule(self.record),
            background=IGNORED, keep_all=True, patch_labels=False,
        )  # fmt: skip
        items = iter_image_features(self.backbone, patches, workers=workers, timing=timing)
        for item in items:
            if "error" in item:
                yield item
            else:
                sample = samples[item["index"]]
                yield self._result(sample, item["boxes"], item["features"], k)

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
        boxes, features = array_features(self.backbone, pixels, self.grid)
        sample = whole_image("array", Path(""), width, height)
        return self._result(sample, boxes, features, self.k if k is None else k)

    def predict(self, image, *, k: float | None = None) -> dict[str, float]:
        """{class: score} of one image (a path, an [H, W, 3] uint8 array or a PIL image)."""
        result = self._one(image, k)
        return {c: float(v) for c, v in zip(self.classes, result.scores, strict=True)}

    def score_maps(self, image, *, reduce: str = "mean") -> dict[str, np.ndarray]:
        """{class: [h, w] map} of one image: per 4-pixel cell, the mean (or max) of
        p(class | patch) over the patches covering it (pipeline/score_maps.py)."""
        if self.grid.kind != "patches":
            raise CacheError(f"{self.path}: a whole-image head has no patches to map")
        if reduce not in REDUCES:
            raise DataError(f"reduce {reduce!r}: use one of {', '.join(REDUCES)}")
        result = self._one(image, None)
        maps = score_map(result.boxes, result.probs, result.width, result.height, reduce=reduce)
        return dict(zip(self.classes, maps, strict=True))


def _describe(part: dict) -> str:
    return " ".join(
        f"{k}={part[k]}" for k in ("name", "weights", "input_size", "mode") if k in part
    )


def _rule(record: dict):
    from pipeline.config import LabelRule

    return LabelRule(**((record.get("config") or {}).get("labels") or {}))


def _as_array(image) -> np.ndarray:
    """[H, W, 3] uint8 of a numpy array (gray, RGB or RGBA) or a PIL image."""
    if hasattr(image, "convert"):
        image = np.asarray(image.convert("RGB"))
    pixels = np.asarray(image)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4) or pixels.dtype != np.uint8:
        raise DataError(
            f"an image array of shape {pixels.shape} and dtype {pixels.dtype}: pass [H, W, 3] uint8"
        )
    return np.ascontiguousarray(pixels[..., :3])


def load_head(
    head: str | Path, *, cache_dir: str | Path = "cache", device: str = "auto",
    weights: str | None = None, runtime: str = "auto", batch_size: int | None = None,
) -> Predictor:  # fmt: skip
    """A fitted head ready to predict: `head` is a heads/<name>.joblib file, or the name of
    the one head of that name in `cache_dir`; `weights` a local copy of its weights file;
    `runtime` and `batch_size` as extract's."""
    path = find_head(str(head), cache_dir)
    estimator, record = load_head_file(path)
    return Predictor(
        path, estimator, record, device=device, weights=weights, runtime=runtime,
        batch_size=batch_size,
    )  # fmt: skip


@dataclass(frozen=True)
class PredictSummary:
    images: int
    skipped: int
    classes: int
    k: float
    seconds: float
    output: str
    maps: str | None
    cached: str | None  # the cache directory the features went through, if any

    def line(self) -> str:
        rate = self.images / self.seconds if self.seconds else 0.0
        skipped = f" ({self.skipped} skipped)" if self.skipped else ""
        via = f", features cached in {self.cached}" if self.cached else ""
        maps = f", {self.maps}/" if self.maps else ""
        return (
            f"predict: {self.images} images{skipped}, {self.classes} classes, k {self.k:g} in "
            f"{self.seconds:.1f} s ({rate:.2f} images/s{via}) -> {self.output}{maps}"
        )


def predict_files(config: PredictConfig) -> PredictSummary:
    """`pipeline predict`: every image of `config.sources` through the head, into CSV."""
    started = time.perf_counter()
    predictor = load_head(
        config.head, cache_dir=config.cache_dir, device=config.device, weights=config.weights,
        runtime=config.runtime, batch_size=config.batch_size,
    )  # fmt: skip
    k = predictor.k if config.k is None else config.k
    if config.maps and predictor.grid.kind != "patches":
        raise CacheError(f"{predictor.path}: a whole-image head has no patch maps; drop --maps")
    dataset = ImageFilesDataset(list(config.sources))
    samples = dataset.load(PREDICT_SPLIT, skip_bad=True).samples
    cached = config.cached if config.cached is not None else len(samples) > CACHE_ABOVE
    if cached:
        results, skipped, cache_dir = _through_cache(config, predictor, dataset, samples, k)
    else:
        (results, skipped), cache_dir = _in_memory(config, predictor, samples, k), None
    _write_predictions(Path(config.output), predictor.classes, results, config.top)
    if config.maps:
        _write_maps(Path(config.maps), predictor, results)
    write_sidecar(
        config.output,
        "predict",
        replace(config, k=k),
        head={"path": str(predictor.path), **head_sidecar(predictor.record)},
        fingerprint=predictor.fingerprint,
        skipped=skipped,
        images=len(results),
    )
    return PredictSummary(
        images=len(results), skipped=len(skipped), classes=len(predictor.classes), k=k,
        seconds=time.perf_counter() - started, output=config.output, maps=config.maps,
        cached=cache_dir,
    )  # fmt: skip


def _in_memory(config: PredictConfig, predictor: Predictor, samples, k: float):
    """(predictions in order, bad files skipped) of the samples; a bad file is logged, or
    raised with --on-error stop (the bar closed first: the error gets a line of its own)."""
    results, skipped = [], []
    bar = tqdm(total=len(samples), unit="img", desc="predict", dynamic_ncols=True)
    with bar:
        for result in predictor.predict_samples(samples, k=k, workers=config.workers):
            bar.update()
            if isinstance(result, ImagePrediction):
                results.append(result)
                continue
            if config.on_error == "stop":
                raise DataError(result["error"])
            skipped.append({"id": samples[result["index"]].sample_id, "reason": result["error"]})
            tqdm.write(f"skipped: {result['error']}", file=sys.stderr)
    return results, skipped


def _through_cache(config: PredictConfig, predictor: Predictor, dataset, samples, k: float):
    """Extract the photos into the cache (resumable), then pool each image from its shard."""
    from pipeline.features.engine import extract_split

    extract = ExtractConfig(
        cache_dir=config.cache_dir, backbone=predictor.backbone_config, grid=predictor.grid,
        labels=_rule(predictor.record), split=PREDICT_SPLIT, device=config.device,
        runtime=config.runtime, batch_size=config.batch_size, workers=config.workers, keep="all",
        on_error=config.on_error,
    )  # fmt: skip
    summary = extract_split(extract, dataset=dataset)
    cache = FeatureCache.load(Path(summary.cache_dir))
    by_id = {s.sample_id: s for s in samples}
    results = []
    for shard in cache.iter_shards():
        for m, image_id in enumerate(shard.image_ids):
            rows = shard.image_index == m
            results.append(predictor._result(by_id[image_id], shard.boxes[rows],
                                             shard.features[rows], k))  # fmt: skip
    return results, cache.skipped(), summary.cache_dir


def _write_predictions(path: Path, classes, results: list[ImagePrediction], top: int) -> None:
    """predictions.csv: per image its id, path, top classes (best first) and every score."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "path", "top", *classes])
        for r in results:
            order = np.argsort(-r.scores, kind="stable")[:top]
            best = ";".join(classes[i] for i in order)
            writer.writerow([r.sample_id, str(r.path), best, *(f"{v:.6g}" for v in r.scores)])


def _write_maps(directory: Path, predictor: Predictor, results: list[ImagePrediction]) -> None:
    """maps.h5 and an overlay per image, as pipeline localize writes them."""
    from pipeline.evaluation.localization import MapsFile, file_key, overlay_image

    overlays = directory / "overlays"
    overlays.mkdir(parents=True, exist_ok=True)
    classes = predictor.classes
    with MapsFile(directory / "maps.h5", classes, "mean", head=str(predictor.path)) as maps_file:
        for r in tqdm(results, unit="img", desc="maps", dynamic_ncols=True):
            maps = score_map(r.boxes, r.probs, r.width, r.height)
            maps_file.add(r.sample_id, maps, r.width, r.height)
            top = min(2, len(classes))
            overlay = overlay_image(r.path, maps, classes, top, (r.width, r.height))
            overlay.save(overlays / f"{file_key(r.sample_id)}.png")
    write_sidecar(directory / "maps.h5", "predict", {"head": str(predictor.path)})
