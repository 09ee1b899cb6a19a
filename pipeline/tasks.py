"""What one cached "image" is, per task, and the boxes that label its patches.

- object (VOC classification): a whole image; its objects label the patches; truth is the
  image-level label of each of the 20 classes.
- action (VOC 2012 Action): one annotated person; the patches cover the person box enlarged by
  `context` (scene around the person: a horse, a bike, a phone), the person box labels them with
  the person's action; truth is the person's 11 action flags. The sample id is
  `<image id>/<person index>`, the index 1-based over the image's XML objects, as in the devkit's
  `ImageSets/Action/<action>_<split>.txt` files and the server's comp10 files.

Either way the rest of the pipeline (cache, heads, sweeps, scores, reports) sees samples with
patches and a truth row, and does not know which task made them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import TaskConfig
from pipeline.errors import DataError
from pipeline.voc import (
    ACTIONS,
    VOC_CLASSES,
    ImageRecord,
    VocObject,
    image_labels,
    load_records,
    read_split,
)


@dataclass(frozen=True)
class Sample:
    sample_id: str
    image_id: str
    width: int  # of the image
    height: int
    region: tuple[float, float, float, float]  # the patches cover this box of the image
    boxes: np.ndarray  # [M, 4] boxes that label the patches
    box_classes: np.ndarray  # [M] int, index into the task's classes
    difficult: np.ndarray  # [M] bool: never positive, never background (ignored)
    error: str | None = None  # its files are bad (load_task with skip_bad): extract skips it


@dataclass(frozen=True)
class TaskData:
    classes: tuple[str, ...]
    samples: list[Sample]
    truth: np.ndarray | None  # [n_samples, n_classes] 1 / -1 / 0; None: labels withheld


def load_task(
    year_dir: Path, split: str, task: TaskConfig, limit: int | None, *, skip_bad: bool = False
) -> TaskData:
    """The samples of a split for `task`; `limit` keeps the first N images. With `skip_bad`,
    an image with bad files is a sample carrying its error (see voc.load_records)."""
    if task.name == "object":
        return _object_task(year_dir, split, limit, skip_bad)
    if task.name == "action":
        return _action_task(year_dir, split, limit, task.context, skip_bad)
    raise DataError(f"--task {task.name!r}: unknown task; choose object or action")


def _broken(record: ImageRecord, sample_id: str) -> Sample:
    empty = np.empty(0)
    return Sample(sample_id, record.image_id, 0, 0, (0.0, 0.0, 0.0, 0.0),
                  empty.reshape(0, 4), empty, empty, error=record.error)  # fmt: skip


def _object_task(year_dir: Path, split: str, limit: int | None, skip_bad: bool) -> TaskData:
    records = load_records(year_dir, read_split(year_dir, split)[:limit], skip_bad=skip_bad)
    index = {name: i for i, name in enumerate(VOC_CLASSES)}
    samples = [
        Sample(
            r.image_id,
            r.image_id,
            r.width,
            r.height,
            (0.0, 0.0, float(r.width), float(r.height)),
            r.boxes(),
            np.array([index[o.name] for o in r.objects], dtype=np.int64),
            np.array([o.difficult for o in r.objects], dtype=bool),
        )
        if r.error is None
        else _broken(r, r.image_id)
        for r in records
    ]
    return TaskData(VOC_CLASSES, samples, image_labels(year_dir, split, VOC_CLASSES, records))


def enlarge(box, context: float, width: int, height: int) -> tuple[float, float, float, float]:
    """`box` grown by `context` times its width and height (half on each side), in the image."""
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) * context / 2, (y1 - y0) * context / 2
    return (
        max(0.0, x0 - dx),
        max(0.0, y0 - dy),
        min(float(width), x1 + dx),
        min(float(height), y1 + dy),
    )


def _action_lists(year_dir: Path, split: str) -> dict[tuple[str, int], dict[str, int]]:
    """(image id, person index) -> {action: label} from ImageSets/Action/<action>_<split>.txt;
    labels missing (a withheld test split lists persons only) are left out."""
    persons: dict[tuple[str, int], dict[str, int]] = {}
    for action in ACTIONS:
        path = year_dir / "ImageSets" / "Action" / f"{action}_{split}.txt"
        if not path.is_file():
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) not in (2, 3) or not all(p.lstrip("-").isdigit() for p in parts[1:]):
                raise DataError(
                    f"{path}: line {number} is {line!r}, not '<image id> <person> [label]'; fix it"
                )
            labels = persons.setdefault((parts[0], int(parts[1])), {})
            if len(parts) == 3:
                labels[action] = int(parts[2])
    return persons


def _persons(record: ImageRecord, listed: dict) -> list[tuple[int, VocObject]]:
    """The action persons of one image: those the split files list, else those with <actions>."""
    if listed:
        chosen = sorted(j for (image_id, j) in listed if image_id == record.image_id)
        for j in chosen:
            if not 1 <= j <= len(record.objects):
                raise DataError(
                    f"Annotations/{record.image_id}.xml: ImageSets/Action names person {j}, the file has "
                    f"{len(record.objects)} objects; fix the split files or the annotation"
                )
        return [(j, record.objects[j - 1]) for j in chosen]
    return [(j, o) for j, o in enumerate(record.objects, start=1) if o.actions is not None]


def _action_task(
    year_dir: Path, split: str, limit: int | None, context: float, skip_bad: bool
) -> TaskData:
    path = year_dir / "ImageSets" / "Action" / f"{split}.txt"
    if not path.is_file():
        raise DataError(
            f"{path}: missing; --task action needs a VOC 2012 Action tree (ImageSets/Action/<split>.txt)"
        )
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()][:limit]
    if not ids:
        raise DataError(f"{path}: split {split!r} is empty; check the file")
    listed = _action_lists(year_dir, split)
    samples, truth = [], []
    for record in load_records(year_dir, ids, skip_bad=skip_bad):
        if record.error is not None:  # its persons are unknown: one placeholder to skip
            samples.append(_broken(record, f"{record.image_id}/0"))
            truth.append([0] * len(ACTIONS))
            continue
        for j, person in _persons(record, listed):
            flags = listed.get((record.image_id, j)) or (
                {a: 1 if a in person.actions else -1 for a in ACTIONS}
                if person.actions is not None
                else {}
            )
            positive = [a for a in ACTIONS if flags.get(a) == 1]
            samples.append(
                Sample(
                    f"{record.image_id}/{j}",
                    record.image_id,
                    record.width,
                    record.height,
                    enlarge(person.box, context, record.width, record.height),
                    np.array([person.box], dtype=np.float32),
                    np.array([ACTIONS.index(positive[0]) if positive else 0], dtype=np.int64),
                    # a person with several actions (or none) labels no patch: a softmax head
                    # has one class per patch; the person still counts in every action's AP.
                    np.array([len(positive) != 1], dtype=bool),
                )
            )
            truth.append([flags.get(a, 0) for a in ACTIONS])
    if not samples:
        raise DataError(f"{path}: no annotated person in split {split!r}; check ImageSets/Action")
    labelled = any(any(row) for row in truth)
    return TaskData(ACTIONS, samples, np.array(truth, dtype=np.int8) if labelled else None)
