"""COCO JSON, one file per split, as COCO, Roboflow and Label Studio export it (where splits,
images and the class list come from: docs/datasets.md).

A crowd annotation counts as difficult: it labels no patch and, alone in an image, makes its
class difficult there (left out of that class's AP).
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path, PurePosixPath

from pipeline.datasets.base import (
    OBJECT_TASK,
    Dataset,
    SplitData,
    broken,
    check_box,
    labels_truth,
    whole_image,
)
from pipeline.errors import DataError

ROBOFLOW_FILE = "_annotations.coco.json"


def _split_files(root: Path) -> dict[str, Path]:
    """split -> JSON file of a COCO directory: `annotations/[instances_]<split>.json` (COCO),
    `<split>/_annotations.coco.json` (Roboflow) or `<split>.json`, the first found."""
    found: dict[str, Path] = {}
    for path in sorted((root / "annotations").glob("*.json")):
        found.setdefault(path.stem.removeprefix("instances_"), path)
    for path in sorted(root.glob(f"*/{ROBOFLOW_FILE}")):
        found.setdefault(path.parent.name, path)
    for path in sorted(root.glob("*.json")):
        found.setdefault(path.stem, path)
    return found


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc}); fix or re-export the file") from None
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: not valid JSON ({exc.msg}, line {exc.lineno}); re-export it"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path}: no 'images' list; is it a COCO JSON (instances) export?")
    return data


def _field(entry: dict, key: str, path: Path, what: str):
    if key not in entry:
        raise DataError(f"{path}: {what} has no {key!r}; fix or re-export the file")
    return entry[key]


class CocoDataset(Dataset):
    kind = "coco"

    def __init__(self, root: str | Path, image_dir: str | Path | None = None):
        super().__init__(Path(root).expanduser())
        self.image_dir = Path(image_dir).expanduser() if image_dir else None
        if self.root.is_file():
            self.files = {self.root.stem: self.root}
        elif self.root.is_dir():
            self.files = _split_files(self.root)
        else:
            raise DataError(f"{self.root}: COCO JSON or directory not found; check --data")
        if not self.files:
            raise DataError(
                f"{self.root}: no COCO JSON here (annotations/instances_<split>.json, "
                f"<split>/{ROBOFLOW_FILE} or <split>.json); check --data"
            )
        self._data: dict[str, dict] = {}

    def data(self, split: str) -> dict:
        if split not in self._data:
            self._data[split] = _read_json(self.files[split])
        return self._data[split]

    def splits(self) -> tuple[str, ...]:
        return tuple(self.files)

    @cached_property
    def _categories(self) -> dict[int, str]:
        """category id -> name over every split, in id order; a category that only groups
        others (Roboflow's first) and has no annotation anywhere is left out."""
        names: dict[int, str] = {}
        parents, used = set(), set()
        for split, path in self.files.items():
            data = self.data(split)
            for entry in data.get("categories", []):
                cid = int(_field(entry, "id", path, "a category"))
                name = str(_field(entry, "name", path, f"category {cid}")).strip()
                if names.setdefault(cid, name) != name:
                    raise DataError(
                        f"{path}: category {cid} is {name!r} here but {names[cid]!r} in another "
                        "split; export every split with the same categories"
                    )
                parent = entry.get("supercategory")
                if parent and parent != name:
                    parents.add(parent)
            used.update(int(a.get("category_id", -1)) for a in data.get("annotations", []))
        kept = {cid: n for cid, n in sorted(names.items()) if cid in used or n not in parents}
        if not kept:
            raise DataError(f"{self.root}: no category in its JSON files; re-export with labels")
        duplicated = sorted({n for n in kept.values() if list(kept.values()).count(n) > 1})
        if duplicated:
            raise DataError(
                f"{self.root}: category names {', '.join(duplicated)} have several ids; merge them"
            )
        return kept

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self._categories.values())

    @cached_property
    def _class_index(self) -> dict[str, int]:
        return {name: c for c, name in enumerate(self.classes)}

    def _images_folder(self, split: str, first: str) -> Path:
        """The first of --image-dir, the JSON's folder, `<root>/<split>/`, `<root>/images/<split>/`,
        `<root>/images/`, `<root>` that holds the split's first image (else the first)."""
        path = self.files[split]
        base = self.root if self.root.is_dir() else path.parent
        folders = [self.image_dir] if self.image_dir else []
        folders += [path.parent, base / split, base / "images" / split, base / "images", base]
        return next((f for f in folders if (f / first).is_file()), folders[0])

    def load(self, split, *, task=OBJECT_TASK, limit=None, skip_bad=False) -> SplitData:
        self.task_classes(task)
        self.check_split(split)
        path, data = self.files[split], self.data(split)
        images = data["images"][:limit]
        if not images:
            raise DataError(f"{path}: split {split!r} has no image; check the export")
        names = [
            str(_field(im, "file_name", path, f"image {im.get('id')}")).replace("\\", "/")
            for im in images
        ]
        folder = self._images_folder(split, names[0])
        stems = [str(PurePosixPath(n).with_suffix("")) for n in names]
        ids = stems if len(set(stems)) == len(stems) else names
        if len(set(ids)) < len(ids):
            raise DataError(f"{path}: file names repeat among its images; make them unique")
        by_image: dict[int, list[dict]] = {}
        for entry in data.get("annotations", []):
            by_image.setdefault(entry.get("image_id"), []).append(entry)
        samples, present, crowded = [], [], []
        for image, sample_id, name in zip(images, ids, names, strict=True):
            file = folder / name
            try:
                sample, labels, crowd = self._sample(image, sample_id, file, by_image, path)
            except DataError as exc:
                if not skip_bad:
                    raise
                sample, labels, crowd = broken(sample_id, file, str(exc)), set(), set()
            samples.append(sample)
            present.append(labels)
            crowded.append(crowd)
        labelled = bool(data.get("annotations"))
        truth = labels_truth(present, self.classes, crowded) if labelled else None
        return SplitData(self.classes, samples, truth, boxes=True)

    def _sample(self, image: dict, sample_id: str, file: Path, by_image: dict, path: Path):
        """One image's sample, the class names it holds, and those it holds only as crowds."""
        image_id = _field(image, "id", path, f"image {sample_id}")
        width = int(_field(image, "width", path, f"image {image_id}"))
        height = int(_field(image, "height", path, f"image {image_id}"))
        if width <= 0 or height <= 0:
            raise DataError(f"{path}: image {image_id} is {width}x{height}; fix its size")
        if not file.is_file():
            raise DataError(
                f"{file}: listed in {path.name} but missing; pass --image-dir DIR where the "
                "images are, or restore the file"
            )
        index = self._class_index
        objects, labels, crowd = [], set(), set()
        for entry in by_image.get(image_id, []):
            cid = entry.get("category_id")
            if cid not in self._categories:
                raise DataError(
                    f"{path}: annotation {entry.get('id')} has category {cid!r}, not among "
                    "the categories; fix the export"
                )
            name = self._categories[cid]
            bbox = _field(entry, "bbox", path, f"annotation {entry.get('id')}")
            if not (isinstance(bbox, list) and len(bbox) == 4):
                raise DataError(
                    f"{path}: annotation {entry.get('id')} bbox {bbox!r} is not [x, y, w, h]"
                )
            x, y, w, h = (float(v) for v in bbox)
            where = f"{path}: annotation {entry.get('id')} of {file.name}"
            box = check_box((x, y, x + w, y + h), width, height, where, repr(name))
            is_crowd = bool(entry.get("iscrowd", 0))
            objects.append((index[name], box, is_crowd))
            (crowd if is_crowd else labels).add(name)
        return whole_image(sample_id, file, width, height, objects), labels, crowd
