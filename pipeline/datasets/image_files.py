"""Plain image files with no labels, for `pipeline predict` and unlabelled scoring: a folder
(searched recursively), a glob, or a list. Any split name loads them all; sample ids are the
paths relative to the folder given (or the files' common folder), without their suffix.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from pipeline.datasets.base import (
    IMAGE_SUFFIXES,
    OBJECT_TASK,
    Dataset,
    Sample,
    SplitData,
    broken,
    find_images,
    image_sample,
)
from pipeline.errors import DataError

MAGIC = set("*?[")


def _expand(source: str) -> tuple[Path, list[Path]]:
    """(base folder, image files) of one folder, glob or file; `~` is the home folder, also
    in a glob the shell left alone (quoted)."""
    source = os.path.expanduser(source)
    if MAGIC & set(source):
        prefix = Path(source.split("*")[0].split("?")[0].split("[")[0])
        base = prefix if source.endswith(os.sep) or prefix.is_dir() else prefix.parent
        files = sorted(
            Path(p) for p in glob.glob(source, recursive=True)
            if Path(p).suffix.lower() in IMAGE_SUFFIXES and Path(p).is_file()
        )  # fmt: skip
        return base, files
    path = Path(source)
    if path.is_dir():
        return path, find_images(path)
    if path.is_file() or path.suffix.lower() in IMAGE_SUFFIXES:
        return path.parent, [path]  # a missing file is reported when it is loaded
    raise DataError(f"{path}: no such file or folder; pass image files, folders or globs")


class ImageFilesDataset(Dataset):
    kind = "images"
    has_boxes = False

    def __init__(self, sources: str | Path | list, *, refuse=None):
        """`refuse(sample)`: why a readable photo is not to be used (its work over a limit),
        or None; such a photo is a bad one, skipped or raised as an unreadable one is."""
        self.refuse = refuse
        sources = [str(s) for s in (sources if isinstance(sources, list | tuple) else [sources])]
        if not sources:
            raise DataError("no images given; pass image files, folders or globs")
        expanded = [_expand(s) for s in sources]
        base = Path(os.path.commonpath([os.path.abspath(b) for b, _ in expanded]))
        super().__init__(expanded[0][0] if len(expanded) == 1 else base)
        self.files = list(dict.fromkeys(f for _, files in expanded for f in files))
        if not self.files:
            raise DataError(
                f"{', '.join(sources)}: no image file found (looked for {', '.join(IMAGE_SUFFIXES)})"
            )
        relative = [Path(os.path.abspath(f)).relative_to(base) for f in self.files]
        stems = [r.with_suffix("").as_posix() for r in relative]
        self.ids = stems if len(set(stems)) == len(stems) else [r.as_posix() for r in relative]

    @property
    def classes(self) -> tuple[str, ...]:
        return ()

    def splits(self) -> tuple[str, ...]:
        return ()

    def check_split(self, split: str) -> None:
        """Any name: the images are the split."""

    def load(self, split="images", *, task=OBJECT_TASK, limit=None, skip_bad=False) -> SplitData:
        self.task_classes(task)
        pairs = list(zip(self.ids, self.files, strict=True))[:limit]
        samples = [self._sample(i, path, skip_bad) for i, path in pairs]
        return SplitData((), samples, None, boxes=False)

    def _sample(self, sample_id: str, path: Path, skip_bad: bool) -> Sample:
        sample = image_sample(sample_id, path, skip_bad=skip_bad)
        why = self.refuse(sample) if self.refuse and sample.error is None else None
        if why is None:
            return sample
        if not skip_bad:
            raise DataError(why)
        return broken(sample_id, path, why)
