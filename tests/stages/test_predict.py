"""`pipeline predict` and the Python API: a fitted head on new photos, with its own settings."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from cli_helpers import error_lines, extract_splits, invoke
from PIL import Image, ImageOps

from pipeline import load_head
from pipeline.errors import DataError
from pipeline.evaluation.score_maps import grid_shape
from pipeline.reporting.overlays import overlay_layout


@pytest.fixture(scope="module", params=["crop", "shared"])
def fitted(request, shapes_voc, tmp_path_factory) -> dict:
    """An SVM head on the shapes tree in each mode, and the test split scored with it."""
    cache = tmp_path_factory.mktemp(f"predict-{request.param}")
    common = extract_splits(shapes_voc, cache, "--mode", request.param)
    code, out = invoke("fit", "--head", "svm", *common)
    assert code == 0, out
    code, out = invoke("score", "--head", "svm", "--output", str(cache / "ap.csv"), *common)
    assert code == 0, out
    (head,) = cache.glob("trainval-*/heads/svm.safetensors")
    ids = (shapes_voc / "ImageSets" / "Main" / "test.txt").read_text().split()
    images = [shapes_voc / "JPEGImages" / f"{i}.jpg" for i in ids]
    return {"cache": cache, "head": head, "images": images, "mode": request.param, "common": common}


def read_rows(path: Path) -> dict[str, dict]:
    with open(path) as handle:
        return {row["image"]: row for row in csv.DictReader(handle)}


def test_predict_gives_the_scores_of_score_in_each_mode(fitted, tmp_path):
    out = tmp_path / "predictions.csv"
    code, text = invoke("predict", "--head", str(fitted["head"]), "--output", str(out),
                        *map(str, fitted["images"]))  # fmt: skip
    assert code == 0, text
    assert re.search(r"predict: 16 images, 3 classes, k 5 in [\d.]+ s \([\d.]+ images/s\)", text)
    rows = read_rows(out)
    with open(fitted["cache"] / "ap-scores.csv") as handle:
        scored = list(csv.DictReader(handle))
    for row in scored:
        mine = rows[row["image_id"]]
        assert mine["path"].endswith(f"{row['image_id']}.jpg")
        for name in ("bus", "car", "cat"):
            assert 5 * np.log(float(mine[name])) == pytest.approx(float(row[name]), rel=1e-5)
        truth = {c for c in ("bus", "car", "cat") if row[f"truth_{c}"] == "1"}
        assert mine["top"].split(";")[0] in truth  # the best class is one in the image
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["kind"] == "predict" and sidecar["head"]["path"] == str(fitted["head"])
    assert sidecar["fingerprint"]["backbone"]["name"] == "resnet18" and sidecar["images"] == 16


def test_the_summary_names_the_pooling_of_a_head_that_pools_its_own_way(fitted, tmp_path):
    """Issue 19, item 15: predict's summary said "k 5" for a head that pools by its max."""
    code, out = invoke("fit", "--head", "weak", "--pool", "max", "--epochs", "2", *fitted["common"])
    assert code == 0, out
    head = out.strip().rsplit(" -> ", 1)[1]
    code, text = invoke("predict", "--head", head, "--output", str(tmp_path / "p.csv"),
                        *map(str, fitted["images"][:2]))  # fmt: skip
    assert code == 0 and "3 classes, max pooling in " in text and "k 5" not in text, text


BAD_PHOTOS = {
    "garbage": lambda path: path.write_bytes(b"not a jpeg"),
    # a PNG whose header says 20000x20000: PIL's DecompressionBombError, which is no OSError
    "decompression bomb": lambda path: Image.new("1", (20000, 20000)).save(path, "PNG"),
}


@pytest.mark.parametrize("bad", BAD_PHOTOS)
def test_a_bad_photo_is_skipped_with_a_line_and_folders_and_globs_work(fitted, tmp_path, bad):
    photos = tmp_path / "photos"
    photos.mkdir()
    for image in fitted["images"][:4]:
        shutil.copy(image, photos / image.name)
    BAD_PHOTOS[bad](photos / "broken.jpg")
    out = tmp_path / "p.csv"
    code, text = invoke("predict", "--head", str(fitted["head"]), "--output", str(out), str(photos))
    assert code == 0, text
    (line,) = re.findall(r"skipped: [^\r\n]*", text)
    assert str(photos / "broken.jpg") in line
    assert "predict: 4 images (1 skipped)" in text
    assert sorted(read_rows(out)) == sorted(p.stem for p in fitted["images"][:4])
    code, text = invoke("predict", "--head", str(fitted["head"]), "--output", str(out),
                        "--on-error", "stop", str(photos))  # fmt: skip
    (line,) = error_lines(text)
    assert code == 2 and str(photos / "broken.jpg") in line
    code, text = invoke("predict", "--head", str(fitted["head"]), "--output", str(out),
                        str(photos / "0000*.jpg"))  # fmt: skip
    assert code == 0 and "predict: 4 images," in text, text


def test_a_quoted_glob_under_home_finds_the_photos(fitted, tmp_path, monkeypatch):
    """`'~/photos/*.jpg'` quoted, so that the shell leaves both the ~ and the * to predict."""
    photos = tmp_path / "home" / "photos"
    photos.mkdir(parents=True)
    for image in fitted["images"][:3]:
        shutil.copy(image, photos / image.name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    out = tmp_path / "p.csv"
    code, text = invoke("predict", "--head", str(fitted["head"]), "--output", str(out),
                        "~/photos/*.jpg")  # fmt: skip
    assert code == 0 and "predict: 3 images," in text, text
    assert sorted(read_rows(out)) == sorted(p.stem for p in fitted["images"][:3])


def test_through_the_cache_is_the_same_and_resumes(fitted, tmp_path):
    memory, cached = tmp_path / "memory.csv", tmp_path / "cached.csv"
    images = list(map(str, fitted["images"][:6]))
    common = ["--head", str(fitted["head"]), "--cache-dir", str(tmp_path / "cache")]
    code, text = invoke("predict", *common, "--output", str(memory), "--no-cache", *images)
    assert code == 0, text
    code, text = invoke("predict", *common, "--output", str(cached), "--cache", *images)
    assert code == 0 and "features cached in" in text, text
    (split_dir,) = (tmp_path / "cache").glob("predict-*")
    shards = {p.name: p.stat().st_mtime_ns for p in split_dir.glob("shard-*.h5")}
    code, text = invoke("predict", *common, "--output", str(cached), "--cache", *images)
    assert code == 0, text
    assert {p.name: p.stat().st_mtime_ns for p in split_dir.glob("shard-*.h5")} == shards
    a, b = read_rows(memory), read_rows(cached)
    assert sorted(a) == sorted(b)
    for image_id, row in a.items():
        for name in ("bus", "car", "cat"):
            assert float(row[name]) == pytest.approx(float(b[image_id][name]), rel=1e-5)


def test_maps_and_overlays_of_new_photos(fitted, tmp_path):
    maps = tmp_path / "maps"
    images = fitted["images"][:3]
    code, text = invoke("predict", "--head", str(fitted["head"]), "--output",
                        str(tmp_path / "p.csv"), "--maps", str(maps), *map(str, images))  # fmt: skip
    assert code == 0, text
    with h5py.File(maps / "maps.h5") as h5:
        assert json.loads(h5.attrs["classes"]) == ["bus", "car", "cat"]
        assert sorted(h5["maps"]) == sorted(p.stem for p in images)
        for image in images:
            entry = h5["maps"][image.stem]
            assert entry["scores"].shape == (3, *grid_shape(128, 96))
    for image in images:
        with Image.open(maps / "overlays" / f"{image.stem}.png") as overlay:
            assert overlay.size == overlay_layout(128, 96, 2).size  # two panels, side by side


def test_python_api_on_paths_arrays_and_pil_images(fitted):
    head = load_head(fitted["head"])
    path = fitted["images"][0]
    from_path = head.predict(path)
    assert list(from_path) == ["bus", "car", "cat"] and all(0 <= v <= 1 for v in from_path.values())
    with Image.open(path) as image:
        from_pil = head.predict(image)
        from_array = head.predict(np.asarray(image))
    for name, value in from_path.items():
        assert from_pil[name] == pytest.approx(value, rel=1e-5)
        assert from_array[name] == pytest.approx(value, rel=1e-5)
    maps = head.score_maps(path)
    assert set(maps) == {"bus", "car", "cat"} and maps["car"].shape == grid_shape(128, 96)
    with pytest.raises(Exception, match="pass \\[H, W, 3\\] uint8"):
        head.predict(np.zeros((4, 4, 3), dtype=np.float32))


def test_a_photo_stored_turned_is_predicted_upright(fitted, tmp_path):
    """A phone photo stored turned (EXIF orientation 6) is scored, mapped and overlaid as the
    upright picture it shows: as its upright pixels saved without orientation are."""
    turned, upright = tmp_path / "turned.jpg", tmp_path / "upright.png"
    with Image.open(fitted["images"][0]) as image:
        exif = Image.Exif()
        exif[0x0112] = 6  # EXIF orientation: show it turned 90 degrees clockwise
        image.transpose(Image.Transpose.ROTATE_90).save(turned, quality=95, exif=exif)
    with Image.open(turned) as image:  # what it shows, as PIL's viewer turns it
        ImageOps.exif_transpose(image).save(upright)
    head = load_head(fitted["head"])
    expected = head.predict(upright)
    with Image.open(turned) as image:
        assert head.predict(image) == pytest.approx(expected, rel=1e-5)  # a PIL image
    assert head.predict(turned) == pytest.approx(expected, rel=1e-5)  # a path
    assert head.score_maps(turned)["car"].shape == grid_shape(128, 96)
    maps = tmp_path / "maps"
    code, text = invoke("predict", "--head", str(fitted["head"]), "--output",
                        str(tmp_path / "p.csv"), "--maps", str(maps), str(turned))  # fmt: skip
    assert code == 0, text
    with Image.open(maps / "overlays" / "turned.png") as overlay:
        assert overlay.size == overlay_layout(128, 96, 2).size


def test_a_head_is_found_by_name_and_refused_with_other_weights(fitted, tmp_path):
    cache = tmp_path / "cache"
    target = cache / "trainval-000000000000" / "heads"
    target.mkdir(parents=True)
    for suffix in (".safetensors", ".json"):
        shutil.copy(fitted["head"].with_suffix(suffix), target / f"svm{suffix}")
    image = str(fitted["images"][0])
    code, text = invoke("predict", "--head", "svm", "--cache-dir", str(cache), "--output",
                        str(tmp_path / "p.csv"), image)  # fmt: skip
    assert code == 0, text
    code, text = invoke("predict", "--head", "mlp", "--cache-dir", str(cache), image)
    assert code == 2 and "no head named 'mlp'" in text
    record = json.loads((target / "svm.json").read_text())
    record["fingerprint"]["backbone"]["weights"] = "sha256:0123456789abcdef"
    (target / "svm.json").write_text(json.dumps(record))
    code, text = invoke("predict", "--head", "svm", "--cache-dir", str(cache), image)
    (line,) = error_lines(text)
    assert code == 2 and "weights=sha256:0123456789abcdef" in line and "--weights FILE" in line


def test_a_thin_photo_is_refused_before_its_pixels_are_resized(fitted, tmp_path):
    """Issue 26, defect 1: the grid follows the short side, so a 32x4 photo makes 246 patches
    on this grid (a 4:3 photo 38), and shared mode resizes it by input size / patch side; it
    is skipped with a line naming the limit, or stops the run, as an unreadable photo is."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for image in fitted["images"][:2]:
        shutil.copy(image, photos / image.name)
    Image.new("RGB", (32, 4), (220, 30, 30)).save(photos / "thin.png")
    out, head = tmp_path / "p.csv", str(fitted["head"])
    code, text = invoke("predict", "--head", head, "--output", str(out), str(photos))
    assert code == 0, text
    (line,) = re.findall(r"skipped: [^\r\n]*", text)
    assert str(photos / "thin.png") in line and "32x4 pixels" in line and "limit of" in line
    assert "predict: 2 images (1 skipped)" in text
    code, text = invoke("predict", "--head", head, "--output", str(out), "--on-error", "stop",
                        str(photos))  # fmt: skip
    (line,) = error_lines(text)
    assert code == 2 and str(photos / "thin.png") in line and "limit of" in line
    with pytest.raises(DataError, match=r"^array: 4x400 pixels .* over the limit of"):
        load_head(fitted["head"]).predict(np.zeros((400, 4, 3), np.uint8))
    # through the feature cache (many photos, or --cache): refused before extraction too
    cache = ["--cache", "--cache-dir", str(tmp_path / "cache")]
    code, text = invoke("predict", "--head", head, "--output", str(out), *cache, str(photos))
    assert code == 0 and "predict: 2 images (1 skipped)" in text, text
    assert "32x4 pixels" in text and "limit of" in text
    code, text = invoke("predict", "--head", head, "--output", str(out), *cache, "--on-error",
                        "stop", str(photos))  # fmt: skip
    (line,) = error_lines(text)
    assert code == 2 and str(photos / "thin.png") in line and "limit of" in line
