"""The VOC writer, the embedded demo tree and the synthetic shapes fixture."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from synthetic_voc import SHAPE_CLASSES, SHAPE_STYLES, make_shapes_voc

from pipeline.datasets import demo
from pipeline.datasets.demo import DEMO_CLASSES, build_demo_tree
from pipeline.datasets.voc_writer import VocSample, write_voc_tree
from pipeline.datasets.voc_xml import VocObject
from pipeline.errors import DataError, MidlevelError

SMALL = {"n_trainval": 12, "n_test": 6, "image_size": (160, 120)}


def read_xml(path: Path) -> tuple[tuple[int, int], list[tuple[str, bool, tuple[int, ...]]]]:
    """(width, height), [(name, difficult, (xmin, ymin, xmax, ymax))] straight from the XML."""
    root = ET.parse(path).getroot()
    size = (int(root.findtext("size/width")), int(root.findtext("size/height")))
    objects = [
        (
            o.findtext("name"),
            o.findtext("difficult") == "1",
            tuple(int(o.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")),
        )
        for o in root.iter("object")
    ]
    return size, objects


def read_lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()]


def tree_bytes(year_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(year_dir)): p.read_bytes() for p in year_dir.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def demo_tree(tmp_path_factory) -> tuple[Path, list[VocSample]]:
    """The demo tree and the in-memory samples it was written from."""
    captured: list[VocSample] = []

    def capture(year_dir, samples, splits):
        captured.extend(samples)
        return write_voc_tree(year_dir, captured, splits)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(demo, "write_voc_tree", capture)
        year_dir = build_demo_tree(tmp_path_factory.mktemp("demo"), seed=0, **SMALL)
    return year_dir, captured


def test_demo_tree_layout_and_splits(demo_tree):
    year_dir, _ = demo_tree
    assert year_dir.name == "VOC2007"
    main = year_dir / "ImageSets" / "Main"
    trainval = (main / "trainval.txt").read_text().split()
    assert trainval == [f"{i:06d}" for i in range(1, 13)]
    assert (main / "test.txt").read_text().split() == [f"{i:06d}" for i in range(13, 19)]
    assert (main / "train.txt").read_text().split() == trainval[0::2]
    assert (main / "val.txt").read_text().split() == trainval[1::2]
    assert sorted(p.stem for p in (year_dir / "JPEGImages").glob("*.jpg")) == sorted(
        p.stem for p in (year_dir / "Annotations").glob("*.xml")
    )
    assert len(list((year_dir / "JPEGImages").glob("*.jpg"))) == 18


def test_demo_is_deterministic_per_seed(demo_tree, tmp_path):
    year_dir, _ = demo_tree
    first = tree_bytes(year_dir)
    again = tree_bytes(build_demo_tree(tmp_path / "a", seed=0, **SMALL))
    assert again == first
    other = tree_bytes(build_demo_tree(tmp_path / "b", seed=1, **SMALL))
    assert other.keys() == first.keys()
    assert other["JPEGImages/000001.jpg"] != first["JPEGImages/000001.jpg"]
    differing_xml = [k for k in first if k.startswith("Annotations/") and first[k] != other[k]]
    assert len(differing_xml) > 0


def test_demo_boxes_are_the_pasted_crops_and_match_xml(demo_tree):
    year_dir, samples = demo_tree
    photos = demo._load_photos()
    assert len(samples) == 18
    for sample in samples:
        assert 1 <= len(sample.objects) <= 2
        (width, height), xml_objects = read_xml(year_dir / "Annotations" / f"{sample.image_id}.xml")
        assert (width, height) == sample.image.size == (160, 120)
        with Image.open(year_dir / "JPEGImages" / f"{sample.image_id}.jpg") as jpeg:
            assert jpeg.size == (width, height) and jpeg.mode == "RGB"
        assert [(o.name, o.difficult) for o in sample.objects] == [
            (n, d) for n, d, _ in xml_objects
        ]
        pixels = np.asarray(sample.image)
        for obj, (_, _, (xmin, ymin, xmax, ymax)) in zip(sample.objects, xml_objects, strict=True):
            x0, y0, x1, y1 = obj.box
            assert (xmin, ymin, xmax, ymax) == (x0 + 1, y0 + 1, x1, y1)
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
            size = (int(x1 - x0), int(y1 - y0))
            region = pixels[int(y0) : int(y1), int(x0) : int(x1)]
            pasted = []
            for name, photo, (cx0, cy0, cx1, cy1) in demo.OBJECT_CROPS:
                if name != obj.name:
                    continue
                crop = Image.fromarray(photos[photo][cy0:cy1, cx0:cx1])
                for patch in (crop, crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)):
                    resized = patch.resize(size, Image.Resampling.BILINEAR)
                    pasted.append(np.array_equal(np.asarray(resized), region))
            assert any(pasted), f"{sample.image_id}: {obj.name} box is not a pasted crop"
        if len(sample.objects) == 2:
            (a0, b0, a1, b1), (c0, d0, c1, d1) = (o.box for o in sample.objects)
            assert a1 <= c0 or c1 <= a0 or b1 <= d0 or d1 <= b0, "objects overlap"


def test_demo_classes_in_every_split_and_labels_agree_with_xml(demo_tree):
    year_dir, _ = demo_tree
    main = year_dir / "ImageSets" / "Main"
    assert sorted(p.name for p in main.glob("*_*.txt")) == sorted(
        f"{c}_{s}.txt" for c in DEMO_CLASSES for s in ("train", "val", "trainval", "test")
    )
    for split in ("train", "val", "trainval", "test"):
        ids = (main / f"{split}.txt").read_text().split()
        for name in DEMO_CLASSES:
            rows = read_lines(main / f"{name}_{split}.txt")
            assert [r[0] for r in rows] == ids
            labels = [int(r[1]) for r in rows]
            assert 1 in labels and -1 in labels, f"{name} in {split}: {labels}"
            for image_id, label in zip(ids, labels, strict=True):
                _, objects = read_xml(year_dir / "Annotations" / f"{image_id}.xml")
                assert label == (1 if any(n == name for n, _, _ in objects) else -1)


def test_demo_needs_enough_images_per_split(tmp_path):
    with pytest.raises(ValueError, match="n_trainval >= 6"):
        build_demo_tree(tmp_path, n_trainval=4, n_test=6)


def test_demo_without_scikit_image_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(MidlevelError, match=r"pip install 'midlevel\[demo\]'"):
        build_demo_tree(tmp_path)


def blank(width: int = 40, height: int = 30) -> Image.Image:
    return Image.new("RGB", (width, height), (90, 90, 90))


def test_write_voc_tree_xml_and_difficult_labels(tmp_path):
    samples = [
        VocSample("a", blank(), (VocObject("cat", (0.0, 0.0, 10.0, 5.0), difficult=True),)),
        VocSample(
            "b",
            blank(),
            (VocObject("cat", (2.0, 3.0, 40.0, 30.0)), VocObject("cat", (0, 0, 1, 1), True)),
        ),
        VocSample("c", blank(), (VocObject("dog", (5.0, 6.0, 7.0, 8.0)),)),
        VocSample("d", blank(), ()),
    ]
    year_dir = write_voc_tree(tmp_path / "VOC2007", samples, {"trainval": ["a", "b", "c", "d"]})
    main = year_dir / "ImageSets" / "Main"
    assert (main / "cat_trainval.txt").read_text() == "a  0\nb  1\nc -1\nd -1\n"
    assert (main / "dog_trainval.txt").read_text() == "a -1\nb -1\nc  1\nd -1\n"
    assert sorted(p.name for p in main.iterdir()) == [
        "cat_trainval.txt",
        "dog_trainval.txt",
        "trainval.txt",
    ]
    assert read_xml(year_dir / "Annotations" / "a.xml") == (
        (40, 30),
        [("cat", True, (1, 1, 10, 5))],
    )
    assert read_xml(year_dir / "Annotations" / "b.xml")[1] == [
        ("cat", False, (3, 4, 40, 30)),
        ("cat", True, (1, 1, 1, 1)),
    ]
    root = ET.parse(year_dir / "Annotations" / "c.xml").getroot()
    assert [e.tag for e in root] == ["folder", "filename", "size", "segmented", "object"]
    assert root.findtext("folder") == "VOC2007" and root.findtext("filename") == "c.jpg"
    assert root.findtext("size/depth") == "3" and root.findtext("object/pose") == "Unspecified"
    assert read_xml(year_dir / "Annotations" / "d.xml") == ((40, 30), [])
    with Image.open(year_dir / "JPEGImages" / "b.jpg") as jpeg:
        assert jpeg.format == "JPEG" and jpeg.size == (40, 30)


@pytest.mark.parametrize(
    "box",
    [
        (0.0, 0.0, 41.0, 30.0),  # past the right edge
        (0.0, 0.0, 40.0, 31.0),  # past the bottom edge
        (-1.0, 0.0, 10.0, 10.0),  # left of the image
        (5.0, 5.0, 5.0, 10.0),  # empty
        (0.5, 0.0, 10.0, 10.0),  # not on pixel edges
    ],
)
def test_write_voc_tree_rejects_bad_boxes(tmp_path, box):
    sample = VocSample("a", blank(), (VocObject("cat", box),))
    with pytest.raises(ValueError, match="box"):
        write_voc_tree(tmp_path / "VOC2007", [sample], {"trainval": ["a"]})
    assert not (tmp_path / "VOC2007").exists()


def test_write_voc_tree_rejects_unknown_class_id_and_nonempty_dir(tmp_path):
    with pytest.raises(ValueError, match="class .lion. is not one of aeroplane"):
        write_voc_tree(
            tmp_path / "x", [VocSample("a", blank(), (VocObject("lion", (0, 0, 1, 1)),))], {}
        )
    with pytest.raises(ValueError, match="not samples"):
        write_voc_tree(tmp_path / "x", [VocSample("a", blank(), ())], {"test": ["b"]})
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.txt").write_text("x")
    with pytest.raises(DataError, match="not empty"):
        write_voc_tree(tmp_path / "full", [VocSample("a", blank(), ())], {})


def test_shapes_tree_counts_boxes_and_colours(tmp_path):
    year_dir = make_shapes_voc(tmp_path, n_trainval=12, n_test=6, image_size=(128, 96), seed=3)
    main = year_dir / "ImageSets" / "Main"
    counts = {s: len((main / f"{s}.txt").read_text().split()) for s in ("train", "val", "trainval")}
    assert counts == {"train": 6, "val": 6, "trainval": 12}
    assert len((main / "test.txt").read_text().split()) == 6
    assert len(list((year_dir / "JPEGImages").glob("*.jpg"))) == 18
    for split in ("trainval", "test"):
        for name in SHAPE_CLASSES:
            assert 1 in [int(r[1]) for r in read_lines(main / f"{name}_{split}.txt")]
    n_objects = 0
    for xml in sorted((year_dir / "Annotations").glob("*.xml")):
        (width, height), objects = read_xml(xml)
        assert (width, height) == (128, 96) and 1 <= len(objects) <= 2
        pixels = np.asarray(Image.open(year_dir / "JPEGImages" / f"{xml.stem}.jpg"), dtype=float)
        for name, difficult, (xmin, ymin, xmax, ymax) in objects:
            n_objects += 1
            assert name in SHAPE_CLASSES and not difficult
            side = xmax - xmin + 1
            assert side == ymax - ymin + 1 and 0.25 * 96 - 1 <= side <= 0.6 * 96
            assert xmin >= 1 and xmax <= width and ymin >= 1 and ymax <= height
            # A pixel inside every shape (2/3 down the box's centre line), in its class colour.
            cx, cy = (xmin - 1 + xmax) // 2, ymin - 1 + 2 * side // 3
            colour = pixels[cy - 1 : cy + 2, cx - 1 : cx + 2].mean(axis=(0, 1))
            assert np.abs(colour - SHAPE_STYLES[name][1]).max() < 40, (xml.stem, name, colour)
    assert n_objects > 18
