"""One PASCAL VOC XML file read into a record: its size, objects, boxes and action flags.

What the VOC reader (voc.py), the Action task (voc_action.py) and the writer (voc_writer.py)
share. Boxes come out 0-based with exclusive ends (pixel edges): VOC's 1-based inclusive
`xmin..xmax` becomes `xmin - 1 .. xmax`, so that box areas are pixel counts.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.datasets.base import check_box
from pipeline.errors import DataError

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
# VOC 2012 Action, in the devkit's order
ACTIONS = (
    "jumping", "phoning", "playinginstrument", "reading", "ridingbike", "ridinghorse",
    "running", "takingphoto", "usingcomputer", "walking", "other",
)  # fmt: skip


@dataclass(frozen=True)
class VocObject:
    name: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1; 0-based, ends exclusive
    difficult: bool = False
    # VOC 2012 Action: the names of the actions flagged 1 in <actions>; None without <actions>
    actions: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ImageRecord:
    image_id: str
    width: int
    height: int
    objects: tuple[VocObject, ...]
    # why the image cannot be used (load_records with skip_bad): it is skipped at extract
    error: str | None = None
    filename: str | None = None  # the XML's <filename>: the image file it annotates
    image_path: Path | None = None  # where that file is (load_records)

    def boxes(self) -> np.ndarray:
        """[M, 4] float32 boxes of all objects."""
        return np.array([o.box for o in self.objects], dtype=np.float32).reshape(-1, 4)


def _text(node: ET.Element, tag: str, path: Path) -> str:
    child = node.find(tag)
    if child is None or child.text is None:
        raise DataError(f"{path}: missing <{tag}>; fix or remove this annotation file")
    return child.text.strip()


def _number(node: ET.Element, tag: str, path: Path) -> float:
    text = _text(node, tag, path)
    try:
        return float(text)
    except ValueError:
        raise DataError(f"{path}: <{tag}> is {text!r}, not a number; fix the file") from None


def _actions(obj: ET.Element, path: Path) -> tuple[str, ...] | None:
    """Flagged actions of a VOC 2012 Action person (flags not listed count as 0)."""
    node = obj.find("actions")
    if node is None:
        return None
    flagged = []
    for flag in node:
        value = (flag.text or "").strip()
        if value not in ("0", "1"):
            raise DataError(f"{path}: action <{flag.tag}> is {value!r}, not 0 or 1; fix the file")
        if value == "1":
            flagged.append(flag.tag)
    return tuple(flagged)


def _box(bnd: ET.Element, name: str, width: int, height: int, path: Path):
    """VOC's 1-based inclusive corners -> 0-based pixel edges, checked and clipped by
    `check_box`; its message quotes the corners as the XML has them."""
    corners = [_number(bnd, tag, path) for tag in ("xmin", "ymin", "xmax", "ymax")]
    xmin, ymin, xmax, ymax = corners
    what = f"{name!r} ({','.join(f'{v:g}' for v in corners)})"
    box = (xmin - 1, ymin - 1, xmax, ymax)
    return check_box(box, width, height, str(path), what, fix="fix its <bndbox>")


def parse_annotation(
    path: Path, known_classes: tuple[str, ...] | None = VOC_CLASSES
) -> ImageRecord:
    """One VOC XML file -> ImageRecord, with every box checked against the image size.
    `known_classes` None accepts any object name."""
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise DataError(f"{path}: annotation missing; restore it or drop the id") from None
    except ET.ParseError as exc:
        raise DataError(f"{path}: malformed XML ({exc}); fix or re-download the file") from None
    size = root.find("size")
    if size is None:
        raise DataError(f"{path}: missing <size>; fix the annotation file")
    width, height = int(_number(size, "width", path)), int(_number(size, "height", path))
    if width <= 0 or height <= 0:
        raise DataError(f"{path}: image size {width}x{height} is not positive; fix <size>")
    objects = []
    for obj in root.iter("object"):
        name = _text(obj, "name", path)
        if known_classes is not None and name not in known_classes:
            raise DataError(
                f"{path}: unknown class {name!r}; the classes of this tree are {', '.join(known_classes)}"
            )
        bnd = obj.find("bndbox")
        if bnd is None:
            raise DataError(f"{path}: object {name!r} has no <bndbox>; fix the file")
        difficult = obj.find("difficult")
        is_difficult = difficult is not None and (difficult.text or "0").strip() == "1"
        box = _box(bnd, name, width, height, path)
        objects.append(VocObject(name, box, is_difficult, _actions(obj, path)))
    filename = (root.findtext("filename") or "").strip() or None
    return ImageRecord(path.stem, width, height, tuple(objects), filename=filename)


def object_names(path: Path) -> set[str]:
    """The object names of one XML file; empty when it cannot be parsed (the split that
    holds it reports the error when it is loaded)."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return set()
    return {(o.findtext("name") or "").strip() for o in root.iter("object")} - {""}


def class_label(objects: Iterable[VocObject], name: str) -> int:
    """VOC image-level label of one class: 1 present, 0 only difficult objects, -1 absent."""
    flags = [o.difficult for o in objects if o.name == name]
    if not flags:
        return -1
    return 0 if all(flags) else 1
