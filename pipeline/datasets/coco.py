"""COCO JSON, one file per split, as COCO, Roboflow and Label Studio export it (where splits,
images and the class list come from: docs/datasets.md).

A crowd annotation counts as difficult: it labels no patch and, alone in an image, makes its
class difficult there (left out of that class's AP). Every field the reader uses is checked
for its type when the file is read (`_checked`), and an annotation must name an image of its
file: a bad export is one line naming the entry, never a traceback or a silent negative.
"""

from __future__ import annotations

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
from pipeline.datasets.json_fields import KINDS, read_json, short, typed
from pipeline.datasets.paths import contained
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
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path}: no 'images' list; is it a COCO JSON (instances) export?")
    return _checked(data, path)


class _Entries:
    """The entries of one list of a COCO file, each checked to be an object, and their fields
    read with their types checked: one line naming the file, the entry and the fix."""

    def __init__(self, data: dict, key: str, path: Path):
        self.key, self.path = key, path
        entries = [] if data.get(key) is None else data[key]
        if not isinstance(entries, list):
            self.fail(f"{key!r} is {short(entries)}, not a list")
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                self.fail(f"{key}[{i}] is {short(entry)}, not an object")
        self.entries = entries

    def fail(self, problem: str, fix: str = "fix or re-export the file"):
        raise DataError(f"{self.path}: {problem}; {fix}")

    def name(self, i: int) -> str:
        entry_id = self.entries[i].get("id")
        return f"{self.key}[{i}]" + ("" if entry_id is None else f" (id {entry_id!r})")

    def field(self, i: int, key: str, kind: str):
        """Field `key` of entry i as `kind`: "id" (an integer or a string, as an image id may
        be), "whole" (an integer: 500, 500.0, "500"), "name" (a non-empty string or number),
        "box" (four finite numbers). The value, typed; DataError when it is none of these."""
        if key not in self.entries[i]:
            self.fail(f"{self.name(i)} has no {key!r}")
        value = self.entries[i][key]
        checked = typed(value, kind)
        if checked is None:
            self.fail(f"{self.name(i)} {key!r} is {short(value)}, not {KINDS[kind]}")
        return checked


def _checked(data: dict, path: Path) -> dict:
    """The file's images, annotations and categories with every field the reader uses
    checked and typed (ids, sizes, names, boxes); an annotation must name an image of the
    file by its id, of the same type (a string id "1" is not the image_id 1)."""
    images = _Entries(data, "images", path)
    ids: dict = {}
    checked_images = []
    for i, image in enumerate(images.entries):
        image_id = images.field(i, "id", "id")
        if image_id in ids:
            images.fail(
                f"{images.name(i)} repeats the id of images[{ids[image_id]}]",
                "give each image its own id",
            )
        ids[image_id] = i
        name = image.get("file_name")
        if not isinstance(name, str) or not PurePosixPath(name.replace("\\", "/")).name:
            images.fail(f"{images.name(i)} 'file_name' is {short(name)}, not an image file name")
        width, height = (images.field(i, key, "whole") for key in ("width", "height"))
        checked_images.append(dict(image, id=image_id, width=width, height=height))
    annotations = _Entries(data, "annotations", path)
    checked_annotations = []
    for i, entry in enumerate(annotations.entries):
        image_id = annotations.field(i, "image_id", "id")
        if image_id not in ids:
            alike = next((k for k in ids if str(k) == str(image_id)), None)
            kind = "a string" if isinstance(alike, str) else "a number"
            hint = "" if alike is None else f" (an image has the id {alike!r}, {kind})"
            annotations.fail(
                f"{annotations.name(i)} image_id {image_id!r} matches no image{hint}",
                "write each image_id as the id of its image, the same value of the same type",
            )
        checked_annotations.append(
            dict(
                entry,
                image_id=image_id,
                category_id=annotations.field(i, "category_id", "whole"),
                bbox=annotations.field(i, "bbox", "box"),
            )
        )
    categories = _Entries(data, "categories", path)
    checked_categories = [
        dict(entry, id=categories.field(i, "id", "whole"), name=categories.field(i, "name", "name"))
        for i, entry in enumerate(categories.entries)
    ]
    return dict(
        data,
        images=checked_images,
        annotations=checked_annotations,
        categories=checked_categories,
    )


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
            for entry in data["categories"]:
                cid, name = entry["id"], entry["name"]
                if names.setdefault(cid, name) != name:
                    raise DataError(
                        f"{path}: category {cid} is {name!r} here but {names[cid]!r} in another "
                        "split; export every split with the same categories"
                    )
                parent = entry.get("supercategory")
                if isinstance(parent, str) and parent and parent != name:
                    parents.add(parent)
            used.update(a["category_id"] for a in data["annotations"])
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

    def _base(self, split: str) -> Path:
        """The dataset's folder: the root given, or the folder of the JSON file given."""
        return self.root if self.root.is_dir() else self.files[split].parent

    def _images_folder(self, split: str, first: str) -> Path:
        """The first of --image-dir, the JSON's folder, `<root>/<split>/`, `<root>/images/<split>/`,
        `<root>/images/`, `<root>` that holds the split's first image (else the first)."""
        path, base = self.files[split], self._base(split)
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
        names = [image["file_name"].replace("\\", "/") for image in images]
        folder = self._images_folder(split, names[0])
        roots = [self.image_dir, self._base(split)] if self.image_dir else [self._base(split)]
        fix = "keep the images under the dataset (or --image-dir) and fix its file_name"
        stems = [str(PurePosixPath(n).with_suffix("")) for n in names]
        ids = stems if len(set(stems)) == len(stems) else names
        if len(set(ids)) < len(ids):
            raise DataError(f"{path}: file names repeat among its images; make them unique")
        by_image: dict[int, list[dict]] = {}
        for entry in data["annotations"]:
            by_image.setdefault(entry["image_id"], []).append(entry)
        samples, present, crowded = [], [], []
        for image, sample_id, name in zip(images, ids, names, strict=True):
            file = folder / name
            try:
                contained(file, roots, path, fix)
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
        image_id, width, height = image["id"], image["width"], image["height"]
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
            cid = entry["category_id"]
            if cid not in self._categories:
                raise DataError(
                    f"{path}: annotation {entry.get('id')} has category {cid!r}, not among "
                    "the categories; fix the export"
                )
            name = self._categories[cid]
            x, y, w, h = entry["bbox"]
            where = f"{path}: annotation {entry.get('id')} of {file.name}"
            box = check_box((x, y, x + w, y + h), width, height, where, repr(name))
            is_crowd = bool(entry.get("iscrowd", 0))
            objects.append((index[name], box, is_crowd))
            (crowd if is_crowd else labels).add(name)
        return whole_image(sample_id, file, width, height, objects), labels, crowd
