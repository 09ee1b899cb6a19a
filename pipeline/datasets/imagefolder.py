"""torchvision's ImageFolder layout, `ROOT/<split>/<class>/*.jpg` (nested folders allowed):
image-level labels, one class per image, no boxes. Classes are the sorted class folders of
every split, as ImageFolder sorts them; sample ids `<class>/<file name without suffix>`.
"""

from __future__ import annotations

from functools import cached_property, partial
from pathlib import Path

from pipeline.datasets.base import (
    OBJECT_TASK,
    Dataset,
    SplitData,
    find_images,
    image_sample,
    labels_truth,
)
from pipeline.datasets.paths import contained
from pipeline.errors import DataError


def _class_folders(split_dir: Path) -> list[Path]:
    return sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


class ImageFolderDataset(Dataset):
    kind = "imagefolder"
    has_boxes = False

    def __init__(self, root: str | Path):
        super().__init__(Path(root).expanduser())
        if not self.root.is_dir():
            raise DataError(f"{self.root}: image folder not found; check --data")
        self._splits = {
            p.name: p
            for p in sorted(self.root.iterdir())
            if p.is_dir() and not p.name.startswith(".") and _class_folders(p)
        }
        if not self._splits:
            raise DataError(
                f"{self.root}: no <split>/<class>/ folders of images here; lay it out as "
                "ROOT/train/<class>/*.jpg, ROOT/val/<class>/*.jpg"
            )

    def splits(self) -> tuple[str, ...]:
        return tuple(self._splits)

    @cached_property
    def classes(self) -> tuple[str, ...]:
        names = {p.name for split in self._splits.values() for p in _class_folders(split)}
        return tuple(sorted(names))

    def load(self, split, *, task=OBJECT_TASK, limit=None, skip_bad=False) -> SplitData:
        self.task_classes(task)
        self.check_split(split)
        split_dir = self._splits[split]
        files = [
            (folder.name, path)
            for folder in _class_folders(split_dir)
            for path in find_images(folder)
        ][:limit]
        if not files:
            raise DataError(f"{split_dir}: split {split!r} holds no image; check the folders")
        fix = "copy the image into the folder instead of linking it"  # a link out of it
        inside = partial(contained, roots=self.root, listed_in=split_dir, fix=fix)
        samples = [
            image_sample(
                path.relative_to(split_dir).with_suffix("").as_posix(),
                path,
                skip_bad=skip_bad,
                check=inside,
            )
            for _, path in files
        ]
        truth = labels_truth([{name} for name, _ in files], self.classes)
        return SplitData(self.classes, samples, truth, boxes=False)
