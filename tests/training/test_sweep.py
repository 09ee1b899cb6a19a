"""Cross-validation folds, `pipeline sweep`, and `fit --config` on a synthetic cache."""

from __future__ import annotations

import csv
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import SMALL, error_lines, invoke, write_rows
from synthetic_voc import make_one_image_voc

from pipeline.config import BackboneConfig, FitConfig, GridConfig, SVMConfig
from pipeline.errors import CacheError
from pipeline.training.crossval import SplitLabels, check_fold, cross_validate, image_folds
from pipeline.training.settings import (
    apply_setting,
    fit_options,
    grid_settings,
    parse_params,
    read_options_file,
    write_options_file,
)

FAST = ["--epochs", "4", "--hidden", "32", "--svm-epochs", "3"]


def read_rows(path: Path) -> list[dict]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_folds_partition_the_images_and_never_share_one():
    ids = [f"{i:06d}" for i in range(103)]
    folds = image_folds(ids, 4, seed=0)
    assert sum(len(f) for f in folds) == len(ids)
    assert set().union(*folds) == set(ids)
    for a in range(4):
        for b in range(a + 1, 4):
            assert not folds[a] & folds[b]
    assert {len(f) for f in folds} <= {25, 26}
    assert folds == image_folds(ids, 4, seed=0) and folds != image_folds(ids, 4, seed=1)
    with pytest.raises(ValueError, match="folds"):
        image_folds(ids[:3], 4, seed=0)


def test_grid_settings_and_apply():
    settings = grid_settings(parse_params(("hidden=32,64", "C=0.1,1", "k=3")), "--param")
    assert settings == [
        {"hidden": 32, "svm_c": 0.1, "k": 3.0},
        {"hidden": 32, "svm_c": 1.0, "k": 3.0},
        {"hidden": 64, "svm_c": 0.1, "k": 3.0},
        {"hidden": 64, "svm_c": 1.0, "k": 3.0},
    ]
    config = apply_setting(
        FitConfig(), {"hidden": 64, "svm_c": 0.5, "background_weight": 2.0, "k": 3.0}
    )
    assert (config.mlp.hidden, config.svm.C, config.k) == (64, 0.5, 3.0)
    assert config.mlp.background_weight == config.svm.background_weight == 2.0


@pytest.mark.parametrize(
    ("params", "message"),
    [(("hiddn=3",), "unknown sweep parameter 'hiddn'"), (("hidden=x",), "hidden = 'x' is not a int"),
     (("hidden",), "write NAME=V1,V2")],
)  # fmt: skip
def test_bad_params_are_one_line_errors(shapes_cache, params, message):
    _, common = shapes_cache
    args = [a for p in params for a in ("--param", p)]
    code, out = invoke("sweep", *common, *args)
    assert code == 2 and message in out, out


def test_options_file_refuses_unknown_keys(tmp_path):
    path = tmp_path / "best.toml"
    path.write_text('head = "mlp"\nhidden = 64\nnosuch = 1\n')
    with pytest.raises(Exception, match="nosuch"):
        read_options_file(path, {"head", "hidden"})
    path.write_text('head = "mlp"\nhidden = 64\noutput = "x.csv"\n')
    assert read_options_file(path, {"head", "output"}) == {"head": "mlp", "output": "x.csv"}
    # every option a best config holds is known, the optional ones included
    config = FitConfig(classes=("car",), backbone=BackboneConfig(weights="w.pth"))
    write_options_file(path, fit_options(config), "a comment")
    assert read_options_file(path, {"classes", "weights", "task_name"}) == {
        "classes": "car",
        "weights": "w.pth",
        "task_name": "object",
    }


def test_a_best_config_reproduces_which_cache_the_sweep_read(tmp_path):
    """A sweep on int8 features of a split's every-patch cache writes a best file that fits on
    those same features: before, precision and keep were left out, and `fit --config` read the
    fp32 (or the sampled) cache instead, silently."""
    config = FitConfig(backbone=BackboneConfig(precision="int8"), keep="all", head="svm")
    path = tmp_path / "best.toml"
    write_options_file(path, fit_options(config), "a comment")
    options = read_options_file(path, set(fit_options(config)))
    again = apply_setting(FitConfig(), options)
    assert again.backbone.precision == "int8" and again.keep == "all"
    assert again == config


@pytest.fixture(scope="module")
def swept(shapes_cache, tmp_path_factory):
    """A 2x2 sweep (hidden x k) with 3 folds on 2 processes."""
    _, common = shapes_cache
    out = tmp_path_factory.mktemp("sweep") / "sweep.csv"
    args = ["sweep", *common, *FAST, "--param", "hidden=16,32", "--param", "k=1,5",
            "--folds", "3", "--jobs", "2", "--output", str(out)]  # fmt: skip
    code, text = invoke(*args)
    assert code == 0, text
    return out, args, text


def test_sweep_writes_one_row_per_setting_best_first(swept):
    out, _, text = swept
    rows = read_rows(out)
    assert len(rows) == 4
    assert {(r["hidden"], r["k"]) for r in rows} == {
        ("16", "1.0"),
        ("16", "5.0"),
        ("32", "1.0"),
        ("32", "5.0"),
    }
    means = [float(r["map_mean"]) for r in rows]
    assert means == sorted(means, reverse=True)
    for row in rows:
        folds = [float(v) for v in row["map_folds"].split(";")]
        assert len(folds) == 3 and float(row["map_mean"]) == pytest.approx(np.mean(folds), abs=0.01)
        assert float(row["fit_seconds"]) > 0
    assert means[0] > 70  # shapes are separable: far above chance (about 50)
    assert "4 settings x 3 folds (4 run, 0 kept)" in text and "extraction it reused" in text
    sidecar = out.with_suffix(".json").read_text()
    assert rows[0]["digest"] in sidecar and '"folds": 3' in sidecar


def test_best_config_reproduces_its_score_through_fit_config(swept, shapes_cache):
    out, _, _ = swept
    best_row = read_rows(out)[0]
    best = out.with_name("sweep-best.toml")
    options = tomllib.loads(best.read_text())
    assert options["hidden"] == int(best_row["hidden"]) and options["k"] == float(best_row["k"])
    cache, common = shapes_cache
    code, text = invoke(
        "fit",
        "--config",
        str(best),
        "--cv",
        "3",
        "--voc-root",
        common[1],
        "--cache-dir",
        str(cache),
    )
    assert code == 0, text
    cv = re.search(r"mAP ([\d.]+) ± ([\d.]+) over 3 folds", text)
    assert cv and float(cv[1]) == pytest.approx(float(best_row["map_mean"]), abs=0.01), text
    assert float(cv[2]) == pytest.approx(float(best_row["map_std"]), abs=0.01)


def test_resumed_sweep_does_not_redo_finished_settings(swept):
    out, args, _ = swept
    rows = read_rows(out)
    kept = [r for r in rows if r["hidden"] == "16"]
    write_rows(out, kept)  # as if killed after two settings
    code, text = invoke(*args)
    assert code == 0 and "(2 run, 2 kept)" in text, text
    again = {r["key"]: r for r in read_rows(out)}
    assert len(again) == 4
    for row in kept:  # finished rows are kept as they were, not recomputed
        assert again[row["key"]]["fit_seconds"] == row["fit_seconds"]


def test_an_svm_sweep_after_an_mlp_sweep_of_the_same_grid_runs_its_own_rows(shapes_cache, tmp_path):
    """The resume key holds the whole head config: the MLP rows of a grid are not reused as
    SVM rows, sweep-best.toml names the head it measured, and both sweeps' rows stay."""
    _, common = shapes_cache
    out = tmp_path / "sweep.csv"
    base = ["sweep", *common, *FAST, "--param", "k=1,5", "--folds", "2", "--jobs", "1",
            "--output", str(out)]  # fmt: skip
    code, text = invoke(*base, "--head", "mlp")
    assert code == 0 and "(2 run, 0 kept)" in text, text
    code, text = invoke(*base, "--head", "svm")
    assert code == 0 and "(2 run, 0 kept)" in text, text
    rows = read_rows(out)
    assert sorted(r["head"] for r in rows) == ["mlp", "mlp", "svm", "svm"]
    assert tomllib.loads(out.with_name("sweep-best.toml").read_text())["head"] == "svm"


def test_a_new_sweep_keeps_the_rows_of_earlier_ones(shapes_cache, tmp_path):
    """Rows of another grid stay; a setting that makes the same fit config as an earlier row
    (k=5 is the default the hidden sweep ran with) is that row, kept, not run again."""
    _, common = shapes_cache
    out = tmp_path / "sweep.csv"
    base = ["sweep", *common, *FAST, "--folds", "2", "--jobs", "1", "--output", str(out)]
    code, text = invoke(*base, "--param", "hidden=16,32")
    assert code == 0, text
    code, text = invoke(*base, "--param", "k=1,5")
    assert code == 0 and "2 settings x 2 folds (1 run, 1 kept)" in text, text
    rows = read_rows(out)
    assert len(rows) == 3
    assert sorted((r["hidden"], r["k"]) for r in rows) == [("", "1.0"), ("16", ""), ("32", "")]
    means = [float(r["map_mean"]) for r in rows]
    assert means == sorted(means, reverse=True)


def test_a_resumed_sweep_runs_again_on_changed_data(shapes_voc, tmp_path):
    """Issue 19, item 4: rows are keyed by the shards' data digests too, so after the
    annotations change and extract rebuilds their shards, the rows of the old data are not
    reused (they were: "(0 run, 2 kept)" with the old best)."""
    import shutil
    import xml.etree.ElementTree as ET

    from pipeline.datasets.voc import read_split

    voc = Path(shutil.copytree(shapes_voc, tmp_path / "VOC2007"))
    common = ["--voc-root", str(voc), "--cache-dir", str(tmp_path / "cache"), *SMALL]
    args = ["sweep", *common, *FAST, "--param", "k=1,5", "--folds", "2", "--jobs", "1",
            "--output", str(tmp_path / "sweep.csv")]  # fmt: skip
    assert invoke("extract", "--split", "trainval", "--workers", "0", *common)[0] == 0
    code, text = invoke(*args)
    assert code == 0 and "(2 run, 0 kept)" in text, text
    xml = voc / "Annotations" / f"{read_split(voc, 'trainval')[0]}.xml"
    tree = ET.parse(xml)
    tree.find("object/bndbox/xmax").text = str(int(tree.find("object/bndbox/xmax").text) - 4)
    tree.write(xml)
    code, text = invoke("extract", "--split", "trainval", "--workers", "0", *common)
    assert code == 0 and "rebuilt shard-00000.h5 (its images or annotations changed)" in text
    code, text = invoke(*args)
    assert code == 0 and "(2 run, 0 kept)" in text, text
    assert len(read_rows(tmp_path / "sweep.csv")) == 4  # the old data's rows stay, apart


ONE_IMAGE_IDS = [f"{i:06d}" for i in range(1, 13)]  # make_one_image_voc's trainval
# the fold (1-based, of 3, seed 0) that holds image 000001, the only image of cat
CAT_FOLD = next(f for f, ids in enumerate(image_folds(ONE_IMAGE_IDS, 3, 0), 1) if "000001" in ids)


@pytest.fixture(scope="module")
def one_cat(tmp_path_factory) -> list[str]:
    """Common options of a trainval split with cat in one image alone (000001), extracted on
    the patch grid and on --grid whole."""
    voc = make_one_image_voc(tmp_path_factory.mktemp("one-cat"))
    cache = tmp_path_factory.mktemp("one-cat-cache")
    common = ["--voc-root", str(voc), "--cache-dir", str(cache), *SMALL]
    for grid in ("patches", "whole"):
        code, out = invoke("extract", "--split", "trainval", "--workers", "0", "--grid", grid,
                           *common)  # fmt: skip
        assert code == 0, out
    return common


@pytest.mark.parametrize(
    ("grid", "head"), [("patches", "svm"), ("patches", "mlp"), ("whole", "svm")]
)
def test_cv_refuses_a_fold_whose_training_images_have_no_positive_of_a_class(one_cat, grid, head):
    """Holding out the one cat image leaves its fold's head nothing to learn cat from: a patch
    head would lack cat's column (and the next class would be scored with another's), the
    whole-image SVM would fail. One line names the class, the fold, the count, and the fix."""
    args = ["fit", "--grid", grid, "--head", head, "--cv", "3", *FAST, *one_cat]
    code, out = invoke(*args)
    assert code == 2 and "Traceback" not in out, out
    (line,) = error_lines(out)
    assert f"cross-validation fold {CAT_FOLD} of 3 holds every positive image of cat" in line, line
    assert "cat (1 positive image in split 'trainval')" in line, line
    assert line.endswith("drop it with --classes bus,car, or label more images"), line
    assert not re.search(r"^(cv|fit) ", out, re.M), out  # refused before any mAP or fit
    code, out = invoke(*args, "--classes", "bus,car")
    assert code == 0 and re.search(r"cv \w+: mAP [\d.]+ ± [\d.]+ over 3 folds", out), out


def test_a_sweep_on_too_many_folds_for_a_class_is_one_line(one_cat, tmp_path):
    code, out = invoke("sweep", "--grid", "whole", "--head", "svm", "--param", "C=0.1,1",
                       "--folds", "3", "--jobs", "1", "--output", str(tmp_path / "s.csv"),
                       *one_cat)  # fmt: skip
    assert code == 2 and "Traceback" not in out, out
    (line,) = error_lines(out)
    assert f"fold {CAT_FOLD} of 3 holds every positive image of cat" in line, line


def test_cv_refuses_a_fold_whose_training_images_have_no_negative_for_the_whole_image_svm(
    tmp_path,
):
    """cat in every image but one: the fold holding that one leaves the SVM of cat no
    negative image to learn from."""
    voc = make_one_image_voc(tmp_path / "voc", missing=True)
    common = ["--voc-root", str(voc), "--cache-dir", str(tmp_path / "c"), "--grid", "whole", *SMALL]
    code, out = invoke("extract", "--split", "trainval", "--workers", "0", *common)
    assert code == 0, out
    code, out = invoke("fit", "--head", "svm", "--cv", "3", "--classes", "cat", *common)
    assert code == 2 and "Traceback" not in out, out
    (line,) = error_lines(out)
    assert f"cross-validation fold {CAT_FOLD} of 3 holds every negative image of cat" in line, line
    assert "cat (1 negative image in split 'trainval')" in line, line
    assert line.endswith("choose other --classes, or label more images"), line


@pytest.mark.parametrize(
    ("folds", "says"),
    [("1", "--cv 1: give a whole number from 2 to 100"),  # out of range: before any work
     ("13", "13 cross-validation folds: need between 2 and the 12 images")],  # more than images
)  # fmt: skip
def test_cv_refuses_folds_the_images_cannot_fill(one_cat, folds, says):
    code, out = invoke("fit", "--head", "svm", "--cv", folds, *FAST, *one_cat)
    assert code == 2 and "Traceback" not in out, out
    (line,) = error_lines(out)
    assert says in line, line


def test_cross_validate_refuses_a_head_without_a_column_of_a_class(shapes_cache, monkeypatch):
    """Whatever the reason a fold's head lacks a class (here a stand-in trained without cat),
    its columns are not scored by position: the third would be background's."""
    import pipeline.training.crossval as crossval
    from pipeline.heads.linear_svm import LinearSVMHead

    cache, common = shapes_cache

    def without_cat(config, cache, classes, *, exclude):
        shard = next(cache.iter_shards())
        y = np.arange(len(shard.features)) % 3
        y[y == 2] = len(classes)  # bus, car and background: no label 2 (cat)
        return LinearSVMHead(epochs=1).fit(shard.features, y)

    monkeypatch.setattr(crossval, "train_head", without_cat)
    config = FitConfig(
        data=f"voc:{common[1]}",
        cache_dir=str(cache),
        backbone=BackboneConfig("resnet18", "random", 64),
        grid=GridConfig(3, 0.4),
        head="svm",
        svm=SVMConfig(epochs=3),
    )
    with pytest.raises(CacheError, match="fold 1 of 2: its head has no output for cat"):
        cross_validate(config, 2)


def test_a_class_in_a_few_images_all_held_out_together_asks_for_fewer_folds(tmp_path):
    """With more than one positive image, fewer folds can spread them: the fix says so."""

    class Cache:
        directory = tmp_path / "trainval-abc"

    ids = [f"{i:06d}" for i in range(6)]
    positives = np.zeros((6, 3), dtype=np.int64)
    positives[:, 0] = 5  # bus everywhere
    positives[[1, 3], 1] = 2  # car in 000001 and 000003
    positives[[2, 4], 2] = 1  # cat in 000002 and 000004
    labels = SplitLabels(ids, positives, None, positives > 0, np.ones(6, bool), None)
    config = FitConfig(split="trainval")
    classes = ("bus", "car", "cat")
    check_fold(config, Cache(), classes, labels, frozenset(ids[1:3]), 1, 3)  # one of each left
    with pytest.raises(CacheError) as refused:
        check_fold(config, Cache(), classes, labels, frozenset(ids[1:5]), 2, 3)
    assert str(refused.value) == (
        f"{Cache.directory}: cross-validation fold 2 of 3 holds every positive image of car, cat, "
        "so its training images have none to learn from: car (2 positive images in split "
        "'trainval'), cat (2 positive images in split 'trainval'); use fewer folds (fit --cv K, "
        "sweep --folds K) or drop them with --classes bus"
    )


@pytest.fixture(scope="module")
def big_objects(tmp_path_factory) -> list[str]:
    """Eight 64 px images, a car over nearly all of each but the first: on a 2-scale grid
    only the first has background patches, and few images have a label-blind sample."""
    from PIL import Image

    from pipeline.datasets.voc_writer import VocObject, VocSample, write_voc_tree
    from pipeline.datasets.voc_xml import VOC_CLASSES

    rng = np.random.default_rng(0)
    ids = [f"{i:06d}" for i in range(1, 9)]
    samples = [
        VocSample(
            image_id,
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)),
            [VocObject("car", (3, 3, 20, 20) if k == 0 else (3, 3, 62, 62))],
        )  # fmt: skip
        for k, image_id in enumerate(ids)
    ]
    root = tmp_path_factory.mktemp("big")
    voc = write_voc_tree(root / "VOC2007", samples, {"trainval": ids}, VOC_CLASSES)
    coarse = [*SMALL, "--scales", "2", "--min-scale", "0.6"]  # the later options win
    return ["--voc-root", str(voc), "--cache-dir", str(root / "cache"), *coarse, "--classes", "car"]


@pytest.mark.parametrize(
    ("head", "ratio", "cv", "message"),
    [
        ("mlp", "1", "2", "holds every image with background patches (1 image in split"),
        (
            "weak",
            "0.05",
            "2",
            "holds every positive image with a patch in its label-blind sample of car",
        ),
        (
            "weak",
            "0.1",
            "4",
            "none of its held-out images with a class has a patch in its label-blind",
        ),
    ],
)
def test_folds_without_background_or_sampled_positives_are_refused(
    big_objects, head, ratio, cv, message
):
    """Issue 19, item 11: a fold whose training rows hold no background (the MLP) or whose
    positives have no patch in their label-blind sample (the weak head) ended in a
    ValueError traceback; a held-out fold that scores no positive printed "mAP nan ± nan"."""
    common = [*big_objects, "--background-ratio", ratio]
    assert invoke("extract", "--split", "trainval", "--workers", "0", *common)[0] == 0
    code, out = invoke("fit", "--head", head, "--epochs", "1", "--cv", cv, *common)
    assert code == 2 and "Traceback" not in out and "nan" not in out, out
    (line,) = error_lines(out)
    assert message in line, line


@pytest.mark.parametrize(
    ("column", "value"),
    [("map_mean", "nan"), ("map_mean", "lots"), ("map_std", ""), ("map_folds", "1;2;x"),
     ("map_folds", "50.00")],
)  # fmt: skip
def test_a_tampered_sweep_row_is_measured_again_not_reused(swept, column, value):
    """Issue 26: a finished row is reused only when its numbers are what a sweep writes
    (finite means, one mAP per fold); a row edited or damaged is measured again."""
    out, args, _ = swept
    rows = read_rows(out)
    original = {r["key"]: dict(r) for r in rows}
    rows[0][column] = value
    write_rows(out, rows)
    code, text = invoke(*args)
    assert code == 0 and "(1 run, 3 kept)" in text, text
    again = {r["key"]: r for r in read_rows(out)}
    assert again.keys() == original.keys()
    for key, row in original.items():
        assert again[key]["map_mean"] == row["map_mean"]
