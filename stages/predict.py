"""`pipeline predict`: a fitted head on new photos (files, folders, globs) into
predictions.csv and its sidecar, and with --maps the maps and overlays of localize. A few
photos go in memory; many through the feature cache, resumable like extract."""

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
from pipeline.errors import CacheError, DataError
from pipeline.evaluation.pooling import describe_pooling
from pipeline.evaluation.score_maps import score_map
from pipeline.features.engine import extract_split
from pipeline.predict import PREDICT_SPLIT, ImagePrediction, Predictor, load_head
from pipeline.reporting.maps import MapsFile, file_key
from pipeline.reporting.overlays import overlay_image
from pipeline.reporting.provenance import write_sidecar
from pipeline.store.cache import FeatureCache

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
    """Every image of `config.sources` through the head, into CSV (and maps)."""
    started = time.perf_counter()
    predictor = load_head(
        config.head, cache_dir=config.cache_dir, device=config.device, weights=config.weights,
        runtime=config.runtime, batch_size=config.batch_size, trust_pickle=config.trust_pickle,
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
        head={"path": str(predictor.path), **predictor.record.sidecar()},
        fingerprint=predictor.fingerprint,
        skipped=skipped,
        images=len(results),
    )
    return PredictSummary(
        images=len(results), skipped=len(skipped), classes=len(predictor.classes),
        pooling=describe_pooling(predictor.head, k),
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
    extract = ExtractConfig(
        cache_dir=config.cache_dir, backbone=predictor.backbone_config, grid=predictor.grid,
        labels=predictor.record.settings("labels"), split=PREDICT_SPLIT, device=config.device,
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


def _write_maps(directory: Path, predictor: Predictor, results: list[ImagePrediction]) -> None:
    """maps.h5 and an overlay per image, as pipeline localize writes them."""
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
