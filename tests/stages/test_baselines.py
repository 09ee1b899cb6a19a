"""The whole-image baseline, VOC 2012 (val evaluation, unlabelled test, server export) and
`pipeline report`, end to end through the CLI on synthetic trees."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from cli_helpers import SMALL, extract_splits, invoke, read_ap
from PIL import Image
from synthetic_voc import make_shapes_voc

from pipeline.training.methods import METHODS

CLASSES = ("bus", "car", "cat")


def test_whole_image_svm_far_above_chance(shapes_voc, tmp_path):
    common = extract_splits(shapes_voc, tmp_path / "cache", "--grid", "whole")
    (test_dir,) = (tmp_path / "cache").glob("test-*")
    manifest = (test_dir / "manifest.json").read_text()
    assert '"patches": 16' in manifest  # one feature per image
    code, out = invoke("fit", "--head", "svm", *common)
    assert code == 0 and "one SVM each on 24 images" in out, out  # one row per trainval image
    code, out = invoke("score", "--head", "svm", "--output", str(tmp_path / "whole.csv"), *common)
    assert code == 0, out
    ap = read_ap(tmp_path / "whole.csv")
    assert set(ap) == {*CLASSES, "mean"} and ap["mean"] > 80, ap


def test_whole_image_refuses_the_mlp_head(shapes_voc, tmp_path):
    common = extract_splits(shapes_voc, tmp_path / "cache", "--grid", "whole")
    code, out = invoke("fit", "--head", "mlp", *common)
    assert code == 2 and "use --head svm with --grid whole" in out


@pytest.fixture(scope="module")
def voc2012(tmp_path_factory) -> Path:
    """A VOC2012-layout tree whose test split is unlabelled, as the real one: no XML, no
    per-class files."""
    year = make_shapes_voc(tmp_path_factory.mktemp("voc12"), year="VOC2012")
    test_ids = (year / "ImageSets" / "Main" / "test.txt").read_text().split()
    for image_id in test_ids:
        (year / "Annotations" / f"{image_id}.xml").unlink()
    for path in (year / "ImageSets" / "Main").glob("*_test.txt"):
        path.unlink()
    return year


def test_voc2012_val_ap_and_test_export(voc2012, tmp_path):
    common = ["--voc-root", str(voc2012.parent), "--cache-dir", str(tmp_path / "c"), *SMALL]
    for split in ("train", "val", "test"):
        code, out = invoke("extract", "--split", split, "--workers", "0", *common)
        assert code == 0, out
    code, out = invoke("fit", "--split", "train", "--head", "svm", *common)
    assert code == 0, out
    val_csv = tmp_path / "val.csv"
    code, out = invoke("score", "--split", "val", "--train-split", "train", "--head", "svm",
                       "--output", str(val_csv), *common)  # fmt: skip
    assert code == 0, out
    assert read_ap(val_csv)["mean"] > 60
    test_csv, export = tmp_path / "test.csv", tmp_path / "submission"
    code, out = invoke("score", "--split", "test", "--train-split", "train", "--head", "svm",
                       "--output", str(test_csv), "--export", str(export), *common)  # fmt: skip
    assert code == 0 and "no labels in this split" in out, out
    assert not test_csv.exists()  # no AP table for an unlabelled split
    # scored into val's file: val's AP table goes, never left beside test's new ap.json
    code, out = invoke("score", "--split", "test", "--train-split", "train", "--head", "svm",
                       "--output", str(val_csv), *common)  # fmt: skip
    assert code == 0 and not val_csv.exists(), out
    assert '"split": "test"' in val_csv.with_suffix(".json").read_text()
    with open(tmp_path / "test-scores.csv") as handle:
        scores = list(csv.DictReader(handle))
    main = export / "results" / "VOC2012" / "Main"
    assert sorted(p.name for p in main.iterdir()) == [f"comp1_cls_test_{c}.txt" for c in CLASSES]
    for name in CLASSES:  # the export parses back to the same scores, same images
        lines = [
            line.split() for line in (main / f"comp1_cls_test_{name}.txt").read_text().splitlines()
        ]
        assert [i for i, _ in lines] == [r["image_id"] for r in scores]
        for (_, value), row in zip(lines, scores, strict=True):
            assert float(value) == pytest.approx(float(row[name]), abs=1e-6)


def test_report_from_two_runs(shapes_cache, tmp_path):
    cache, common = shapes_cache
    runs = []
    for head in ("svm", "mlp"):
        code, out = invoke("fit", "--head", head, "--epochs", "6", "--hidden", "32", *common)
        assert code == 0, out
        runs.append(str(tmp_path / f"{head}.csv"))
        code, out = invoke("score", "--head", head, "--output", runs[-1], *common)
        assert code == 0, out
    code, out = invoke("report", *runs, "--output", str(tmp_path / "report"))
    assert code == 0, out
    report = tmp_path / "report"
    names = {"pr-curves.png", "ap-bars.png", "contact-svm.png", "contact-mlp.png", "results.md"}
    assert names <= {p.name for p in report.iterdir()}
    for png in report.glob("*.png"):
        with Image.open(png) as image:
            assert image.width > 200 and image.height > 200
    table = (report / "results.md").read_text()
    for run in runs:
        assert f"{read_ap(Path(run))['mean']:.1f}" in table


def test_compare_runs_the_four_methods_into_one_report(shapes_voc, shapes_cache, tmp_path):
    """The four methods, scored into one report; the heads compare fits live in its output
    directory, so a head the user tuned with fit is never replaced (issue 19, item 3)."""
    cache, common = shapes_cache
    extract_splits(shapes_voc, cache, "--grid", "whole")
    mine = {}
    for head in ("mlp", "svm", "weak"):  # the user's own heads, tuned
        assert invoke("fit", "--head", head, "--hidden", "16", "--epochs", "2", *common)[0] == 0
        (path,) = cache.glob(f"trainval-*/heads/{head}.safetensors")
        mine[path] = path.read_bytes()
    output = tmp_path / "compare"
    whole = tmp_path / "whole-best.toml"
    whole.write_text('head = "svm"\nsvm_c = 0.001\nk = 2.0\nscales = 3\n')
    weak = tmp_path / "weak-best.toml"
    weak.write_text('head = "weak"\npool = "max"\n')
    code, out = invoke("compare", *common, "--epochs", "6", "--hidden", "32", "--output", str(output),
                       "--method-config", f"whole-svm={whole}",
                       "--method-config", f"patches-weak={weak}")  # fmt: skip
    assert code == 0, out
    sidecar = json.loads((output / "whole-svm.json").read_text())
    assert sidecar["head"]["params"]["C"] == 0.001 and sidecar["config"]["k"] == 2.0
    assert json.loads((output / "patches-svm.json").read_text())["head"]["params"]["C"] == 1.0
    table = (output / "results.md").read_text()
    assert json.loads((output / "patches-weak.json").read_text())["head"]["params"]["pool"] == "max"
    assert "pooling: mean of p^k, k = 2.0" in table  # the whole-image SVM's
    assert "pooling: max (the weak head's; k unused)" in table
    for name in ("whole-svm", "patches-svm", "patches-mlp", "patches-weak"):
        mean = read_ap(output / f"{name}.csv")["mean"]
        assert f"{name} {mean:.2f}" in out and name in table
        assert mean > 70
    assert (output / "ap-bars.png").stat().st_size > 0
    assert all(path.read_bytes() == data for path, data in mine.items())
    assert sorted(p.stem for p in (output / "heads").glob("*.safetensors")) == sorted(
        name for name in METHODS
    )
    code, bad = invoke("compare", *common, "--method-config", f"nosuch={whole}")
    assert code == 2 and "METHOD one of whole-svm" in bad


def test_compare_scores_the_cache_its_keep_names(shapes_voc, tmp_path):
    """compare --keep all scores the test split's all-patch cache even where the split's own
    rule would keep a sample (issue 28's defect: the score config dropped `keep`)."""
    cache = tmp_path / "cache"
    common = ["--voc-root", str(shapes_voc), "--cache-dir", str(cache), *SMALL]
    for split, grid in (("val", "patches"), ("val", "whole"), ("train", "whole")):
        code, out = invoke("extract", "--split", split, "--grid", grid, "--workers", "0", *common)
        assert code == 0, out
    for keep in ("sample", "all"):  # the scored split, "train", has a cache of each rule
        code, out = invoke("extract", "--split", "train", "--keep", keep, "--workers", "0", *common)
        assert code == 0, out
    output = tmp_path / "compare"
    code, out = invoke("compare", *common, "--split", "val", "--test-split", "train",
                       "--keep", "all", "--epochs", "2", "--hidden", "16",
                       "--output", str(output))  # fmt: skip
    assert code == 0, out
    for name in ("patches-svm", "patches-mlp", "patches-weak"):
        sidecar = json.loads((output / f"{name}.json").read_text())
        assert sidecar["config"]["keep"] == "all", name
        alone = tmp_path / f"{name}.csv"  # the same head scored on the all-patch cache by hand
        code, out = invoke("score", *common, "--split", "train", "--train-split", "val",
                           "--keep", "all", "--head", str(output / "heads" / f"{name}.safetensors"),
                           "--output", str(alone))  # fmt: skip
        assert code == 0, out
        assert (output / f"{name}-scores.csv").read_text() == alone.with_name(
            f"{name}-scores.csv"
        ).read_text()  # before: the sample cache's images and scores


def test_whole_image_cache_key_ignores_the_patch_grid_and_label_rule():
    from pipeline.config import BackboneConfig, CacheSettings, GridConfig, LabelRule
    from pipeline.features.registry import cache_key

    def feature_settings(backbone, grid, labels):
        return cache_key(CacheSettings(backbone=backbone, grid=grid, labels=labels))

    backbone = BackboneConfig("resnet18", "random", 64)
    whole = feature_settings(backbone, GridConfig(kind="whole"), LabelRule()).digest
    other = feature_settings(backbone, GridConfig(3, 0.4, kind="whole"), LabelRule(0.5)).digest
    patches = feature_settings(backbone, GridConfig(3, 0.4), LabelRule()).digest
    assert whole == other != patches
