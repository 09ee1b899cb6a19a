"""VOC 2012 Action (`--task action`, docs/voc2012.md): one sample per annotated person, its
patches over the person box enlarged by `context` (the horse, bike or phone around it), its
truth the 11 action flags; sample ids `<image id>/<person index>`, as in the devkit.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.datasets.base import Sample, SplitData, broken
from pipeline.datasets.voc_xml import ACTIONS, ImageRecord, VocObject
from pipeline.errors import DataError


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
    labels missing (a withheld test split lists persons only) are left out. The person and
    the label are the last tokens of a line (an image id may hold spaces): a file whose every
    line ends in two numbers has labels."""
    persons: dict[tuple[str, int], dict[str, int]] = {}
    for action in ACTIONS:
        path = year_dir / "ImageSets" / "Action" / f"{action}_{split}.txt"
        if not path.is_file():
            continue
        lines = [(n, line.strip()) for n, line in enumerate(path.read_text().splitlines(), 1)]
        lines = [(n, line) for n, line in lines if line]
        labelled = all(len(line.split()) > 2 and _numbers(line, 2) for _, line in lines)
        for number, line in lines:
            parts = line.rsplit(None, 2 if labelled else 1)
            if len(parts) < 2 or not _numbers(line, len(parts) - 1) or int(parts[1]) < 1:
                raise DataError(
                    f"{path}: line {number} is {line!r}, not '<image id> <person> [label]'; fix it"
                )
            labels = persons.setdefault((parts[0], int(parts[1])), {})
            if labelled:
                labels[action] = int(parts[2])
    return persons


def _numbers(line: str, count: int) -> bool:
    """Whether the last `count` tokens of `line` are integers."""
    return all(p.lstrip("-").isdigit() for p in line.split()[-count:])


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


def action_split(
    year_dir: Path,
    records: Callable[[list[str]], list[ImageRecord]],
    split: str,
    limit: int | None,
    context: float,
) -> SplitData:
    """The person samples of an Action split of the tree at `year_dir`; `records` reads the
    XML records of image ids (the VOC reader's, with its class list and skip_bad)."""
    path = year_dir / "ImageSets" / "Action" / f"{split}.txt"
    if not path.is_file():
        raise DataError(
            f"{path}: missing; --task action needs a VOC 2012 Action tree (ImageSets/Action/<split>.txt)"
        )
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()][:limit]
    if not ids:
        raise DataError(f"{path}: split {split!r} is empty; check the file")
    listed = _action_lists(year_dir, split)
    samples, truth = [], []
    for record in records(ids):
        if record.error is not None:  # its persons are unknown: one placeholder to skip
            samples.append(broken(f"{record.image_id}/0", year_dir / "JPEGImages", record.error))
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
                    record.image_path,
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
    return SplitData(
        ACTIONS, samples, np.array(truth, dtype=np.int8) if labelled else None, boxes=True
    )
