"""PASCAL VOC XML trees: the genuine VOC, and exports of CVAT, LabelImg and Label Studio.

Works on the layout torchvision's VOCDetection downloads (`<root>/VOCdevkit/VOC2007/...`),
on its year directory directly, on trees that have only Annotations/ + JPEGImages/ (or
images/), and on a flat folder of XML files beside their images (LabelImg). Boxes come out
0-based with exclusive ends (pixel edges): VOC's 1-based inclusive `xmin..xmax` becomes
`xmin - 1 .. xmax`, so that box areas are the pixel counts; coordinates may be floats
("12.0", as LabelImg writes them), and a corner up to a pixel outside the image is clipped
(CVAT writes 0-based corners). The image is the file the XML's `<filename>` names.

The class list is fixed per tree: `labelmap.txt` (CVAT) or `classes.txt` where present, else
the classes of the per-class files `ImageSets/Main/<class>_<split>.txt`, else the sorted union
of the object names of every XML of the tree. Where those are all VOC classes, the list is the
20 VOC classes in VOC order, so a genuine VOC tree (or a subset of it) keeps the class columns
and the cache digests it always had.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from pipeline.config import TaskConfig
from pipeline.datasets.base import (
    BOX_SLACK,
    OBJECT_TASK,
    Dataset,
    SplitData,
    broken,
    image_size,
    whole_image,
)
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
CLASS_LIST_FILES = ("labelmap.txt", "classes.txt")


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


def resolve_year_dir(root: str | Path) -> Path:
    """Find the VOC year directory (the one holding Annotations/) from what a user passes;
    a folder of XML files (LabelImg's layout) is its own year directory."""
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
    if next(root.glob("*.xml"), None) is not None:
        return root
    raise DataError(
        f"{root}: not a VOC tree (no Annotations/ here, nor VOCdevkit/VOC20*/Annotations/); "
        "point --voc-root at the VOC2007 directory"
    )


def annotations_dir(year_dir: Path) -> Path:
    return year_dir / "Annotations" if (year_dir / "Annotations").is_dir() else year_dir


def read_split(year_dir: Path, split: str) -> list[str]:
    """Image ids of a split; all annotated ids where the tree has no ImageSets/Main."""
    main = year_dir / "ImageSets" / "Main"
    if not main.is_dir():
        ids = sorted(p.stem for p in annotations_dir(year_dir).glob("*.xml"))
    else:
        path = main / f"{split}.txt"
        if not path.is_file():
            known = list_splits(year_dir)
            raise DataError(
                f"{path}: unknown split {split!r}; this tree has {', '.join(known) or 'none'}"
            )
        ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DataError(f"{year_dir}: split {split!r} is empty; check ImageSets/Main/{split}.txt")
    return ids


def list_splits(year_dir: Path) -> list[str]:
    """The split files of ImageSets/Main (not the per-class `<class>_<split>.txt` files)."""
    main = year_dir / "ImageSets" / "Main"
    return sorted(p.stem for p in main.glob("*.txt") if "_" not in p.stem)


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
    """VOC's 1-based inclusive corners -> 0-based pixel edges, clipped within BOX_SLACK."""
    x0, y0 = _number(bnd, "xmin", path) - 1, _number(bnd, "ymin", path) - 1
    x1, y1 = _number(bnd, "xmax", path), _number(bnd, "ymax", path)
    if not (
        -BOX_SLACK <= x0 < x1 <= width + BOX_SLACK and -BOX_SLACK <= y0 < y1 <= height + BOX_SLACK
    ):
        raise DataError(
            f"{path}: box of {name!r} ({x0 + 1:g},{y0 + 1:g},{x1:g},{y1:g}) is empty or "
            f"outside the {width}x{height} image; fix its <bndbox>"
        )
    box = (max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height)))
    if box[0] >= box[2] or box[1] >= box[3]:
        raise DataError(f"{path}: box of {name!r} is empty inside the image; fix its <bndbox>")
    return box


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


def image_path(year_dir: Path, image_id: str, filename: str | None) -> Path:
    """The image file of an id: the XML's <filename> in JPEGImages/, images/ (Label Studio),
    beside the XML (LabelImg) or under the tree, else JPEGImages/<id>.jpg|.jpeg|.png. When
    none exists, the first candidate (for the message naming it)."""
    names = [filename] if filename else []
    names += [f"{image_id}{suffix}" for suffix in (".jpg", ".jpeg", ".png")]
    folders = (year_dir / "JPEGImages", year_dir / "images", annotations_dir(year_dir), year_dir)
    candidates = [folder / name for name in names for folder in folders]
    return next((p for p in candidates if p.is_file()), candidates[0])


def _record(year_dir: Path, image_id: str, xml: Path | None, classes) -> ImageRecord:
    if xml is None:  # an image without XML (VOC 2012 test): its size from the image header
        path = image_path(year_dir, image_id, None)
        if not path.is_file():
            raise DataError(f"{path}: listed in the split but missing; restore it or drop the id")
        width, height = image_size(path)
        return ImageRecord(image_id, width, height, (), image_path=path)
    record = parse_annotation(xml, classes)
    path = image_path(year_dir, image_id, record.filename)
    if not path.is_file():
        raise DataError(f"{path}: listed in the split but missing; restore it or drop the id")
    return ImageRecord(
        record.image_id, record.width, record.height, record.objects,
        filename=record.filename, image_path=path,
    )  # fmt: skip


def load_records(
    year_dir: Path,
    ids: list[str],
    *,
    skip_bad: bool = False,
    classes: tuple[str, ...] | None = VOC_CLASSES,
) -> list[ImageRecord]:
    """Parse every annotation of a split up front, so bad files fail before any compute.

    A split whose images have no XML at all is an unlabelled one (VOC 2012 test); an XML
    missing while other images of the split have boxes is an error. With `skip_bad`, an
    image whose files are bad gets a record carrying the error instead, in its place (so
    that shard boundaries stay those of a clean run), for extract to skip and log.
    """
    folder = annotations_dir(year_dir)
    xmls = [folder / f"{image_id}.xml" for image_id in ids]
    annotated = [xml.is_file() for xml in xmls]
    partly = 0 < sum(annotated) < len(ids)  # some XML missing among annotated images
    records = []
    for image_id, xml, has_xml in zip(ids, xmls, annotated, strict=True):
        try:
            if partly and not has_xml:
                raise DataError(
                    f"{xml}: annotation missing ({len(ids) - sum(annotated)} of {len(ids)} in "
                    "this split); restore it or drop the id"
                )
            records.append(_record(year_dir, image_id, xml if has_xml else None, classes))
        except DataError as exc:
            if not skip_bad:
                raise
            records.append(ImageRecord(image_id, 0, 0, (), error=str(exc)))
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


def _declared_classes(year_dir: Path) -> tuple[list[str], str] | None:
    """The classes a tree declares, and where: labelmap.txt (CVAT: `name:color:parts:actions`
    lines, the segmentation `background` dropped), classes.txt (a name per line), or the
    per-class files of ImageSets/Main."""
    for name in CLASS_LIST_FILES:
        path = year_dir / name
        if path.is_file():
            lines = [line.strip() for line in path.read_text().splitlines()]
            names = [line.split(":")[0].strip() if name == "labelmap.txt" else line
                     for line in lines if line and not line.startswith("#")]  # fmt: skip
            names = [n for n in dict.fromkeys(names) if n and n.lower() != "background"]
            if not names:
                raise DataError(f"{path}: lists no class; name one class per line")
            return names, str(path)
    splits = set(list_splits(year_dir))
    main = year_dir / "ImageSets" / "Main"
    per_class = {
        p.stem.rsplit("_", 1)[0] for p in main.glob("*_*.txt") if p.stem.rsplit("_", 1)[1] in splits
    }
    if per_class:
        return sorted(per_class), str(main / "<class>_<split>.txt")
    return None


class VocDataset(Dataset):
    """A VOC XML tree with its own classes (see the module docstring for the class list)."""

    kind = "voc"

    def __init__(self, root: str | Path):
        super().__init__(Path(root))
        self.year_dir = resolve_year_dir(root)

    @cached_property
    def _class_source(self) -> tuple[tuple[str, ...], str | None]:
        declared = _declared_classes(self.year_dir)
        if declared is None:
            files = annotations_dir(self.year_dir).glob("*.xml")
            names, source = sorted(set().union(*map(object_names, files))), None
        else:
            names, source = declared
        if set(names) <= set(VOC_CLASSES):
            return VOC_CLASSES, source
        return tuple(names), source

    @property
    def classes(self) -> tuple[str, ...]:
        return self._class_source[0]

    def splits(self) -> tuple[str, ...]:
        return tuple(list_splits(self.year_dir))

    def check_split(self, split: str) -> None:
        read_split(self.year_dir, split)  # any name where there is no ImageSets/Main

    def known_names(self) -> tuple[str, ...] | None:
        """The object names an XML may use: the declared classes (None: any, the list being
        the union of the names found)."""
        classes, source = self._class_source
        return None if source is None and classes != VOC_CLASSES else classes

    def records(self, ids: list[str], *, skip_bad: bool) -> list[ImageRecord]:
        return load_records(self.year_dir, ids, skip_bad=skip_bad, classes=self.known_names())

    def task_classes(self, task: TaskConfig) -> tuple[str, ...]:
        return ACTIONS if task.name == "action" else self.classes

    def data_key(self, task: TaskConfig) -> dict | None:
        """None for the classes of PASCAL VOC itself (the 20 objects, the 11 actions): their
        caches keep the digests they had before datasets were keyed."""
        if self.classes == VOC_CLASSES:
            return None
        return super().data_key(task)

    def attrs(self) -> dict:
        return {"voc_year": self.year_dir.name}

    def load(self, split, *, task=OBJECT_TASK, limit=None, skip_bad=False) -> SplitData:
        if task.name == "action":
            from pipeline.datasets.voc_action import action_split

            return action_split(self, split, limit, task.context, skip_bad)
        if task.name != "object":
            raise DataError(f"--task {task.name!r}: unknown task; choose object or action")
        records = self.records(read_split(self.year_dir, split)[:limit], skip_bad=skip_bad)
        index = {name: i for i, name in enumerate(self.classes)}
        samples = [
            whole_image(
                r.image_id,
                r.image_path,
                r.width,
                r.height,
                [(index[o.name], o.box, o.difficult) for o in r.objects],
            )
            if r.error is None
            else broken(r.image_id, self.year_dir / "JPEGImages", r.error)
            for r in records
        ]
        truth = image_labels(self.year_dir, split, self.classes, records)
        return SplitData(self.classes, samples, truth, boxes=True)
