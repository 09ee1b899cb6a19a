"""A CSV of image-level labels, no boxes: `image,labels` (labels `;`-separated, may be empty),
images relative to the CSV's folder or --image-dir. The split is a `split` column, else the
file's name (a folder of `<split>.csv` is several splits); classes are all labels, sorted.
"""

from __future__ import annotations

import csv
from functools import cached_property, partial
from pathlib import Path, PurePosixPath

from pipeline.datasets.base import (
    OBJECT_TASK,
    Dataset,
    SplitData,
    image_sample,
    labels_truth,
)
from pipeline.datasets.paths import contained
from pipeline.errors import DataError

COLUMNS = ("image", "labels")


def _rows(path: Path) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(
                    f"{path}: no column {', '.join(missing)}; write a header image,labels "
                    "(labels separated by ';')"
                )
            return list(reader)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc}); save it as UTF-8 CSV") from None


def _labels(text: str | None) -> set[str]:
    return {name.strip() for name in (text or "").split(";") if name.strip()}


class LabelsCsvDataset(Dataset):
    kind = "csv"
    has_boxes = False

    def __init__(self, root: str | Path, image_dir: str | Path | None = None):
        super().__init__(Path(root).expanduser())
        if self.root.is_dir():
            files = sorted(self.root.glob("*.csv"))
        elif self.root.is_file():
            files = [self.root]
        else:
            raise DataError(f"{self.root}: labels CSV not found; check --data")
        if not files:
            raise DataError(f"{self.root}: no .csv file here; check --data")
        self._splits: dict[str, list[tuple[Path, dict]]] = {}
        for path in files:
            for row in _rows(path):
                split = (row.get("split") or "").strip() or path.stem
                self._splits.setdefault(split, []).append((path, row))
        self.image_dir = Path(image_dir).expanduser() if image_dir else None

    def splits(self) -> tuple[str, ...]:
        return tuple(self._splits)

    @cached_property
    def classes(self) -> tuple[str, ...]:
        names = set().union(
            *(_labels(row["labels"]) for rows in self._splits.values() for _, row in rows)
        )
        if not names:
            raise DataError(f"{self.root}: no label in any row; fill the labels column")
        return tuple(sorted(names))

    def load(self, split, *, task=OBJECT_TASK, limit=None, skip_bad=False) -> SplitData:
        self.task_classes(task)
        self.check_split(split)
        rows = self._splits[split][:limit]
        samples, labels, seen = [], [], set()
        for path, row in rows:
            name = (row["image"] or "").strip().replace("\\", "/")
            if not name:
                raise DataError(f"{path}: a row has an empty image column; fill or remove it")
            if PurePosixPath(name).name in ("", ".", ".."):
                raise DataError(
                    f"{path}: image {name!r} names a folder, not an image file; fix its image column"
                )
            sample_id = str(PurePosixPath(name).with_suffix(""))
            if sample_id in seen:
                raise DataError(
                    f"{path}: image {name!r} is listed twice in split {split!r}; merge its rows"
                )
            seen.add(sample_id)
            root = self.image_dir or path.parent
            fix = f"keep the images under {root} and fix its image column"
            inside = partial(contained, roots=root, listed_in=path, fix=fix)
            samples.append(image_sample(sample_id, root / name, skip_bad=skip_bad, check=inside))
            labels.append(_labels(row["labels"]))
        return SplitData(self.classes, samples, labels_truth(labels, self.classes), boxes=False)
