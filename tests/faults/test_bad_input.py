"""Bad input, one fault per image: each stops extract with one line naming the file (exit
2), or with --on-error skip is logged, listed in its shard's metadata and counted in the
summary; a rerun after fixing the files adds them. Files that look odd but are images
(grayscale, CMYK, PNG named .jpg, 16 bits, alpha, turned by EXIF) decode to what they show
and are kept, not skipped."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import h5py
import numpy as np
import pytest
from cli_helpers import SMALL, error_lines, extract_args, invoke
from PIL import Image, ImageOps

from pipeline.datasets.voc import read_split
from pipeline.features.images import decode_rgb


def _jpeg(voc: Path, image_id: str) -> Path:
    return voc / "JPEGImages" / f"{image_id}.jpg"


def _xml(voc: Path, image_id: str) -> Path:
    return voc / "Annotations" / f"{image_id}.xml"


def _edit_first_object(voc: Path, image_id: str, tag: str, value: str) -> None:
    path = _xml(voc, image_id)
    tree = ET.parse(path)
    tree.getroot().find("object").find(tag).text = value
    tree.write(path)


def _truncate(voc, i):
    data = _jpeg(voc, i).read_bytes()
    _jpeg(voc, i).write_bytes(data[: len(data) // 2])


def _garble(voc, i):
    size = _jpeg(voc, i).stat().st_size
    _jpeg(voc, i).write_bytes(np.random.default_rng(0).bytes(size))


def _empty(voc, i):
    _jpeg(voc, i).write_bytes(b"")


def _malformed_xml(voc, i):
    text = _xml(voc, i).read_text()
    _xml(voc, i).write_text(text[: len(text) // 2])


def _empty_box(voc, i):
    _edit_first_object(voc, i, "bndbox/xmin", "90")
    _edit_first_object(voc, i, "bndbox/xmax", "80")


def _box_outside(voc, i):
    _edit_first_object(voc, i, "bndbox/xmax", "500")


def _unknown_class(voc, i):
    _edit_first_object(voc, i, "name", "unicorn")


def _no_image(voc, i):
    _jpeg(voc, i).unlink()


def _no_xml(voc, i):
    _xml(voc, i).unlink()


# fault -> (how it is made, the file the message names, what the message says)
FAULTS = {
    "truncated jpeg": (_truncate, _jpeg, "cannot decode"),
    "corrupt jpeg": (_garble, _jpeg, "cannot decode"),
    "zero-byte jpeg": (_empty, _jpeg, "cannot decode"),
    "malformed xml": (_malformed_xml, _xml, "malformed XML"),
    "box x0 >= x1": (_empty_box, _xml, "is empty or outside"),
    "box outside the image": (_box_outside, _xml, "is empty or outside"),
    "unknown class": (_unknown_class, _xml, "unknown class 'unicorn'"),
    "id without image": (_no_image, _jpeg, "listed in the split but missing"),
    "id without annotation": (_no_xml, _xml, "annotation missing"),
}


@pytest.fixture
def voc(shapes_voc, tmp_path) -> Path:
    """A writable copy of the shapes tree."""
    return Path(shutil.copytree(shapes_voc, tmp_path / "VOC2007"))


def _extract(voc: Path, cache: Path, *extra: str) -> tuple[int, str]:
    return invoke(*extract_args(voc, cache, "--workers", "0", *extra))


def _shards(cache: Path) -> list[h5py.File]:
    (directory,) = cache.glob("test-*")
    return [h5py.File(p, "r") for p in sorted(directory.glob("shard-*.h5"))]


def _cached(cache: Path) -> dict[str, np.ndarray]:
    """image id -> its patch features, over the whole cache."""
    out = {}
    for h5 in _shards(cache):
        with h5:
            ids = [s.decode() for s in h5["image_ids"][...]]
            index, features = h5["image_index"][...], h5["features"][...]
            out |= {image_id: features[index == k] for k, image_id in enumerate(ids)}
    return out


@pytest.mark.parametrize("fault", FAULTS)
def test_bad_input_stops_with_one_line_naming_the_file(voc, tmp_path, fault):
    make, named, says = FAULTS[fault]
    image_id = read_split(voc, "test")[1]
    make(voc, image_id)
    code, out = _extract(voc, tmp_path / "cache")
    errors = error_lines(out)
    assert code == 2 and len(errors) == 1, out
    assert str(named(voc, image_id)) in errors[0] and says in errors[0], out
    assert "Traceback" not in out


def test_skip_logs_records_and_counts_every_fault_then_a_fixed_rerun_adds_them(
    shapes_voc, voc, tmp_path
):
    ids = read_split(voc, "test")  # 16 images, 4 shards; the faults go in the first 3
    broken = dict(zip(ids, FAULTS, strict=False))
    for image_id, fault in broken.items():
        FAULTS[fault][0](voc, image_id)
    cache = tmp_path / "cache"
    code, out = _extract(voc, cache, "--on-error", "skip")
    assert code == 0, out
    assert f"{len(FAULTS)} bad images skipped" in out
    logged = [line for line in out.splitlines() if line.startswith("skipped:")]
    assert len(logged) == len(FAULTS)
    recorded = {}
    for h5 in _shards(cache):
        with h5:
            recorded |= {s["id"]: s["reason"] for s in json.loads(h5.attrs["skipped"])}
    assert recorded.keys() == broken.keys()
    for image_id, fault in broken.items():
        _, named, says = FAULTS[fault]
        assert str(named(voc, image_id)) in recorded[image_id] and says in recorded[image_id]
    skipped_features = _cached(cache)
    assert sorted(skipped_features) == [i for i in ids if i not in broken]
    manifest = json.loads(next(cache.glob("test-*/manifest.json")).read_text())
    assert manifest["complete"] and sum(s["skipped"] for s in manifest["shards"].values()) == 9

    code, out = _extract(voc, cache, "--on-error", "skip")  # skipping again: nothing to redo
    assert code == 0 and "nothing to do" in out, out

    for image_id in broken:  # fixed: a run that skips nothing redoes the shards that skipped
        for copy in (_jpeg, _xml):
            shutil.copy(copy(shapes_voc, image_id), copy(voc, image_id))
    code, out = _extract(voc, cache)
    assert code == 0 and "3 shards new, 1 reused" in out and "skipped" not in out, out
    fixed = _cached(cache)
    assert sorted(fixed) == ids
    for image_id, features in skipped_features.items():
        np.testing.assert_array_equal(fixed[image_id], features)


def _grayscale(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        gray = image.convert("L")
    gray.save(path, "JPEG", quality=95)
    return np.asarray(Image.open(path))[..., None].repeat(3, axis=2)


def _cmyk(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"))
        image.convert("CMYK").save(path, "JPEG", quality=95)
    return rgb


def _png_named_jpg(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        image.save(path, "PNG")
        return np.asarray(image.convert("RGB"))


def _sixteen_bit(path: Path) -> np.ndarray:
    """A 16-bit grayscale PNG (named .jpg) of the photo's gray times 257: it shows that gray."""
    with Image.open(path) as image:
        gray = np.asarray(image.convert("L"))
    Image.fromarray(gray.astype(np.uint16) * 257).save(path, "PNG")
    return gray[..., None].repeat(3, axis=2)


def _half_transparent(path: Path) -> np.ndarray:
    """An RGBA PNG (named .jpg) of the photo at alpha 128: it shows over white."""
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"))
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])).save(path, "PNG")
    return np.rint(rgb * (128 / 255) + 255 * (127 / 255))


ODD = [(_grayscale, 0), (_cmyk, 12), (_png_named_jpg, 0), (_sixteen_bit, 0), (_half_transparent, 1)]


@pytest.mark.parametrize(("convert", "tolerance"), ODD)
def test_odd_but_valid_images_decode_to_their_rgb_pixels(voc, convert, tolerance):
    path = _jpeg(voc, read_split(voc, "test")[0])
    expected = convert(path)
    decoded = decode_rgb(path).permute(1, 2, 0).numpy()
    assert decoded.shape == expected.shape
    assert np.abs(decoded.astype(int) - expected).mean() <= tolerance


def test_odd_but_valid_images_are_extracted_not_skipped(voc, tmp_path):
    ids = read_split(voc, "test")
    for (convert, _), image_id in zip(ODD, ids, strict=False):
        convert(_jpeg(voc, image_id))
    code, out = _extract(voc, tmp_path / "cache", "--on-error", "skip")
    assert code == 0 and "skipped" not in out, out
    features = _cached(tmp_path / "cache")
    assert sorted(features) == ids
    assert all(np.isfinite(features[i]).all() and len(features[i]) for i in ids[: len(ODD)])


def test_a_photo_stored_turned_is_extracted_upright(voc, tmp_path):
    """A phone photo stored turned (EXIF orientation 6) whose annotation says the upright size,
    as a tool that applied the rotation writes it: extracted as the picture it shows, the same
    features as the upright pixels saved without orientation."""
    turned, upright = read_split(voc, "test")[:2]
    with Image.open(_jpeg(voc, turned)) as image:
        stored = image.transpose(Image.Transpose.ROTATE_90)  # upright is this turned clockwise
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF orientation: show it turned 90 degrees clockwise
    stored.save(_jpeg(voc, turned), "JPEG", quality=95, exif=exif)
    with Image.open(_jpeg(voc, turned)) as image:  # what it shows, as PIL's viewer turns it
        ImageOps.exif_transpose(image).save(_jpeg(voc, upright), "PNG")
    code, out = _extract(voc, tmp_path / "cache")
    assert code == 0 and not error_lines(out), out
    features = _cached(tmp_path / "cache")
    np.testing.assert_array_equal(features[turned], features[upright])


def _bomb(path: Path) -> None:
    """A PNG whose header says 20000x20000 (PIL refuses it as a decompression bomb)."""
    Image.new("1", (20000, 20000)).save(path, "PNG")


def test_a_decompression_bomb_is_one_bad_image(voc, tmp_path):
    ids = read_split(voc, "test")
    _bomb(_jpeg(voc, ids[3]))
    code, out = _extract(voc, tmp_path / "stop")
    (error,) = error_lines(out)
    assert code == 2 and str(_jpeg(voc, ids[3])) in error and "decompression bomb" in error, out
    code, out = _extract(voc, tmp_path / "skip", "--on-error", "skip")
    assert code == 0 and "1 bad images skipped" in out, out
    (line,) = [line for line in out.splitlines() if line.startswith("skipped:")]
    assert str(_jpeg(voc, ids[3])) in line
    assert sorted(_cached(tmp_path / "skip")) == [i for i in ids if i != ids[3]]


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda voc: (voc / "ImageSets/Main/test.txt").write_text(""), "split 'test' is empty"),
        (lambda voc: shutil.rmtree(voc / "Annotations"), "not a VOC tree"),
    ],
    ids=["empty split", "not a VOC directory"],
)
def test_bad_tree_stops_even_when_skipping(voc, tmp_path, make, says):
    make(voc)
    code, out = _extract(voc, tmp_path / "cache", "--on-error", "skip")
    errors = error_lines(out)
    assert code == 2 and len(errors) == 1 and says in errors[0], out


def test_skip_on_an_unlabelled_split_skips_only_the_bad_image(voc, tmp_path):
    for xml in (voc / "Annotations").glob("*.xml"):
        xml.unlink()
    for path in (voc / "ImageSets" / "Main").glob("*_*.txt"):
        path.unlink()
    ids = read_split(voc, "test")
    _garble(voc, ids[5])
    code, out = _extract(voc, tmp_path / "cache", "--on-error", "skip")
    assert code == 0 and "1 bad images skipped" in out, out
    assert sorted(_cached(tmp_path / "cache")) == [i for i in ids if i != ids[5]]


def test_score_says_what_extract_skipped_and_an_export_missing_images_is_incomplete(voc, tmp_path):
    """Images skipped at extract have no score: score counts them in its summary and sidecar,
    and an export without them says loudly that it is incomplete, listing them."""
    ids = read_split(voc, "test")
    _truncate(voc, ids[2])
    cache = tmp_path / "cache"
    code, out = _extract(voc, cache, "--on-error", "skip")
    assert code == 0, out
    common = ["--voc-root", str(voc), "--cache-dir", str(cache), *SMALL]
    code, out = invoke("fit", "--split", "test", "--head", "svm", *common)
    assert code == 0, out
    ap_csv, export = tmp_path / "ap.csv", tmp_path / "submission"
    code, out = invoke("score", "--split", "test", "--train-split", "test", "--head", "svm",
                       "--output", str(ap_csv), "--export", str(export), *common)  # fmt: skip
    assert code == 0, out
    assert "15 images (1 skipped at extract, not scored)" in out, out
    assert "warning: 1 images that extract skipped (--on-error skip) are not scored" in out
    assert "warning: the export is INCOMPLETE: 1 images of split test" in out
    sidecar = json.loads(ap_csv.with_suffix(".json").read_text())
    assert [s["id"] for s in sidecar["left_out"]] == [ids[2]]
    missing = (export / "missing-images.txt").read_text().splitlines()
    assert (
        len(missing) == 1 and missing[0].startswith(f"{ids[2]}\t") and "cannot decode" in missing[0]
    )
    comp = next((export / "results").rglob("comp1_cls_test_car.txt")).read_text().split()
    assert ids[2] not in comp and len(comp) == 2 * 15


def _escape_filename(voc: Path, image_id: str) -> Path:
    """The image moved out of the tree, the XML's <filename> pointing at it with ../"""
    outside = voc.parent / "private.jpg"
    _jpeg(voc, image_id).rename(outside)
    text = _xml(voc, image_id).read_text()
    _xml(voc, image_id).write_text(text.replace(f"{image_id}.jpg", "../../private.jpg"))
    return outside


def test_an_image_outside_the_tree_stops_extract_in_one_line_and_skip_never_reads_it(voc, tmp_path):
    """Issue 19: a <filename> leading out of the dataset is refused naming the XML, the path
    and the fix; with --on-error skip that image is skipped, never read."""
    image_id = read_split(voc, "test")[1]
    outside = _escape_filename(voc, image_id)
    code, out = _extract(voc, tmp_path / "cache")
    errors = error_lines(out)
    assert code == 2 and len(errors) == 1 and "Traceback" not in out, out
    assert str(_xml(voc, image_id)) in errors[0] and "outside the dataset" in errors[0], out
    assert str(outside) in errors[0], out
    code, out = _extract(voc, tmp_path / "cache", "--on-error", "skip")
    assert code == 0 and "1 bad images skipped" in out, out
    assert image_id not in _cached(tmp_path / "cache")


def test_an_xml_copied_from_another_image_trains_on_its_own_image(voc, tmp_path):
    """Issue 19: an XML whose <filename> names another image of the same size (copied from
    it) reads the image named like the XML; two ids on one image file are refused."""
    first, second = read_split(voc, "test")[:2]
    xml = _xml(voc, second)
    xml.write_text(xml.read_text().replace(f"{second}.jpg", f"{first}.jpg"))
    code, out = _extract(voc, tmp_path / "cache")
    assert code == 0, out
    features = _cached(tmp_path / "cache")
    assert not np.array_equal(features[first], features[second])
    _jpeg(voc, second).unlink()
    code, out = _extract(voc, tmp_path / "again")
    errors = error_lines(out)
    assert code == 2 and len(errors) == 1 and str(xml) in errors[0], out
    assert f"'{first}' and '{second}'" in errors[0] and str(_jpeg(voc, first)) in errors[0], out
