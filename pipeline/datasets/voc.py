"""PASCAL VOC XML trees: the genuine VOC, and exports of CVAT, LabelImg and Label Studio.

The tree's layout (year directory, splits, image files), its class list and its truth; one
XML file is read by voc_xml.py, the Action task by voc_action.py. The layouts and the class
list rule are in docs/datasets.md.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cached_property, partial
from pathlib import Path

import numpy as np

from pipeline.config import TaskConfig
from pipeline.datasets.base import (
    IMAGE_SUFFIXES,
    OBJECT_TASK,
    Dataset,
    SplitData,
    broken,
    image_size,
    whole_image,
)
from pipeline.datasets.paths import contained, real
from pipeline.datasets.voc_action import action_split
from pipeline.datasets.voc_xml import (
    ACTIONS,
    VOC_CLASSES,
    ImageRecord,
    class_label,
    object_names,
    parse_annotation,
)
from pipeline.errors import DataError

CLASS_LIST_FILES = ("labelmap.txt", "classes.txt")


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
    """Where the XML files are: Annotations/, or the year directory itself (LabelImg)."""
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
        ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DataError(f"{year_dir}: split {split!r} is empty; check ImageSets/Main/{split}.txt")
    return ids


def list_splits(year_dir: Path) -> list[str]:
    """The split files of ImageSets/Main (not the per-class `<class>_<split>.txt` files)."""
    main = year_dir / "ImageSets" / "Main"
    return sorted(p.stem for p in main.glob("*.txt") if "_" not in p.stem)


def image_path(year_dir: Path, image_id: str, filename: str | None, xml: Path | None) -> Path:
    """The image file of an id: the one named like it (`<id>.jpg`, `.png`...), else the one
    its XML's <filename> names (Label Studio names images apart), in JPEGImages/, images/
    (Label Studio), beside the XML (LabelImg) or under the tree. An XML copied from another
    image keeps its own image. When none exists, the first candidate (for the message naming
    it). Refused when it lies outside the tree (see paths.py)."""
    named = [f"{image_id}{suffix}" for suffix in IMAGE_SUFFIXES]
    own = filename is not None and Path(filename).stem == image_id  # <filename> agrees
    names = [filename, *named] if own else [*named, *([filename] if filename else [])]
    folders = (year_dir / "JPEGImages", year_dir / "images", annotations_dir(year_dir), year_dir)
    candidates = [folder / name for name in names for folder in folders]
    missing = folders[0] / (filename or named[0])
    path = next((p for p in candidates if p.is_file()), missing)
    listed_in = xml or year_dir / "ImageSets"
    fix = f"keep the images under {year_dir} (copies or links) and fix its <filename>"
    return contained(path, year_dir, listed_in, fix)


def _record(year_dir: Path, image_id: str, xml: Path | None, classes) -> ImageRecord:
    """The record of one id with its image file found; without XML (VOC 2012 test), its
    size from the image header."""
    record = None if xml is None else parse_annotation(xml, classes)
    path = image_path(year_dir, image_id, record.filename if record else None, xml)
    if not path.is_file():
        raise DataError(f"{path}: listed in the split but missing; restore it or drop the id")
    if record is None:
        width, height = image_size(path)
        return ImageRecord(image_id, width, height, (), image_path=path)
    return replace(record, image_path=path)


def _one_image_each(folder: Path, records: list[ImageRecord]) -> None:
    """Refuse two ids whose image is one file (an XML's <filename> naming another's image)."""
    owner: dict[Path, ImageRecord] = {}
    for record in records:
        if record.error is not None:
            continue
        first = owner.setdefault(real(record.image_path), record)
        if first.image_id != record.image_id:
            named = Path(first.image_path).stem == first.image_id
            culprit = record if named else first  # the one whose image is named otherwise
            raise DataError(
                f"{folder / f'{culprit.image_id}.xml'}: ids {first.image_id!r} and "
                f"{record.image_id!r} both have the image {first.image_path}; give each its "
                "own image (restore it, or fix the <filename> of the one copied)"
            )


def load_records(
    year_dir: Path,
    ids: list[str],
    *,
    skip_bad: bool = False,
    classes: tuple[str, ...] | None = VOC_CLASSES,
) -> list[ImageRecord]:
    """Parse every annotation of a split up front, so bad files fail before any compute. No
    XML at all is an unlabelled split (VOC 2012 test); some missing is an error. With
    `skip_bad`, a bad image's record carries the error, in its place (see `Dataset.load`)."""
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
    _one_image_each(folder, records)
    return records


def _class_file_labels(path: Path) -> dict[str, int]:
    """id -> label of one ImageSets/Main/<class>_<split>.txt, `<id> <label>` lines split from
    the right (an id may hold spaces); {} for an id-only list (a split whose labels are
    withheld, as VOC 2012 test)."""
    if not path.is_file():
        return {}
    lines = [(n, line.strip()) for n, line in enumerate(path.read_text().splitlines(), 1)]
    lines = [(n, line) for n, line in lines if line]
    if all(len(line.split()) == 1 for _, line in lines):
        return {}
    labels = {}
    for number, line in lines:
        image_id, label = line.rsplit(None, 1) if len(line.split()) > 1 else ("", line)
        if label not in ("1", "0", "-1") or not image_id:
            raise DataError(
                f"{path}: line {number} is {line!r}, not '<image id> <label>' with a label "
                "1, 0 or -1; fix it"
            )
        labels[image_id] = int(label)
    return labels


def image_labels(
    year_dir: Path, split: str, classes: tuple[str, ...], records: list[ImageRecord]
) -> np.ndarray | None:
    """[n_images, n_classes] int8 truth (1 present, -1 absent, 0 difficult only), None for a
    split without labels: from ImageSets/Main/<class>_<split>.txt for the ids it lists (as
    the devkit does; the only source for classes without boxes), else from the XML objects.
    A file saying -1 (absent) for an image whose XML has a box of the class (not difficult)
    is refused: one of the two is wrong. The other disagreements are VOC's own: 1 for a class
    that has no box, 0 (difficult only) where the difficult flag is not written."""
    main = year_dir / "ImageSets" / "Main"
    from_files = [_class_file_labels(main / f"{name}_{split}.txt") for name in classes]
    if not any(from_files) and not any(r.objects for r in records):
        return None
    truth = np.full((len(records), len(classes)), -1, dtype=np.int8)
    for c, (name, labels) in enumerate(zip(classes, from_files, strict=True)):
        for i, record in enumerate(records):
            from_xml = class_label(record.objects, name)
            truth[i, c] = labels.get(record.image_id, from_xml)
            if truth[i, c] == -1 and from_xml == 1:
                raise DataError(
                    f"{main / f'{name}_{split}.txt'}: says {record.image_id!r} has no "
                    f"{name}, but {annotations_dir(year_dir) / f'{record.image_id}.xml'} has a "
                    f"{name} box; fix the line or the box (or mark it <difficult>1)"
                )
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
    """A VOC XML tree with its own class list (see `_class_source`)."""

    kind = "voc"

    def __init__(self, root: str | Path):
        super().__init__(Path(root))
        self.year_dir = resolve_year_dir(root)

    @cached_property
    def _class_source(self) -> tuple[tuple[str, ...], str | None]:
        """The class list and the file declaring it (None: the union of the XML names). All
        VOC names give the 20 VOC classes in VOC order: a VOC subset keeps VOC's columns."""
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
        """The records of `ids`, their object names checked against `known_names`."""
        return load_records(self.year_dir, ids, skip_bad=skip_bad, classes=self.known_names())

    def task_classes(self, task: TaskConfig) -> tuple[str, ...]:
        return ACTIONS if task.name == "action" else self.classes

    def source(self) -> str:
        return str(self.year_dir.resolve())  # the same tree however its root was written

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
            records = partial(self.records, skip_bad=skip_bad)
            return action_split(self.year_dir, records, split, limit, task.context)
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
