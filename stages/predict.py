"""`pipeline predict`: a fitted head on new photos (files, folders, globs) into
predictions.csv and its sidecar, and with --maps the maps and overlays of localize. A few
photos go in memory; many through the feature cache, resumable like extract. With --model
it imports neither torch nor h5py nor scikit-learn (a server installs the runtime alone):
the head's and the maps' parts load where they are used."""

from __future__ import annotations

import csv
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.config import ExtractConfig, PredictConfig
from pipeline.datasets.image_files import ImageFilesDataset
from pipeline.deploy.runtime import Model
from pipeline.errors import CacheError, DataError
from pipeline.evaluation.pooling import describe_pooling
from pipeline.evaluation.score_maps import score_map
from pipeline.predict import PREDICT_SPLIT, ImagePrediction, Predictor, load_head
from pipeline.reporting.provenance import write_sidecar

CACHE_ABOVE = 200  # images: more go through the feature cache, so that a killed run resumes


@dataclass(frozen=True)
class PredictSummary:
    images: int
    skipped: int
    classes: int
    pooling: str  # "k 5", "max pooling": how the image scores were pooled
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
            f"predict: {self.images} images{skipped}, {self.classes} classes, {self.pooling} in "
            f"{self.seconds:.1f} s ({rate:.2f} images/s{via}) -> {self.output}{maps}"
        )


def run(config: PredictConfig) -> PredictSummary:
    """Every image of `config.sources` through the head (or the exported model), into CSV
    (and maps)."""
    started = time.perf_counter()
    if config.model is not None:
        source = _ModelSource(Model.load(config.model), config)
    else:
        source = _HeadSource(config)
    if config.maps and source.grid.kind != "patches":
        raise CacheError(f"{source.path}: a whole-image head has no patch maps; drop --maps")
    refuse = source.predictor.refusal if config.model is None else None  # the runtime: its own
    dataset = ImageFilesDataset(list(config.sources), refuse=refuse)
    samples = dataset.load(PREDICT_SPLIT, skip_bad=True).samples
    if config.model is not None:
        (results, skipped), cache_dir = _in_memory(config, source, samples), None
    elif config.cached if config.cached is not None else len(samples) > CACHE_ABOVE:
        results, skipped, cache_dir = _through_cache(
            config, source.predictor, dataset, samples, source.k
        )
    else:
        (results, skipped), cache_dir = _in_memory(config, source, samples), None
    _write_predictions(Path(config.output), source.classes, results, config.top)
    if config.maps:
        _write_maps(Path(config.maps), source.classes, str(source.path), results)
    write_sidecar(
        config.output, "predict", replace(config, k=source.k), head=source.provenance(),
        fingerprint=source.fingerprint, skipped=skipped, images=len(results),
    )  # fmt: skip
    return PredictSummary(
        images=len(results), skipped=len(skipped), classes=len(source.classes),
        pooling=source.pooling, seconds=time.perf_counter() - started, output=config.output,
        maps=config.maps, cached=cache_dir,
    )  # fmt: skip


class _HeadSource:
    """Predictions of a head file with its torch backbone (pipeline/predict.py)."""

    def __init__(self, config: PredictConfig):
        self.predictor = predictor = load_head(
            config.head, cache_dir=config.cache_dir, device=config.device, weights=config.weights,
            runtime=config.runtime, batch_size=config.batch_size, trust_pickle=config.trust_pickle,
            precision=config.precision,
        )  # fmt: skip
        if predictor.backbone_config.precision != predictor.trained_precision:
            tqdm.write(_precision_warning(predictor.trained_precision,
                                          predictor.backbone_config.precision), file=sys.stderr)  # fmt: skip
        self.k = predictor.k if config.k is None else config.k
        self.path, self.classes, self.grid = predictor.path, predictor.classes, predictor.grid
        self.fingerprint = predictor.fingerprint
        self.pooling = describe_pooling(predictor.head, self.k)

    def provenance(self) -> dict:
        return {"path": str(self.path), **self.predictor.record.sidecar()}

    def predictions(self, samples, workers: int):
        return self.predictor.predict_samples(samples, k=self.k, workers=workers)


class _ModelSource:
    """Predictions of an exported model folder with the torch-free runtime, one photo at a
    time in this process (pipeline/deploy/runtime.py)."""

    def __init__(self, model: Model, config: PredictConfig):
        self.model, self.path = model, model.folder
        pooling = model.info["pooling"]
        self.k = float(pooling["k"]) if config.k is None else config.k
        self.classes, self.grid = model.classes, model.grid
        self.fingerprint = model.fingerprint
        self.pooling = (
            f"k {self.k:g}" if pooling["pool"] == "mean-pk" else f"{pooling['pool']} pooling"
        )

    def provenance(self) -> dict:
        info = self.model.info
        return {"model": str(self.path), "precision": info["precision"], **info["head"],
                "classes": list(self.classes), "digest": info.get("digest")}  # fmt: skip

    def predictions(self, samples, workers: int):
        for index, sample in enumerate(samples):
            if sample.error is not None:
                yield {"index": index, "error": sample.error}
                continue
            try:
                p = self.model.predict(sample.image_path, name=sample.sample_id, k=self.k)
            except DataError as exc:
                yield {"index": index, "error": str(exc)}
                continue
            yield ImagePrediction(sample.sample_id, sample.image_path, p.scores, p.log_scores,
                                  p.boxes, p.probs, p.width, p.height)  # fmt: skip


def _precision_warning(trained: str, now: str) -> str:
    return (
        f"warning: the head learnt on {trained} features and the net runs at {now} here: its "
        "scores differ a little from those of its own precision (docs/deploy.md#int8)"
    )


def _in_memory(config: PredictConfig, source, samples):
    """(predictions in order, bad files skipped) of the samples; a bad file is logged, or
    raised with --on-error stop (the bar closed first: the error gets a line of its own)."""
    results, skipped = [], []
    bar = tqdm(total=len(samples), unit="img", desc="predict", dynamic_ncols=True)
    with bar:
        for result in source.predictions(samples, config.workers):
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
    from pipeline.store.cache import SplitCache

    extract = ExtractConfig(
        cache_dir=config.cache_dir, backbone=predictor.backbone_config, grid=predictor.grid,
        labels=predictor.record.settings("labels"), split=PREDICT_SPLIT, device=config.device,
        runtime=config.runtime, batch_size=config.batch_size, workers=config.workers, keep="all",
        on_error=config.on_error,
    )  # fmt: skip
    calibration = predictor.calibration() if predictor.backbone_config.precision == "int8" else None
    summary = extract_split(extract, dataset=dataset, calibration=calibration)
    cache = SplitCache.load(Path(summary.cache_dir))
    by_id = {s.sample_id: s for s in samples}
    results = []
    for shard in cache.iter_shards():
        for m, image_id in enumerate(shard.image_ids):
            rows = shard.image_index == m
            results.append(predictor.result(by_id[image_id], shard.boxes[rows],
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


def _write_maps(directory: Path, classes, head: str, results: list[ImagePrediction]) -> None:
    """maps.h5 and an overlay of every image's top two classes, as pipeline localize writes them."""
    from pipeline.reporting.maps import MapsWriter

    top = min(2, len(classes))
    with MapsWriter(
        directory, classes, "mean", overlays=len(results), top=top, head=head
    ) as writer:
        for r in tqdm(results, unit="img", desc="maps", dynamic_ncols=True):
            maps = score_map(r.boxes, r.probs, r.width, r.height)
            writer.add(r.sample_id, r.path, maps, (r.width, r.height))
    write_sidecar(writer.path, "predict", {"head": head})
