"""Smoke tests on real photos with the offline ImageNet backbone (EfficientNet-Lite0).

A coarse grid (3 scales) keeps them to about a minute each on 2 CPU cores; the paper's
grid is exercised by the figures in README.md, not here.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import SMALL, assert_same_shards, invoke, read_ap
from click.testing import CliRunner
from conftest import VOC_SUBSET
from PIL import Image
from synthetic_datasets import voc_and_coco_slice

from pipeline.cli import cli
from pipeline.datasets.demo import build_demo_tree
from pipeline.reporting.overlays import overlay_layout

COARSE = ["--scales", "3", "--min-scale", "0.4"]


def run_chain(voc: Path, cache: Path, *extra: str, head: str = "mlp") -> dict[str, dict]:
    """extract trainval + test, fit, score; returns the rows of ap.csv by class."""
    common = ["--voc-root", str(voc), "--cache-dir", str(cache), *COARSE, *extra]
    runner = CliRunner()
    steps = [
        ["extract", "--split", "trainval", "--workers", "0", *common],
        ["extract", "--split", "test", "--workers", "0", *common],
        ["fit", "--head", head, "--epochs", "10", *common],
        ["score", "--head", head, "--output", str(cache / "ap.csv"), *common],
    ]
    for step in steps:
        result = runner.invoke(cli, step, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    with open(cache / "ap.csv") as handle:
        return {row["class"]: row for row in csv.DictReader(handle)}


def test_demo_tree_map_far_above_chance(tmp_path):
    voc = build_demo_tree(tmp_path / "demo", n_trainval=24, n_test=12)
    rows = run_chain(voc, tmp_path / "cache")
    assert set(rows) == {"cat", "motorbike", "person", "mean"}
    # Chance AP is the share of positive test images (about 1/3 to 1/2 here).
    assert float(rows["mean"]["ap_voc07"]) > 85, rows


def test_voc2007_subset_car_far_above_base_rate(voc_subset, tmp_path):
    """A few dozen genuine VOC 2007 images, the official labels, the whole chain, and
    localization with the real boxes."""
    extra = ["--limit", "36"]
    common = ["--voc-root", str(voc_subset), "--cache-dir", str(tmp_path), *COARSE]
    runner = CliRunner()
    for split in ("trainval", "test"):
        args = ["extract", "--split", split, "--workers", "0", *common, *extra]
        result = runner.invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    for step in (
        ["fit", "--head", "svm", "--classes", "bus,car,cat,person,train", *common],
        [
            "score",
            "--head",
            "svm",
            "--classes",
            "car",
            "--output",
            str(tmp_path / "ap.csv"),
            *common,
        ],
    ):
        result = runner.invoke(cli, step, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    with open(tmp_path / "ap.csv") as handle:
        car = next(r for r in csv.DictReader(handle) if r["class"] == "car")
    base_rate = 100 * int(car["positives"]) / int(car["images"])
    assert int(car["images"]) == 36 and 0 < base_rate < 100
    assert float(car["ap_voc07"]) > base_rate + 20, (car, base_rate)
    assert np.isfinite(float(car["ap_area"]))
    # Localization from the same cache and head: maps point at real boxes.
    args = [
        "localize",
        "--head",
        "svm",
        "--output",
        str(tmp_path / "loc"),
        "--overlays",
        "2",
        *common,
    ]
    result = runner.invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    with open(tmp_path / "loc" / "pointing.csv") as handle:
        pointing = {r["class"]: r for r in csv.DictReader(handle)}
    assert int(pointing["car"]["pairs"]) > 10
    mean = pointing["mean"]  # measured: 79.4 against 65.8 for the centre guess
    assert float(mean["accuracy"]) > float(mean["centre_accuracy"]) + 5, pointing
    for overlay in (tmp_path / "loc" / "overlays").glob("*.png"):
        with (
            Image.open(overlay) as image,
            Image.open(voc_subset / "JPEGImages" / overlay.with_suffix(".jpg").name) as photo,
        ):
            assert image.size == overlay_layout(*photo.size, 2).size  # a panel per --top class


SLICE = {"trainval": 30, "test": 20}  # images of each split in the converted slice


@pytest.fixture(scope="module")
def real_slice(tmp_path_factory) -> dict:
    """A slice of the real subset read two ways: as a VOC tree (truth from its XML, as a COCO
    file has it: no per-class files) and converted to COCO JSON (categories with ids 1, 3,
    5, ...); each extracted, fitted (SVM) and scored."""
    if not (VOC_SUBSET / "Annotations").is_dir():
        pytest.skip(f"real VOC subset not found at {VOC_SUBSET}")
    root = tmp_path_factory.mktemp("slice")
    specs = voc_and_coco_slice(VOC_SUBSET, root, SLICE)
    runs = {}
    for reader, data in zip(("voc", "coco"), specs, strict=True):
        cache = root / reader
        common = ["--data", data, "--cache-dir", str(cache), *SMALL]
        for split in SLICE:
            code, out = invoke("extract", "--split", split, "--workers", "0", *common)
            assert code == 0, out
        code, out = invoke("fit", "--head", "svm", "--classes", "bus,car,cat,person,train", *common)
        assert code == 0, out
        code, out = invoke("score", "--head", "svm", "--output", str(cache / "ap.csv"), *common)
        assert code == 0, out
        runs[reader] = cache
    return {"tree": root / "VOC2007", **runs}


def test_voc_and_coco_readers_give_the_same_boxes_features_and_ap(real_slice):
    for split in SLICE:
        (voc,) = real_slice["voc"].glob(f"{split}-*")
        (coco,) = real_slice["coco"].glob(f"{split}-*")
        assert voc.name != coco.name  # the dataset keys the cache
        assert_same_shards(voc, coco)  # ids, boxes, labels, sampled, truth, features: bit for bit
    voc_ap = (real_slice["voc"] / "ap.csv").read_text()
    assert voc_ap == (real_slice["coco"] / "ap.csv").read_text()
    assert float(read_ap(real_slice["voc"] / "ap.csv")["mean"]) > 0


def test_predict_on_real_photos_returns_the_pooled_scores_of_score(real_slice):
    from pipeline import load_head

    (head_file,) = real_slice["voc"].glob("trainval-*/heads/svm.safetensors")
    head = load_head(head_file)
    with open(real_slice["voc"] / "ap-scores.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == SLICE["test"]
    for row in rows:
        scores = head.predict(real_slice["tree"] / "JPEGImages" / f"{row['image_id']}.jpg")
        for name, value in scores.items():
            # equal to float32 rounding: BLAS sums a shard and one image in another order
            assert head.k * np.log(value) == pytest.approx(float(row[name]), rel=1e-5, abs=1e-9)


def test_a_curve_on_real_photos_ends_where_fit_and_score_do(real_slice, tmp_path):
    """The curve's all-data row of seed 0 is `fit` then `score` (same settings, same seed);
    smaller budgets draw whole real images, each class with its k positives."""
    common = ["--data", f"voc:{real_slice['tree']}", "--cache-dir", str(real_slice["voc"]), *SMALL]
    out = tmp_path / "curve.csv"
    code, text = invoke("curve", *common, "--heads", "svm", "--classes", "bus,car,cat,person,train",
                        "--shots", "1,2,all", "--seeds", "2", "--jobs", "1", "--output", str(out))  # fmt: skip
    assert code == 0, text
    with open(out, newline="") as handle:
        rows = {(r["budget"], r["seed"]): r for r in csv.DictReader(handle)}
    assert float(rows[("all", "0")]["map"]) == read_ap(real_slice["voc"] / "ap.csv")["mean"]
    assert rows[("all", "0")]["images"] == str(SLICE["trainval"])
    for seed in ("0", "1"):
        one, two = rows[("shots=1", seed)], rows[("shots=2", seed)]
        assert int(one["images"]) <= int(two["images"]) < SLICE["trainval"]
        for name in ("bus", "car", "cat", "person", "train"):
            assert int(two[f"positives_{name}"]) >= min(
                2, int(rows[("all", "0")][f"positives_{name}"])
            )
    code, text = invoke("suggest", *common, "--head", "svm", "--batch", "5",
                        "--output", str(tmp_path / "suggest.csv"))  # fmt: skip
    assert code == 0 and "suggest: 5 of 20 pool images" in text, text
    assert (tmp_path / "suggest.png").is_file()


def test_a_first_batch_of_forty_real_photos_covers_their_classes(voc_subset, tmp_path):
    """Issue 27, cold start on genuine photos: 40 VOC 2007 test photos as a folder of plain
    photos, no label, no head; typical's first 10 hold every class the 40 hold (5; dropping
    TypiClust's small clusters, as on a large pool, gave 3)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    ids = (voc_subset / "ImageSets" / "Main" / "test.txt").read_text().split()[:40]
    for i in ids:
        (photos / f"{i}.jpg").write_bytes((voc_subset / "JPEGImages" / f"{i}.jpg").read_bytes())
    common = ["--data", f"images:{photos}", "--split", "pool", "--cache-dir", str(tmp_path / "c"),
              "--grid", "whole"]  # fmt: skip
    code, out = invoke("extract", *common, "--workers", "0")
    assert code == 0, out
    output = tmp_path / "first.csv"
    code, out = invoke("suggest", *common, "--head", "none", "--strategy", "typical", "--batch",
                       "10", "--output", str(output))  # fmt: skip
    assert code == 0 and "10 of 40 pool images" in out, out
    with open(output) as handle:
        picks = [row["image"] for row in csv.DictReader(handle)]
    assert len(set(picks)) == 10 and output.with_suffix(".png").is_file()
    held = [_classes_of(voc_subset, i) for i in ids]
    chosen = set().union(*(_classes_of(voc_subset, i) for i in picks))
    assert chosen == set().union(*held), (chosen, set().union(*held))


def _classes_of(voc: Path, image_id: str) -> set[str]:
    from xml.etree import ElementTree

    root = ElementTree.parse(voc / "Annotations" / f"{image_id}.xml").getroot()
    return {o.findtext("name") for o in root.iter("object")}
