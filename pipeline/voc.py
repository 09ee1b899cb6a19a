"""Reading a PASCAL VOC tree: split lists, XML annotations and image-level labels.

Works on the layout torchvision's VOCDetection downloads (`<root>/VOCdevkit/VOC2007/...`),
on its year directory directly, and on trees that have only Annotations/ + JPEGImages/.
Boxes come out 0-based with exclusive ends (pixel edges): VOC's 1-based inclusive
`xmin..xmax` becomes `xmin - 1 .. xmax`, so that box areas are the pixel counts.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.errors import DataError

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
SPLITS = ("train", "val", "trainval", "test")
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

    def boxes(self) -> np.ndarray:
        """[M, 4] float32 boxes of all objects."""
        return np.array([o.box for o in self.objects], dtype=np.float32).reshape(-1, 4)


def resolve_year_dir(root: str | Path) -> Path:
    """Find the VOC year directory (the one holding Annotations/) from what a user passes."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: VOC root not found; pass --voc-root DIR (see data/README.md)")
    if (root / "Annotations").is_dir():
        return root
    for parent in (root, root / "VOCdevkit"):
        years = sorted(p for p in parent.glob("VOC20*") if (p / "Annotations").is_dir())
        if len(years) == 1:
            return years[0]
        if len(years) > 1:
            names = ", ".join(p.name for p in years)
            raise DataError(f"{parent}: holds several VOC years ({names}); pass one of them")
    raise DataError(
        f"{root}: not a VOC tree (no Annotations/ here, nor VOCdevkit/VOC20*/Annotations/); "
        "point --voc-root at the VOC2007 directory"
    )


def read_split(year_dir: Path, split: str) -> list[str]:
    """Image ids of a split; all annotated ids where the tree has no ImageSets/Main."""
    main = year_dir / "ImageSets" / "Main"
    if not main.is_dir():
        ids = sorted(p.stem for p in (year_dir / "Annotations").glob("*.xml"))
    else:
        path = main / f"{split}.txt"
        if not path.is_file():
            known = sorted(p.stem for p in main.glob("*.txt") if "_" not in p.stem)
            raise DataError(
                f"{path}: unknown split {split!r}; this tree has {', '.join(known) or 'none'}"
            )
        ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DataError(f"{year_dir}: split {split!r} is empty; check ImageSets/Main/{split}.txt")
    return ids


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


def parse_annotation(path: Path, known_classes: tuple[str, ...] = VOC_CLASSES) -> ImageRecord:
    """One VOC XML file -> ImageRecord, with every box checked against the image size."""
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
        if name not in known_classes:
            raise DataError(
                f"{path}: unknown class {name!r}; VOC classes are {', '.join(known_classes)}"
            )
        bnd = obj.find("bndbox")
        if bnd is None:
            raise DataError(f"{path}: object {name!r} has no <bndbox>; fix the file")
        x0, y0 = _number(bnd, "xmin", path) - 1, _number(bnd, "ymin", path) - 1
        x1, y1 = _number(bnd, "xmax", path), _number(bnd, "ymax", path)
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise DataError(
                f"{path}: box of {name!r} ({x0 + 1:g},{y0 + 1:g},{x1:g},{y1:g}) is empty or "
                f"outside the {width}x{height} image; fix its <bndbox>"
            )
        difficult = obj.find("difficult")
        is_difficult = difficult is not None and (difficult.text or "0").strip() == "1"
        objects.append(VocObject(name, (x0, y0, x1, y1), is_difficult, _actions(obj, path)))
    return ImageRecord(path.stem, width, height, tuple(objects))


def _unannotated(image_id: str, image: Path) -> ImageRecord:
    """The record of an image without XML (VOC 2012 test): its size from the JPEG header."""
    try:
        with Image.open(image) as handle:
            width, height = handle.size
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"{image}: cannot read ({exc}); replace the file or drop its id") from None
    return ImageRecord(image_id, width, height, ())


def _record(year_dir: Path, image_id: str, xml: Path | None) -> ImageRecord:
    image = year_dir / "JPEGImages" / f"{image_id}.jpg"
    if not image.is_file():
        raise DataError(f"{image}: listed in the split but missing; restore it or drop the id")
    return _unannotated(image_id, image) if xml is None else parse_annotation(xml)


def load_records(year_dir: Path, ids: list[str], *, skip_bad: bool = False) -> list[ImageRecord]:
    """Parse every annotation of a split up front, so bad files fail before any compute.

    A split whose images have no XML at all is an unlabelled one (VOC 2012 test); an XML
    missing while other images of the split have boxes is an error. With `skip_bad`, an
    image whose files are bad gets a record carrying the error instead, in its place (so
    that shard boundaries stay those of a clean run), for extract to skip and log.
    """
    records, missing = [], []
    for image_id in ids:
        xml = year_dir / "Annotations" / f"{image_id}.xml"
        annotated = xml.is_file()
        try:
            records.append(_record(year_dir, image_id, xml if annotated else None))
        except DataError as exc:
            if not skip_bad:
                raise
            records.append(ImageRecord(image_id, 0, 0, (), error=str(exc)))
            continue
        if not annotated:
            missing.append((len(records) - 1, xml))
    if len(missing) < len(ids):
        for i, xml in missing:
            error = (
                f"{xml}: annotation missing ({len(missing)} of {len(ids)} in this split); "
                "restore it or drop the id"
            )
            if not skip_bad:
                raise DataError(error)
            records[i] = ImageRecord(ids[i], 0, 0, (), error=error)
    return records


def class_label(objects: Iterable[VocObject], name: str) -> int:
    """VOC image-level label of one class: 1 present, 0 only difficult objects, -1 absent."""
    flags = [o.difficult for o in objects if o.name == name]
    if not flags:
        return -1
    return 0 if all(flags) else 1


def _class_file_labels(path: Path) -> dict[str, int]:
    """id -> label of one ImageSets/Main/<class>_<split>.txt; {} for an id-only list (a
    split whose labels are withheld, as VOC 2012 test)."""
    if not path.is_file():
        return {}
    pairs = (line.split() for line in path.read_text().splitlines())
    return {parts[0]: int(parts[1]) for parts in pairs if len(parts) == 2}


def image_labels(
    year_dir: Path, split: str, classes: tuple[str, ...], records: list[ImageRecord]
) -> np.ndarray | None:
    """[n_images, n_classes] int8 image truth (1 present, -1 absent, 0 difficult only), or
    None for a split without labels (no labelled class file and no object in any XML).

    Taken from ImageSets/Main/<class>_<split>.txt where present (as the VOC devkit does,
    and the only source for classes without boxes), else derived from the XML objects.
    """
    from_files = [
        _class_file_labels(year_dir / "ImageSets" / "Main" / f"{name}_{split}.txt")
        for name in classes
    ]
    if not any(from_files) and not any(r.objects for r in records):
        return None
    truth = np.full((len(records), len(classes)), -1, dtype=np.int8)
    for c, (name, labels) in enumerate(zip(classes, from_files, strict=True)):
        if labels:
            truth[:, c] = [labels.get(r.image_id, -1) for r in records]
        else:
            truth[:, c] = [class_label(r.objects, name) for r in records]
    return truth
