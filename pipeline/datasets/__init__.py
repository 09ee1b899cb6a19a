"""Datasets behind one interface: `open_dataset("KIND:PATH")`, or a path whose kind is detected.

| KIND | what | module |
|---|---|---|
| `voc` | VOC XML: PASCAL VOC, CVAT, LabelImg, Label Studio exports | voc.py, voc_xml.py, voc_action.py |
| `coco` | COCO JSON, one file per split (COCO, Roboflow, Label Studio) | coco.py |
| `labelstudio` | Label Studio's own JSON export (a list of tasks) | labelstudio.py |
| `imagefolder` | `ROOT/<split>/<class>/*.jpg`, image-level labels | imagefolder.py |
| `csv` | `image,labels` CSV, image-level labels | labels_csv.py |
| `images` | image files, folders or globs, no labels | image_files.py |
"""

from __future__ import annotations

from pathlib import Path

from pipeline.datasets.base import IMAGE_SUFFIXES, Dataset, Sample, SplitData
from pipeline.errors import DataError

KINDS = ("voc", "coco", "labelstudio", "imagefolder", "csv", "images")

__all__ = ["KINDS", "Dataset", "Sample", "SplitData", "detect_kind", "open_dataset"]


def open_dataset_of(config) -> Dataset | None:
    """The dataset a stage's config names (its `data`, KIND:PATH, and `image_dir`), or None
    where it names none (a stage that reads the cache alone)."""
    return open_dataset(config.data, image_dir=config.image_dir) if config.data else None


def open_dataset(spec: str, *, image_dir: str | None = None) -> Dataset:
    """The dataset `spec` names: `KIND:PATH`, or a PATH whose kind `detect_kind` finds."""
    kind, sep, path = spec.partition(":")
    if not sep or kind not in KINDS:
        kind, path = detect_kind(spec), spec
    if not path:
        raise DataError(
            f"--data {spec!r}: no path; write KIND:PATH, KIND one of {', '.join(KINDS)}"
        )
    if kind == "voc":
        from pipeline.datasets.voc import VocDataset

        return VocDataset(path)
    if kind == "coco":
        from pipeline.datasets.coco import CocoDataset

        return CocoDataset(path, image_dir)
    if kind == "labelstudio":
        from pipeline.datasets.labelstudio import LabelStudioDataset

        return LabelStudioDataset(path, image_dir)
    if kind == "imagefolder":
        from pipeline.datasets.imagefolder import ImageFolderDataset

        return ImageFolderDataset(path)
    if kind == "csv":
        from pipeline.datasets.labels_csv import LabelsCsvDataset

        return LabelsCsvDataset(path, image_dir)
    from pipeline.datasets.image_files import ImageFilesDataset

    return ImageFilesDataset(path)


def _has_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir() if p.is_file())


def _json_kind(path: Path) -> str:
    """A JSON file's kind: a list (its first character `[`) is a Label Studio export of tasks,
    anything else (a COCO file is an object) coco."""
    try:
        with open(path, "rb") as handle:
            start = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError:
        return "coco"  # its reader says what is wrong with it
    return "labelstudio" if start.startswith(b"[") else "coco"


def detect_kind(spec: str) -> str:
    """The kind of dataset at a path: by suffix for a file or glob (a JSON file by its first
    character: `[` labelstudio, else coco); for a folder, by what it holds (Annotations/ or
    XML files: voc; COCO JSON files: coco; <split>/<class>/ image folders: imagefolder; a
    CSV: csv; images: images)."""
    if set("*?[") & set(spec):
        return "images"
    path = Path(spec).expanduser()
    if path.is_file():
        suffix = path.suffix.lower()
        kind = {".json": "coco", ".csv": "csv"}.get(suffix)
        if kind == "coco":
            kind = _json_kind(path)
        if kind is None and suffix in IMAGE_SUFFIXES:
            kind = "images"
        if kind is None:
            raise DataError(
                f"{path}: cannot tell what dataset this file is; write --data KIND:{spec} with KIND one of {', '.join(KINDS)}"
            )
        return kind
    if not path.is_dir():
        raise DataError(f"{path}: dataset not found; pass an existing --data PATH (or KIND:PATH)")
    found = []
    if (
        (path / "Annotations").is_dir()
        or any(
            (p / "Annotations").is_dir()
            for p in (*path.glob("VOC20*"), *path.glob("VOCdevkit/VOC20*"))
        )
        or next(path.glob("*.xml"), None) is not None
    ):
        found.append("voc")
    if (
        next(path.glob("annotations/*.json"), None)
        or next(path.glob("*/_annotations.coco.json"), None)
        or next(path.glob("*.json"), None)
    ):
        found.append("coco")
    if next(path.glob("*.csv"), None):
        found.append("csv")
    splits = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if not found and any(c.is_dir() and _has_images(c) for s in splits for c in s.iterdir()):
        found.append("imagefolder")
    if not found and (_has_images(path) or any(_has_images(s) for s in splits)):
        found.append("images")
    if len(found) != 1:
        what = f"it could be {' or '.join(found)}" if found else "no dataset found there"
        raise DataError(
            f"{path}: {what}; write --data KIND:{spec} with KIND one of {', '.join(KINDS)}"
        )
    return found[0]
