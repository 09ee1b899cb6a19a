"""Many bad inputs, not a few (issue 19): hypothesis writes malformed and hostile VOC XML,
COCO JSON, labels CSVs and image files (truncated, empty, huge headers, odd modes, odd and
unicode names, `..`), and every reader and predict either reads them right or refuses in the
project's one line, never another exception and never a silent negative. Derandomized (the
cases depend only on the code: hypothesis also draws constants from the imported modules);
--hypothesis-show-statistics says how many ran."""

from __future__ import annotations

import io
import json
import shutil
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import invoke
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.datasets.coco import CocoDataset
from pipeline.datasets.labels_csv import LabelsCsvDataset
from pipeline.datasets.pixels import image_size, read_rgb
from pipeline.datasets.voc import VocDataset
from pipeline.errors import MidlevelError

CASES = settings(
    derandomize=True, max_examples=150, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)  # fmt: skip
CLASSES = ("car", "cat")


def one_line(error: Exception) -> bool:
    return isinstance(error, MidlevelError) and "\n" not in str(error) and str(error)


def jpeg(size=(40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((*size[::-1], 3), 120, np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def workspace() -> Path:
    return Path(tempfile.mkdtemp(prefix="hostile-"))


# --- what a file may hold -----------------------------------------------------------------
odd_text = st.one_of(
    st.sampled_from(
        [
            "car",
            "cat",
            "",
            " ",
            "../../etc/passwd",
            "/etc/passwd",
            "..",
            "é🙂",
            "nan",
            "-1",
            "1e9",
            "0x10",
            "car\x00",
            "a" * 300,
        ]
    ),  # fmt: skip
    st.text(max_size=12),
)
numberish = st.one_of(st.integers(-10, 100).map(str), st.floats(allow_nan=True).map(str), odd_text)
json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 50), st.floats(), odd_text),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_text, inner, max_size=4),
    max_leaves=8,
)


@st.composite
def voc_object(draw) -> tuple[str, str, tuple | None]:
    """(XML of one <object>, its name, its box when it is a valid box of a class)."""
    name = draw(st.sampled_from(CLASSES) | odd_text)
    corners = [draw(numberish) for _ in range(4)]
    if draw(st.booleans()):  # often a real box
        x0, y0 = draw(st.integers(1, 20)), draw(st.integers(1, 15))
        corners = [
            str(x0),
            str(y0),
            str(x0 + draw(st.integers(1, 19))),
            str(y0 + draw(st.integers(1, 14))),
        ]
    tags = ["xmin", "ymin", "xmax", "ymax"]
    kept = [draw(st.integers(0, 9)) > 0 for _ in tags]  # now and then a corner is missing
    box = "".join(f"<{t}>{v}</{t}>" for t, v, k in zip(tags, corners, kept, strict=True) if k)
    difficult = draw(st.sampled_from(["", "<difficult>1</difficult>", "<difficult>x</difficult>"]))
    xml = f"<object><name>{name}</name>{difficult}<bndbox>{box}</bndbox></object>"
    return xml, name, corners if name in CLASSES and not difficult and all(kept) else None


@st.composite
def voc_xml(draw) -> tuple[str, list]:
    """(an annotation file's text, the valid boxes it names) or garbage."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=40)), []
    width, height = (
        draw(st.sampled_from(["40", "0", "-3", "40.5", "x", ""])),
        draw(st.sampled_from(["30", "30", "abc"])),
    )
    objects = draw(st.lists(voc_object(), max_size=3))
    filename = draw(st.sampled_from(["", "<filename>000001.jpg</filename>", "<filename>../x.jpg</filename>",
                                     "<filename>/etc/hosts</filename>"]))  # fmt: skip
    text = (f"<annotation>{filename}<size><width>{width}</width><height>{height}</height></size>"
            + "".join(o[0] for o in objects) + "</annotation>")  # fmt: skip
    return text, [o for o in objects if o[2] is not None]


def escape(text: str) -> str:
    return text.encode("utf-8", "replace").decode()


@CASES
@given(voc_xml())
def test_voc_xml_reads_right_or_refuses_in_one_line(case):
    text, valid = case
    root = workspace() / "VOC2007"
    try:
        (root / "Annotations").mkdir(parents=True)
        (root / "JPEGImages").mkdir()
        (root / "JPEGImages" / "000001.jpg").write_bytes(jpeg())
        (root / "Annotations" / "000001.xml").write_text(escape(text), errors="replace")
        (root / "classes.txt").write_text("car\ncat\n")
        try:
            split = VocDataset(root).load("trainval")
        except MidlevelError as error:
            assert one_line(error), error
            return
        (sample,) = split.samples
        assert sample.image_path.resolve() == (root / "JPEGImages" / "000001.jpg").resolve()
        for name in sample_names(sample, split.classes):  # never a silent negative
            assert split.truth[0, split.classes.index(name)] == 1, (name, split.truth)
        assert len(sample.boxes) <= len(valid) + text.count("<difficult>")
    finally:
        shutil.rmtree(root.parent)


def sample_names(sample, classes) -> set[str]:
    return {
        classes[c] for c, hard in zip(sample.box_classes, sample.difficult, strict=True) if not hard
    }


@st.composite
def coco_json(draw) -> dict:
    """A COCO-shaped file whose fields may hold anything."""
    images = [{"id": draw(st.sampled_from([1, "1", 1.0, None, [1]])), "file_name": draw(st.sampled_from(
        ["a.jpg", "", "../a.jpg", "/etc/hosts", "sub/../a.jpg", "é.jpg"])),
        "width": draw(st.sampled_from([40, "40", "40px", None, -1, 40.5])), "height": 30}]  # fmt: skip
    if draw(st.booleans()):
        images.append(draw(json_value))
    annotations = [{"id": 1, "image_id": draw(st.sampled_from([1, "1", 2, None])),
                    "category_id": draw(st.sampled_from([1, "1", "car", 7])),
                    "bbox": draw(st.sampled_from([[2, 2, 10, 10], [2, None, 3, 3], [0, 0, -1, 5],
                                                  "box", [1, 2, 3]])),
                    "iscrowd": draw(st.sampled_from([0, 1, "0", None]))}]  # fmt: skip
    if draw(st.booleans()):
        annotations.append(draw(json_value))
    categories = [
        {"id": 1, "name": "car"},
        draw(st.sampled_from([{"id": 2, "name": "cat"}, {"id": "x"}, "cat"])),
    ]
    data = {"images": images, "annotations": annotations, "categories": categories}
    if draw(st.integers(0, 9)) == 0:
        data = draw(json_value)
    return data


@CASES
@given(coco_json())
def test_coco_json_reads_right_or_refuses_in_one_line(data):
    root = workspace()
    try:
        (root / "a.jpg").write_bytes(jpeg())
        (root / "test.json").write_text(json.dumps(data))
        try:
            split = CocoDataset(root / "test.json").load("test")
        except MidlevelError as error:
            assert one_line(error), error
            return
        for i, sample in enumerate(split.samples):  # every boxed class is present, not -1
            assert sample.image_path.resolve().is_relative_to(root.resolve())
            for name in sample_names(sample, split.classes):
                assert split.truth[i, split.classes.index(name)] == 1
    finally:
        shutil.rmtree(root)


@CASES
@given(st.lists(st.tuples(odd_text, odd_text), min_size=1, max_size=4), st.booleans())
@example(rows=[("car\x00", "car")], header=True)  # a NUL in a name: a ValueError once
@example(rows=[("/", "car")], header=True)  # a folder for a name: a ValueError once
@example(rows=[("..", "car")], header=False)
def test_a_labels_csv_reads_right_or_refuses_in_one_line(rows, header):
    root = workspace()
    try:
        (root / "a.jpg").write_bytes(jpeg())
        lines = (["image,labels"] if header else []) + [f"{i},{labels}" for i, labels in rows]
        (root / "labels.csv").write_text(escape("\n".join(lines)) + "\n")
        try:
            dataset = LabelsCsvDataset(root / "labels.csv")
            split = dataset.load(dataset.splits()[0])
        except MidlevelError as error:
            assert one_line(error), error
            return
        for sample in split.samples:
            assert sample.image_path.resolve().is_relative_to(root.resolve())
    finally:
        shutil.rmtree(root)


def chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, kind, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with_size(width: int, height: int) -> bytes:
    """A PNG header that says width x height, then one empty data chunk."""
    head = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "I", "I;16", "F", "YCbCr", "LAB", "HSV"]


@st.composite
def image_bytes(draw) -> tuple[bytes, str]:
    """(the bytes of an image file, its suffix): a valid one of an odd mode, or a broken one."""
    kind = draw(st.sampled_from(["valid", "truncated", "empty", "garbage", "huge", "header"]))
    if kind == "empty":
        return b"", ".jpg"
    if kind == "garbage":
        return draw(st.binary(max_size=200)), draw(st.sampled_from([".jpg", ".png", ".tif"]))
    if kind in ("huge", "header"):
        side = draw(st.sampled_from([0, 1, 20000, 70000, 2**31 - 1]))
        return png_with_size(side, draw(st.sampled_from([1, side]))), ".png"
    mode, fmt = (
        draw(st.sampled_from(MODES)),
        draw(st.sampled_from(["PNG", "TIFF", "JPEG", "BMP", "WEBP"])),
    )
    size = (draw(st.integers(1, 24)), draw(st.integers(1, 24)))
    image = Image.new(mode, size)
    buffer = io.BytesIO()
    try:
        image.save(buffer, fmt)
    except (OSError, ValueError, KeyError):  # PIL cannot write this mode in this format
        image.convert("RGB").save(buffer, fmt)
    data = buffer.getvalue()
    if kind == "truncated":  # a share of the file, not a byte count: LAB's sRGB profile carries
        # a timestamp, so its length changes with the clock and a count would replay differently
        data = data[: len(data) * draw(st.integers(0, 999)) // 1000]
    return data, "." + fmt.lower()


@pytest.mark.filterwarnings("ignore:(Corrupt EXIF|Truncated File):UserWarning")  # PIL, on bad TIFFs
@CASES
@given(image_bytes(), odd_text)
def test_an_image_file_reads_as_8_bit_rgb_of_its_size_or_refuses_in_one_line(case, name):
    data, suffix = case
    root = workspace()
    try:
        safe = "".join(c for c in name if c not in "/\x00") or "x"
        path = root / f"{safe[:40]}{suffix}"
        path.write_bytes(data)
        try:
            width, height = image_size(path)
            pixels = read_rgb(path)
        except MidlevelError as error:
            assert one_line(error), error
            return
        assert pixels.dtype == np.uint8 and pixels.shape == (height, width, 3)
    finally:
        shutil.rmtree(root)


@pytest.fixture(scope="module")
def head_file(shapes_cache) -> str:
    cache, common = shapes_cache
    code, out = invoke("fit", "--head", "svm", "--svm-epochs", "2", *common)
    assert code == 0, out
    return out.strip().rsplit(" -> ", 1)[1]


@pytest.mark.filterwarnings("ignore:(Corrupt EXIF|Truncated File):UserWarning")
@settings(CASES, max_examples=12)
@given(st.lists(image_bytes(), min_size=4, max_size=8))
def test_predict_scores_or_skips_every_hostile_photo(head_file, files):
    """predict on a folder of hostile files: the readable ones scored, every other skipped
    with a line of its own, never a traceback."""
    root = workspace()
    try:
        for k, (data, suffix) in enumerate(files):
            (root / f"{k:03d}{suffix}").write_bytes(data)
        out_csv = root / "out" / "p.csv"
        code, out = invoke("predict", "--head", head_file, "--output", str(out_csv), str(root))
        assert "Traceback" not in out, out
        skipped = [line for line in out.splitlines() if line.startswith("skipped: ")]
        if code == 2:  # no readable photo at all: one line says so
            assert not out_csv.exists() and len(out.splitlines()[-1]) and "error:" in out, out
            return
        assert code == 0, out
        written = out_csv.read_text().splitlines()[1:]
        assert len(written) + len(skipped) == len(files), (written, skipped)
    finally:
        shutil.rmtree(root)
