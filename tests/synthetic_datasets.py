"""Users' own datasets made in code, in the formats labelling tools export.

Every builder starts from the coloured-shapes VOC tree (tests/synthetic_voc.py), so each one
holds the same kind of images, and rewrites it the way a tool would lay it out:

- `make_cvat_voc`: a CVAT "PASCAL VOC 1.1" / LabelImg export with its own classes (scratch,
  dent, ok): labelmap.txt, no per-class files, float coordinates ("12.0"), some images PNG.
- `voc_to_coco`: one split of a VOC tree as a COCO JSON (also used on the real VOC subset).
- `make_coco`: COCO layout, non-contiguous category ids, images in subfolders, a crowd box
  and Roboflow's grouping category.
- `make_imagefolder`, `make_labels_csv`: image-level labels only.
- `make_corner_labels_csv`: image-level labels only, each shape in a known corner (the weak
  head's localization test).
"""

from __future__ import annotations

import csv
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from synthetic_voc import SHAPE_CLASSES, SHAPE_STYLES, draw_shape, make_shapes_voc

from pipeline.datasets.voc import load_records, read_split
from pipeline.datasets.voc_xml import VOC_CLASSES

CUSTOM_CLASSES = ("scratch", "dent", "ok")


def make_cvat_voc(root: Path) -> Path:
    """A CVAT export of the shapes tree with classes scratch, dent, ok; returns its folder."""
    tree = make_shapes_voc(root, classes=CUSTOM_CLASSES, year="export")
    for path in (tree / "ImageSets" / "Main").glob("*_*.txt"):
        path.unlink()  # CVAT writes the split lists, not the per-class files
    labelmap = "# label:color_rgb:parts:actions\nbackground:0,0,0::\n"
    labelmap += "".join(f"{name}:{40 * i},0,0::\n" for i, name in enumerate(CUSTOM_CLASSES, 1))
    (tree / "labelmap.txt").write_text(labelmap)
    for k, xml in enumerate(sorted((tree / "Annotations").glob("*.xml"))):
        document = ET.parse(xml)
        if k % 2:  # LabelImg writes float corners
            for node in document.iter("bndbox"):
                for corner in node:
                    corner.text = f"{float(corner.text):.1f}"
        if k % 3 == 0:  # a PNG, named by <filename>
            jpeg = tree / "JPEGImages" / f"{xml.stem}.jpg"
            Image.open(jpeg).save(jpeg.with_suffix(".png"))
            jpeg.unlink()
            document.getroot().find("filename").text = f"{xml.stem}.png"
        document.write(xml)
    return tree


def voc_to_coco(
    year_dir: Path,
    split: str,
    json_path: Path,
    image_root: Path,
    *,
    classes: tuple[str, ...],
    category_ids: dict[str, int] | None = None,
    subfolder=lambda image_id: "",
    extra_categories: tuple[dict, ...] = (),
) -> Path:
    """One split of a VOC tree as COCO JSON: images copied under `image_root/<subfolder>/`,
    boxes [x, y, w, h] from the 0-based pixel edges, categories with the ids given."""
    ids = category_ids or {name: i + 1 for i, name in enumerate(classes)}
    images, annotations = [], []
    for number, record in enumerate(load_records(year_dir, read_split(year_dir, split)), 1):
        name = f"{subfolder(record.image_id)}{record.image_path.name}"
        (image_root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(record.image_path, image_root / name)
        images.append({"id": number, "file_name": name, "width": record.width,
                       "height": record.height})  # fmt: skip
        for obj in record.objects:
            x0, y0, x1, y1 = obj.box
            annotations.append({
                "id": len(annotations) + 1, "image_id": number, "category_id": ids[obj.name],
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                "iscrowd": int(obj.difficult),
            })  # fmt: skip
    categories = [*extra_categories, *({"id": ids[n], "name": n} for n in classes)]
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return json_path


def voc_and_coco_slice(source: Path, root: Path, sizes: dict[str, int]) -> tuple[str, str]:
    """(voc spec, coco spec) of the first `sizes[split]` images of each split of a VOC tree,
    written under root twice: as a VOC tree without per-class files (truth from the XML, as
    a COCO file has it; images copied: a link out of the tree is refused) and converted to COCO JSON (categories 1, 3, 5...)."""
    tree = root / "VOC2007"
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (tree / folder).mkdir(parents=True)
    for split, n in sizes.items():
        ids = read_split(source, split)[:n]
        (tree / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        for i in ids:
            shutil.copy(source / "Annotations" / f"{i}.xml", tree / "Annotations")
            shutil.copy(source / "JPEGImages" / f"{i}.jpg", tree / "JPEGImages")
    ids = {name: 2 * k + 1 for k, name in enumerate(VOC_CLASSES)}
    for split in sizes:
        voc_to_coco(tree, split, root / "coco" / f"{split}.json", root / "coco" / split,
                    classes=VOC_CLASSES, category_ids=ids)  # fmt: skip
    return f"voc:{tree}", f"coco:{root / 'coco'}"


def make_coco(root: Path, shapes: Path) -> Path:
    """The shapes tree's trainval and test as COCO: annotations/instances_<split>.json, images
    in <split>/<a|b>/, category ids 7, 3, 12 under a Roboflow-style group id 0, one box made
    a crowd."""
    classes = ("bus", "car", "cat")
    group = {"id": 0, "name": "shapes", "supercategory": "none"}
    for split in ("trainval", "test"):
        path = voc_to_coco(
            shapes, split, root / "annotations" / f"instances_{split}.json", root / split,
            classes=classes, category_ids={"bus": 7, "car": 3, "cat": 12},
            subfolder=lambda i: "a/" if int(i) % 2 else "b/", extra_categories=(group,),
        )  # fmt: skip
        data = json.loads(path.read_text())
        for category in data["categories"][1:]:
            category["supercategory"] = "shapes"
        data["annotations"][0]["iscrowd"] = 1
        path.write_text(json.dumps(data))
    return root


def _first_classes(shapes: Path, split: str) -> list[tuple[Path, str, set[str]]]:
    """(image, class of its first shape, all its classes) per image of a split."""
    out = []
    for record in load_records(shapes, read_split(shapes, split)):
        names = [o.name for o in record.objects]
        out.append((record.image_path, names[0], set(names)))
    return out


def make_imagefolder(root: Path, shapes: Path) -> Path:
    """ROOT/<split>/<class>/<id>.jpg, each image filed under the class of its first shape."""
    for split, name in (("trainval", "train"), ("test", "val")):
        for image, first, _ in _first_classes(shapes, split):
            (root / name / first).mkdir(parents=True, exist_ok=True)
            shutil.copy(image, root / name / first / image.name)
    return root


def make_labels_csv(root: Path, shapes: Path) -> Path:
    """labels.csv with a split column, every class of each image (';'), images in photos/."""
    (root / "photos").mkdir(parents=True)
    with open(root / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "labels", "split"])
        for split in ("trainval", "test"):
            for image, _, names in _first_classes(shapes, split):
                shutil.copy(image, root / "photos" / image.name)
                writer.writerow([f"photos/{image.name}", ";".join(sorted(names)), split])
    return root / "labels.csv"


CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")


def make_corner_labels_csv(
    root: Path, *, n_trainval: int = 36, n_test: int = 18, size=(128, 96), side: int = 44
) -> tuple[Path, dict[str, tuple[str, tuple[int, int, int, int]]]]:
    """labels.csv of images with one shape each, in one corner, known at image level only.

    The i-th image holds a SHAPE_CLASSES[i % 3] shape of `side` pixels in CORNERS[(i // 3) % 4]
    (so every class shows in every corner); the CSV has no boxes. Returns the CSV and, for
    the tests only, each sample id's (class, box) where the shape was drawn."""
    rng = np.random.default_rng(0)
    (root / "photos").mkdir(parents=True)
    width, height = size
    truth = {}
    with open(root / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "labels", "split"])
        for i in range(n_trainval + n_test):
            name = SHAPE_CLASSES[i % 3]
            corner = CORNERS[(i // 3) % 4]
            x0 = 0 if "left" in corner else width - side
            y0 = 0 if "top" in corner else height - side
            noise = rng.normal(128, 20, (height, width, 3)).clip(0, 255).astype(np.uint8)
            image = Image.fromarray(noise)
            box = (x0, y0, x0 + side, y0 + side)
            draw_shape(ImageDraw.Draw(image), SHAPE_STYLES[name], box)
            image.save(root / "photos" / f"{i:06d}.jpg", quality=95)
            split = "trainval" if i < n_trainval else "test"
            writer.writerow([f"photos/{i:06d}.jpg", name, split])
            truth[f"photos/{i:06d}"] = (name, box)
    return root / "labels.csv", truth
