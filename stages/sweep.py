"""`pipeline sweep`: head settings scored from one cache by cross-validation, in parallel
processes; rows are written as settings finish, so an interrupted sweep resumes (a row is
keyed by its whole fit config, the cache digest and the folds), and the best is a config file."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np

from pipeline.config import FitConfig, SweepConfig
from pipeline.errors import MidlevelError
from pipeline.io import read_csv, write_csv
from pipeline.reporting.provenance import beside, write_sidecar
from pipeline.store.cache import SplitCache
from pipeline.training.crossval import cross_validate
from pipeline.training.fit import open_fit_cache
from pipeline.training.keyed_rows import Resumed, measure_rows, resume
from pipeline.training.settings import apply_setting, fit_options, write_options_file

# After the setting's own columns; `key` (the fit config, cache and folds as JSON) is what a
# resumed sweep matches finished rows by.
FIXED_COLUMNS = ["head", "map_mean", "map_std", "map_folds", "fit_seconds", "digest", "key"]


@dataclass(frozen=True)
class SweepSummary:
    rows: list[dict]
    new: int
    seconds: float
    extract_seconds: float
    jobs: int
    output: str
    best_output: str
    folds: int

    def line(self) -> str:
        folds = self.folds
        best = self.rows[0]
        values = " ".join(f"{n}={best[n]}" for n in setting_names(self.rows) if best[n] != "")
        serial = sum(float(r["fit_seconds"]) for r in self.rows)
        cost = (
            f"; sweep cost {self.seconds / self.extract_seconds:.2f}x the "
            f"{self.extract_seconds:.0f} s extraction it reused"
            if self.extract_seconds
            else ""
        )
        return (
            f"sweep: {len(self.rows)} settings x {folds} folds ({self.new} run, "
            f"{len(self.rows) - self.new} kept) in {self.seconds:.1f} s on {self.jobs} jobs "
            f"({serial:.1f} s of work); best mAP {best['map_mean']} ± {best['map_std']} "
            f"({values}){cost} -> {self.output}, {self.best_output}"
        )


def setting_key(config: FitConfig, cache: SplitCache, folds: int) -> str:
    """What a row measured: the whole fit config (head, its settings, seed, classes), the
    cache's settings and the data its shards were made from, and the folds; a setting's
    values alone would let an SVM sweep reuse MLP rows, or a row outlive its data."""
    return json.dumps(
        {"fit": fit_options(config), **cache.contents(), "folds": folds}, sort_keys=True
    )


def setting_names(rows: list[dict]) -> list[str]:
    return [n for n in rows[0] if n not in FIXED_COLUMNS] if rows else []


def _evaluate(base: FitConfig, folds: int, cache: SplitCache, task: tuple[dict, str]):
    """(fold mAPs, seconds) of one (setting, key); runs in a job's process."""
    started = time.perf_counter()
    scores = cross_validate(apply_setting(base, task[0]), folds, cache)
    return scores, time.perf_counter() - started


def _row(
    setting: dict, key: str, names: list[str], base: FitConfig, scores, seconds, digest
) -> dict:
    config = apply_setting(base, setting)
    percent = 100 * np.asarray(scores)
    return {
        **{n: setting.get(n, "") for n in names},
        "head": config.head,
        "map_mean": round(float(percent.mean()), 2),
        "map_std": round(float(percent.std()), 2),
        "map_folds": ";".join(f"{v:.2f}" for v in percent),
        "fit_seconds": round(seconds, 2),
        "digest": digest,
        "key": key,
    }


def _with_columns(rows: list[dict], columns: list[str]) -> list[dict]:
    return [{n: r.get(n, "") for n in columns} for r in rows]


def _best_first(rows: list[dict]) -> list[dict]:
    """Best mean first (then the steadier); a row whose numbers do not read goes last."""
    return sorted(rows, key=lambda r: (-_finite(r.get("map_mean")), _finite(r.get("map_std"))))


def _finite(text) -> float:
    """A cell as a number, -inf where it is none (or not finite)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return -math.inf
    return value if math.isfinite(value) else -math.inf


def _measured(row: dict, folds: int) -> bool:
    """Whether a finished row holds what a sweep writes: a finite mean and spread, and one
    finite mAP per fold; another row (edited, damaged) is measured again, not reused."""
    fold_maps = str(row.get("map_folds") or "").split(";")
    numbers = [row.get("map_mean"), row.get("map_std"), *fold_maps]
    return len(fold_maps) == folds and all(math.isfinite(_finite(v)) for v in numbers)


def _resume(earlier, settings, keys: list[str], columns: list[str], folds: int) -> Resumed:
    """The settings left to score, as (setting, key), and the rows kept: this sweep's finished
    ones in the order of its settings, other sweeps' as they are; each with every column."""
    resumed = resume(
        earlier, list(zip(settings, keys, strict=True)), keys, partial(_measured, folds=folds)
    )
    position = {k: i for i, k in enumerate(keys)}
    kept = sorted(resumed.kept, key=lambda r: position[r["key"]])
    return replace(
        resumed,
        kept=_with_columns(kept, columns),
        others=_with_columns(resumed.others, columns),
    )


def _write_rows(path: Path, rows: list[dict]) -> None:
    """Best first; atomic, so a kill mid-write leaves the previous table."""
    write_csv(path, _best_first(rows))


def best_path(config: SweepConfig) -> Path:
    return beside(config.output, config.best_output, "-best.toml")


def run(config: SweepConfig) -> SweepSummary:
    if not config.settings:
        raise MidlevelError("sweep: no settings; give --param NAME=V1,V2 or a --file with [grid]")
    started = time.perf_counter()
    cache = open_fit_cache(config.base)
    digest, output = cache.digest, Path(config.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    earlier = read_csv(output)
    names = sorted({n for s in config.settings for n in s} | set(setting_names(earlier)))
    keys = [
        setting_key(apply_setting(config.base, s), cache, config.folds) for s in config.settings
    ]
    columns = [*names, *FIXED_COLUMNS]  # every sweep's setting columns, blank where unset
    finished = measure_rows(
        _resume(earlier, config.settings, keys, columns, config.folds),
        partial(_evaluate, config.base, config.folds, cache),
        lambda task, result: [_row(*task, names, config.base, *result, digest)],
        partial(_write_rows, output),
        jobs=config.jobs,
        label="sweep",
        unit="setting",
    )
    rows = _best_first(finished.rows)  # this sweep's own rows: its best is its first
    best = next(s for s, k in zip(config.settings, keys, strict=True) if k == rows[0]["key"])
    best_config = apply_setting(config.base, best)
    best_file = best_path(config)
    write_options_file(
        best_file,
        fit_options(best_config),
        f"best of {len(rows)} settings by {config.folds}-fold cross-validation on "
        f"{config.base.split} (pipeline sweep): mAP {rows[0]['map_mean']} ± {rows[0]['map_std']}\n"
        f"cache {digest}; use: pipeline fit --config {best_file.name}",
    )
    write_sidecar(output, "sweep", config, digest=digest, fingerprint=cache.key.settings, best=best)
    return SweepSummary(
        rows=rows,
        new=finished.new,
        seconds=time.perf_counter() - started,
        extract_seconds=cache.extract_seconds(),
        jobs=finished.jobs,
        output=str(output),
        best_output=str(best_file),
        folds=config.folds,
    )
