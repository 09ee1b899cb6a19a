"""`pipeline suggest`: the images of a pool to label next for a fitted head, ranked by a
strategy that sees only what an unlabelled image gives; a CSV and a contact sheet."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import NO_HEAD, SuggestConfig
from pipeline.datasets import open_dataset
from pipeline.errors import CacheError, MidlevelError
from pipeline.evaluation.pooling import score_power
from pipeline.evaluation.scoring import HeadOnSplit, blind_scores, open_head_on_split
from pipeline.features.caches import open_split
from pipeline.io import write_csv
from pipeline.reporting.plots import suggestion_sheet
from pipeline.reporting.provenance import beside, write_sidecar
from pipeline.store.cache import SplitCache
from pipeline.store.data_digests import DIGESTS_FILE, ImageDigests
from pipeline.store.head_files import head_cache
from pipeline.training.acquisition import choose, image_embeddings, resolve
from pipeline.training.curve import split_truth

TOP = 3  # classes named per suggested image


@dataclass(frozen=True)
class SuggestSummary:
    rows: list[dict]
    pool: int
    labelled: int | None  # None: the head's training images were not found
    seconds: float
    output: str
    sheet: str | None
    left_out: str = ""  # which pool images are training images, and how that was told
    strategy: dict | None = None  # asked, used (what auto stood for) and why

    def line(self) -> str:
        sheet = f", {self.sheet}" if self.sheet else " (no dataset given: no contact sheet)"
        if self.labelled == 0:
            known = "no label yet: a first batch"
        elif self.labelled is not None:
            known = f"{self.labelled} labelled already"
        else:
            known = (
                "the head's training cache is not beside its file: diversity from the pool alone"
            )
        by = ""
        if self.strategy:
            used, asked = self.strategy["used"], self.strategy["asked"]
            by = f" by {used}" + (f" (auto: {self.strategy['why']})" if asked == "auto" else "")
        return (
            f"suggest: {len(self.rows)} of {self.pool} pool images to label next{by} ({known}"
            f"{self.left_out}) in {self.seconds:.1f} s -> {self.output}{sheet}"
        )


def run(config: SuggestConfig) -> SuggestSummary:
    started = time.perf_counter()
    if config.head == NO_HEAD:
        return _first_batch(config, started)
    opened = open_head_on_split(config)
    train = training_cache(opened)
    labelled = image_embeddings(train) if train is not None else None
    pool = image_embeddings(opened.cache)
    paths = _image_paths(opened.cache)
    known, left_out = _training_images(opened.cache, train, paths)
    candidates = [i for i in pool.image_ids if i not in known]
    if not candidates:
        raise CacheError(
            f"{opened.cache.directory}: split {config.split!r} has no image outside the "
            f"training split {config.train_split!r} to suggest; pass a pool --split"
        )
    k = opened.record.k
    log_scores = blind_scores(
        opened.head, opened.cache, opened.classes, opened.record.classes, k, candidates
    )
    power = score_power(opened.head, k)
    centres = labelled.vectors if labelled is not None else np.zeros((0, pool.vectors.shape[1]))
    positives = (
        (split_truth(train, opened.classes).labels == 1).sum(axis=0) if train is not None else None
    )
    strategy = _strategy(config, True, positives)
    picks = choose(
        strategy["used"], pool.of(candidates), centres, log_scores, power, config.batch,
        positives=positives,
    )  # fmt: skip
    rows = []
    for rank, (index, value) in enumerate(picks, 1):
        p = np.exp(log_scores[index] / power)
        top = np.argsort(-np.nan_to_num(p, nan=-1.0), kind="stable")[:TOP]
        rows.append(
            _row(rank, candidates[index], paths, strategy["used"], value,
                 "; ".join(f"{opened.classes[c]} {p[c]:.2f}" for c in top))
        )  # fmt: skip
    output, sheet = _write(rows, paths, config, head=opened.sidecar(), pool=opened.cache,
                           labelled=train, strategy=strategy)  # fmt: skip
    return SuggestSummary(
        rows, len(candidates), train.manifest().get("n_images") if train is not None else None,
        time.perf_counter() - started, output, sheet, left_out, strategy,
    )  # fmt: skip


def _first_batch(config: SuggestConfig, started: float) -> SuggestSummary:
    """No head yet (--head none): the pool ranked by a strategy that needs no label."""
    cache = open_split(config, config.split)
    pool = image_embeddings(cache)
    if not pool.image_ids:
        raise CacheError(f"{cache.directory}: split {config.split!r} holds no image to suggest")
    paths = _image_paths(cache)
    none = np.zeros((0, pool.vectors.shape[1]), np.float32)
    strategy = _strategy(config, False, None)
    picks = choose(strategy["used"], pool.vectors, none, None, 1.0, config.batch)
    used = strategy["used"]
    rows = [_row(r, pool.image_ids[i], paths, used, v, "") for r, (i, v) in enumerate(picks, 1)]
    output, sheet = _write(
        rows, paths, config, head=None, pool=cache, labelled=None, strategy=strategy
    )
    return SuggestSummary(
        rows, len(pool.image_ids), 0, time.perf_counter() - started, output, sheet, "", strategy
    )


def _strategy(config: SuggestConfig, has_head: bool, positives) -> dict:
    """The strategy asked for, the one used (what auto stands for here) and why."""
    used, why = resolve(config.strategy, has_head, positives)
    return {"asked": config.strategy, "used": used, "why": why}


def _row(rank: int, image: str, paths, strategy: str, value: float, top: str) -> dict:
    return {
        "rank": rank, "image": image, "path": paths.get(image, ""),
        "strategy": strategy, "strategy_score": round(value, 4), "top_classes": top,
    }  # fmt: skip


def _write(rows, paths, config: SuggestConfig, *, head, pool: SplitCache, labelled, strategy):
    """suggest.csv, its contact sheet where the images' files are known, and its sidecar:
    (the CSV's path, the sheet's or None)."""
    output = Path(config.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_csv(output, rows)
    sheet = None
    if paths:
        sheet = str(suggestion_sheet(rows, paths, beside(output, config.sheet, ".png")))
    write_sidecar(
        output, "suggest", config, head=head, pool=pool.contents(),
        labelled=labelled.contents() if labelled is not None else None, strategy=strategy,
    )  # fmt: skip
    return str(output), sheet


def training_cache(opened: HeadOnSplit) -> SplitCache | None:
    """The cache the head was fitted on, whose images are labelled already: the one its file
    sits in (found as score finds it); None for a head file kept elsewhere."""
    return head_cache(opened.path, opened.record)


def _training_images(
    pool: SplitCache, train: SplitCache | None, pool_paths: dict[str, Path]
) -> tuple[set[str], str]:
    """The pool images that are training images already, and a note saying so: the same id
    in the same dataset, or, in another dataset, the same bytes (a new photo named like a
    training image is not one)."""
    if train is None:
        return set(), ""
    ids = {i for shard in pool.iter_shards(features=False) for i in shard.image_ids}
    if pool.source is not None and pool.source == train.source:
        same = ids & {i for shard in train.iter_shards(features=False) for i in shard.image_ids}
        return same, _note(len(same), "the same ids")
    try:
        training = _split_paths(train.source, train).values()
        pool_paths = pool_paths or _split_paths(pool.source, pool)  # no dataset given
    except MidlevelError:
        return set(), "; the training images are not readable here, so none is left out"
    digests = ImageDigests(train.directory / DIGESTS_FILE)
    labelled = {digests.digest(path) for path in training} - {"unreadable"}
    mine = ImageDigests(pool.directory / DIGESTS_FILE)
    same = {i for i, path in pool_paths.items() if i in ids and mine.digest(path) in labelled}
    return same, _note(len(same), "the same bytes")


def _split_paths(source: str | None, cache: SplitCache) -> dict[str, Path]:
    """image id -> file of the split a cache holds, read from its dataset."""
    split = open_dataset(source or "").load(str(cache.attrs().get("split", "")), skip_bad=True)
    return {s.sample_id: s.image_path for s in split.samples}


def _note(count: int, how: str) -> str:
    if not count:
        return ""
    images = (
        "1 pool image is a training image"
        if count == 1
        else f"{count} pool images are training images"
    )
    return f"; {images} ({how}), left out"


def _image_paths(pool: SplitCache) -> dict[str, Path]:
    """image id -> its file, from the dataset the pool was checked against (none given: no
    paths, no sheet)."""
    if pool.data is None:
        return {}
    return {s.sample_id: s.image_path for s in pool.data.samples}
