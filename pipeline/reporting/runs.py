"""Scored runs on disk: ap.csv (AP per class in percent, then the mean), the per-image scores
and the provenance sidecar, written by score and read back by report (a run without a
sidecar, from another tool, still reads; its settings are then unknown)."""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pipeline.config import TaskConfig
from pipeline.errors import DataError, MidlevelError
from pipeline.evaluation.metrics import mean_ap
from pipeline.evaluation.scoring import ScoreResult
from pipeline.reporting.provenance import (
    SCORES_SUFFIX,
    beside,
    read_sidecar,
    sidecar_path,
    write_sidecar,
)

AP_COLUMNS = ("class", "ap_voc07", "ap_area", "positives", "images")
MEAN = "mean"
TRUTH_PREFIX = "truth_"


# eq=False: the arrays make field-wise equality ambiguous; a run is compared by identity.
@dataclass(frozen=True, eq=False)
class Run:
    name: str
    ap_csv: Path
    classes: tuple[str, ...]
    ap_voc07: dict[str, float]  # class -> VOC07 11-point AP, percent; nan without positives
    ap_area: dict[str, float]  # class -> area AP (VOC 2010+), percent
    mean_voc07: float
    mean_area: float
    image_ids: list[str]
    scores: np.ndarray  # [n_images, n_classes] float64 log pooled image scores
    truth: np.ndarray  # [n_images, n_classes] int8: 1 present, -1 absent, 0 difficult
    sidecar: dict  # {} when the run has no provenance sidecar

    @property
    def digest(self) -> str | None:
        """Fingerprint of the feature cache the run was scored from, when recorded."""
        return self.sidecar.get("digest")


def scores_csv(ap_csv: str | Path, explicit: str | None = None) -> Path:
    """ap.csv -> ap-scores.csv, where `pipeline score` writes the per-image scores by default."""
    return beside(ap_csv, explicit, SCORES_SUFFIX)


def write_run(result: ScoreResult) -> None:
    """A scored run's files: ap.csv (per class, then the mean; a split without labels removes
    an older one, which the new sidecar would seem to describe), the per-image scores with
    their truth, and the provenance sidecar."""
    config = result.config
    output = Path(config.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if not result.labelled:
        output.unlink(missing_ok=True)
    else:
        rows = result.table()
        with open(output, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    with open(scores_csv(output, config.scores_output), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", *result.classes, *(TRUTH_PREFIX + c for c in result.classes)])
        for image_id, row, truth in zip(
            result.images.image_ids, result.images.scores, result.images.truth, strict=True
        ):
            writer.writerow([image_id, *(f"{v:.9g}" for v in row), *truth.tolist()])
    write_sidecar(
        output, "score", config, digest=result.cache.digest,
        fingerprint=result.cache.key.settings, head=result.head, labelled=result.labelled,
        left_out=list(result.left_out),
    )  # fmt: skip


def load_run(path: str | Path, name: str | None = None) -> Run:
    """Read a run from its ap.csv; `name` defaults to the head (mlp, svm, weak) the sidecar
    records, or the file stem when there is no sidecar. Raises DataError naming the faulty file."""
    path = Path(path)
    classes, ap_voc07, ap_area, means = _read_ap(path)
    image_ids, scores, truth = _read_scores(scores_csv(path), path, classes)
    sidecar = _read_sidecar(path)
    return Run(
        name=name
        or (sidecar.get("head") or {}).get("head")
        or (sidecar.get("config") or {}).get("head")
        or path.stem,
        ap_csv=path,
        classes=classes,
        ap_voc07=ap_voc07,
        ap_area=ap_area,
        mean_voc07=means.get("ap_voc07", mean_ap(list(ap_voc07.values()))),
        mean_area=means.get("ap_area", mean_ap(list(ap_area.values()))),
        image_ids=image_ids,
        scores=scores,
        truth=truth,
        sidecar=sidecar,
    )


def unique_names(runs: list[Run]) -> list[Run]:
    """The runs, renamed where names clash, so each gets its own table column and file.

    A clashing name (two mlp runs) gets the file stem, then the parent directory when the
    stems clash too (runs/k1/ap.csv vs runs/k5/ap.csv), then a count (the same file twice).
    """
    tags = (
        lambda run, _: run.ap_csv.stem,
        lambda run, _: run.ap_csv.resolve().parent.name,
        lambda _, position: str(position + 1),
    )
    for tag in tags:
        counts = Counter(run.name for run in runs)
        runs = [
            replace(run, name=f"{run.name}-{tag(run, k)}") if counts[run.name] > 1 else run
            for k, run in enumerate(runs)
        ]
    return runs


def _number(text: str | None, path: Path, where: str) -> float:
    """A CSV cell as a float; empty means nan (AP of a class with no positive)."""
    try:
        return float(text) if text and text.strip() else float("nan")
    except ValueError:
        raise DataError(
            f"{path}: {where}: {text!r} is not a number; write the file again with pipeline score"
        ) from None


def _read_ap(
    path: Path,
) -> tuple[tuple[str, ...], dict[str, float], dict[str, float], dict[str, float]]:
    """Classes, VOC07 and area AP per class, and the mean row's values (when present)."""
    if not path.is_file():
        raise DataError(f"{path}: run not found; pass the ap.csv that pipeline score wrote")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in AP_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(
                f"{path}: missing columns {', '.join(missing)}; expected {','.join(AP_COLUMNS)} "
                "as pipeline score writes"
            )
        rows = list(reader)
    ap_voc07, ap_area, means = {}, {}, {}
    for row in rows:
        name = row["class"]
        voc07 = _number(row["ap_voc07"], path, f"class {name}, ap_voc07")
        area = _number(row["ap_area"], path, f"class {name}, ap_area")
        if name == MEAN:
            means = {"ap_voc07": voc07, "ap_area": area}
        else:
            ap_voc07[name], ap_area[name] = voc07, area
    if not ap_voc07:
        raise DataError(f"{path}: no class rows; score at least one class with pipeline score")
    return tuple(ap_voc07), ap_voc07, ap_area, means


def _read_scores(
    path: Path, ap_csv: Path, classes: tuple[str, ...]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Image ids, [n, C] scores and [n, C] int8 truth, checked against ap.csv's classes."""
    if not path.is_file():
        raise DataError(
            f"{path}: per-image scores of {ap_csv.name} not found; keep them beside it "
            "(pipeline score writes both)"
        )
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    expected = ["image_id", *classes, *(TRUTH_PREFIX + c for c in classes)]
    header = rows[0] if rows else []
    if header != expected:
        found = [c for c in header[1:] if not c.startswith(TRUTH_PREFIX)]
        raise DataError(
            f"{path}: columns image_id, {', '.join(found)} and truth_<class> do not match the "
            f"classes of {ap_csv.name} ({', '.join(classes)}); use the files of one pipeline score run"
        )
    body = rows[1:]
    if any(len(row) != len(expected) for row in body):
        raise DataError(f"{path}: rows of unequal length; write the file again with pipeline score")
    n = len(classes)
    values = np.array(
        [[_number(v, path, f"image {row[0]}") for v in row[1:]] for row in body], dtype=np.float64
    ).reshape(len(body), 2 * n)
    truth = values[:, n:]
    if not np.isin(truth, (-1, 0, 1)).all():
        raise DataError(
            f"{path}: truth_ columns must hold 1, -1 or 0; write the file again with pipeline score"
        )
    return [row[0] for row in body], values[:, :n], truth.astype(np.int8)


# What report reads from a run's sidecar, and the JSON type each must have (or be absent);
# a parent comes before its fields.
SIDECAR_TYPES = {
    "config": dict, "config.backbone": dict, "config.grid": dict, "config.task": dict,
    "config.data": str, "config.voc_root": str, "config.image_dir": str, "config.split": str,
    "config.train_split": str, "config.head": str, "head": dict, "head.head": str,
    "head.params": dict, "digest": str, "code_version": str, "created": str,
}  # fmt: skip
FIX = "delete it to report the run without settings, or score the run again"


def _read_sidecar(path: Path) -> dict:
    """The run's sidecar, each field report reads checked against the type it must have."""
    where = sidecar_path(path)
    try:
        payload = read_sidecar(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{where}: not valid JSON ({type(exc).__name__}); {FIX}") from None
    if not isinstance(payload, dict):
        raise DataError(f"{where}: a JSON {type(payload).__name__}, not an object; {FIX}")
    for name, kind in SIDECAR_TYPES.items():
        *parents, leaf = name.split(".")
        holder = payload
        for parent in parents:
            holder = holder.get(parent) or {}
        value = holder.get(leaf)
        if value is not None and not isinstance(value, kind):
            shown = json.dumps(value)[:40]
            kind_name = "an object" if kind is dict else "a string"
            raise DataError(f"{where}: its {name} is {shown}, not {kind_name}; {FIX}")
    task = (payload.get("config") or {}).get("task")
    try:
        TaskConfig(**(task or {}))
    except (TypeError, MidlevelError) as exc:
        raise DataError(f"{where}: its config.task is not a task ({exc}); {FIX}") from None
    return payload
