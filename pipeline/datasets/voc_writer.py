"""Writing a VOC year directory laid out as the official VOC 2007 files, so the demo tree and
the test fixtures go through the same reader as the real data set. Pixel-edge boxes become
VOC's 1-based `xmin = x0 + 1`, `xmax = x1`; the same input always gives the same bytes.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from pipeline.datasets.voc_xml import ACTIONS, VOC_CLASSES, VocObject, class_label
from pipeline.errors import DataError

JPEG_QUALITY = 90


@dataclass(frozen=True)
class VocSample:
    image_id: str
    image: Image.Image  # RGB
    objects: tuple[VocObject, ...]


def _check_sample(sample: VocSample, classes: tuple[str, ...]) -> None:
    image_id = sample.image_id
    if not image_id or any(c.isspace() or c in "/\\" for c in image_id):
        raise ValueError(f"image id {image_id!r}: must be non-empty, without spaces or slashes")
    width, height = sample.image.size
    for obj in sample.objects:
        if obj.actions is not None and (obj.name != "person" or set(obj.actions) - set(ACTIONS)):
            raise ValueError(
                f"{image_id}: actions {obj.actions} need a person and names from {ACTIONS}"
            )
        if obj.name not in classes:
            raise ValueError(f"{image_id}: class {obj.name!r} is not one of {', '.join(classes)}")
        if len(obj.box) != 4 or not all(float(v).is_integer() for v in obj.box):
            raise ValueError(
                f"{image_id}: box {obj.box} must be 4 integral pixel-edge coordinates x0, y0, x1, y1"
            )
        x0, y0, x1, y1 = obj.box
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise ValueError(
                f"{image_id}: {obj.name} box {obj.box} is not inside the {width}x{height} image "
                "(need 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height)"
            )


def _annotation_xml(folder: str, sample: VocSample) -> bytes:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = folder
    ET.SubElement(root, "filename").text = f"{sample.image_id}.jpg"
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(sample.image.width)
    ET.SubElement(size, "height").text = str(sample.image.height)
    ET.SubElement(size, "depth").text = "3"
    ET.SubElement(root, "segmented").text = "0"
    for obj in sample.objects:
        node = ET.SubElement(root, "object")
        ET.SubElement(node, "name").text = obj.name
        ET.SubElement(node, "pose").text = "Unspecified"
        ET.SubElement(node, "truncated").text = "0"
        ET.SubElement(node, "difficult").text = str(int(obj.difficult))
        if obj.actions is not None:
            actions = ET.SubElement(node, "actions")
            for action in ACTIONS:
                ET.SubElement(actions, action).text = str(int(action in obj.actions))
        bndbox = ET.SubElement(node, "bndbox")
        x0, y0, x1, y1 = (int(v) for v in obj.box)
        for tag, value in (("xmin", x0 + 1), ("ymin", y0 + 1), ("xmax", x1), ("ymax", y1)):
            ET.SubElement(bndbox, tag).text = str(value)
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="utf-8") + b"\n"


def write_voc_tree(
    year_dir: Path,
    samples: Iterable[VocSample],
    splits: dict[str, list[str]],
    classes: tuple[str, ...] = VOC_CLASSES,
) -> Path:
    """Write `samples` (objects of `classes`) and `splits` (name -> sample ids) as a VOC year
    directory and return it, with `<class>_<split>.txt` for every class some sample has.
    ValueError for a bad box, class, id or split; DataError if `year_dir` is not empty."""
    year_dir = Path(year_dir)
    if year_dir.exists() and any(year_dir.iterdir()):
        raise DataError(f"{year_dir}: not empty; write the VOC tree into a new directory")
    samples = list(samples)
    by_id: dict[str, VocSample] = {}
    for sample in samples:
        _check_sample(sample, classes)
        if sample.image_id in by_id:
            raise ValueError(f"image id {sample.image_id!r} occurs twice")
        by_id[sample.image_id] = sample
    for split, ids in splits.items():
        if not split or "_" in split:
            raise ValueError(f"split name {split!r}: must be non-empty and without '_'")
        unknown = sorted(set(ids) - by_id.keys())
        if unknown:
            raise ValueError(f"split {split!r} names ids that are not samples: {unknown[:5]}")

    jpeg_dir, xml_dir, main_dir = (
        year_dir / "JPEGImages",
        year_dir / "Annotations",
        year_dir / "ImageSets" / "Main",
    )
    for d in (jpeg_dir, xml_dir, main_dir):
        d.mkdir(parents=True, exist_ok=True)
    for sample in samples:
        image = sample.image.convert("RGB")
        image.save(jpeg_dir / f"{sample.image_id}.jpg", format="JPEG", quality=JPEG_QUALITY)
        xml = _annotation_xml(year_dir.name, sample)
        (xml_dir / f"{sample.image_id}.xml").write_bytes(xml)

    present = sorted({o.name for s in samples for o in s.objects}, key=classes.index)
    for split, ids in splits.items():
        (main_dir / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        for name in present:
            lines = (f"{i} {class_label(by_id[i].objects, name):2d}\n" for i in ids)
            (main_dir / f"{name}_{split}.txt").write_text("".join(lines))
    if any(o.actions is not None for s in samples for o in s.objects):
        _write_action_sets(year_dir / "ImageSets" / "Action", by_id, splits)
    return year_dir


def _write_action_sets(action_dir: Path, by_id: dict[str, VocSample], splits: dict) -> None:
    """ImageSets/Action as VOC 2012 has it: `<split>.txt` lists the images with action-annotated
    persons, `<action>_<split>.txt` has `<image id> <object index, 1-based> <1 or -1>` lines."""
    action_dir.mkdir(parents=True, exist_ok=True)
    for split, ids in splits.items():
        persons = [
            (i, j, obj)
            for i in ids
            for j, obj in enumerate(by_id[i].objects, start=1)
            if obj.actions is not None
        ]
        images = list(dict.fromkeys(i for i, _, _ in persons))
        (action_dir / f"{split}.txt").write_text("".join(f"{i}\n" for i in images))
        for action in ACTIONS:
            lines = (f"{i} {j} {1 if action in o.actions else -1:2d}\n" for i, j, o in persons)
            (action_dir / f"{action}_{split}.txt").write_text("".join(lines))
