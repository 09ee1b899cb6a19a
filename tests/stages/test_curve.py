"""`pipeline curve` and `pipeline suggest` end to end on a synthetic tree: rows, budgets too
small for a head, resuming, the simulation's random arm, and suggestions with their sheet."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from cli_helpers import SMALL, error_lines, invoke, write_rows
from PIL import Image
from synthetic_voc import make_shapes_voc

FAST = ["--epochs", "3", "--hidden", "16", "--svm-epochs", "2", "--jobs", "2"]


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def extract(voc: Path, cache: Path, splits=("trainval", "test"), grids=("patches", "whole")):
    common = ["--voc-root", str(voc), "--cache-dir", str(cache), *SMALL]
    for grid in grids:
        for split in splits:
            code, out = invoke(
                "extract", "--split", split, "--workers", "0", "--grid", grid, *common
            )
            assert code == 0, out
    return common


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """30 trainval and 12 test images, both grids extracted: (voc dir, cache, options)."""
    root = tmp_path_factory.mktemp("curve")
    voc = make_shapes_voc(root / "data", n_trainval=30, n_test=12)
    cache = root / "cache"
    return voc, cache, extract(voc, cache)


@pytest.fixture(scope="module")
def curve(tree, tmp_path_factory):
    """Every head, k = 1, 2 and all, images = 8, two seeds."""
    _, _, common = tree
    out = tmp_path_factory.mktemp("out") / "curve.csv"
    args = ["curve", *common, *FAST, "--shots", "1,2,all", "--images", "8", "--seeds", "2",
            "--output", str(out)]  # fmt: skip
    code, text = invoke(*args)
    assert code == 0, text
    return out, args, text


def test_curve_writes_a_row_per_head_budget_and_seed(curve):
    out, _, text = curve
    rows = read_rows(out)
    assert len(rows) == 4 * 4 * 2
    assert {r["method"] for r in rows} == {
        "patches-mlp",
        "patches-svm",
        "patches-weak",
        "whole-svm",
    }
    assert {r["budget"] for r in rows} == {"shots=1", "shots=2", "images=8", "all"}
    for row in rows:
        if row["note"]:
            assert row["map"] == "" and all(row[f"ap_{c}"] == "" for c in ("bus", "car", "cat"))
        else:
            aps = [float(row[f"ap_{c}"]) for c in ("bus", "car", "cat")]
            assert float(row["map"]) == pytest.approx(sum(aps) / 3, abs=0.01)
        if row["budget"] == "all":
            assert row["images"] == "30" and not row["note"]
        if row["budget"] == "images=8":
            assert row["images"] == "8"
    # the same draw for every head: images and positives agree across methods
    for budget in ("shots=1", "shots=2", "images=8"):
        for seed in ("0", "1"):
            drawn = {
                (r["images"], r["positives_bus"], r["positives_car"], r["positives_cat"])
                for r in rows if r["budget"] == budget and r["seed"] == seed
            }  # fmt: skip
            assert len(drawn) == 1, (budget, seed, drawn)
            assert all(int(n) >= int(budget[-1]) for n in list(drawn)[0][1:] if budget[0] == "s")
    assert "curve: 32 fits (32 run, 0 kept)" in text and "fits/s" in text
    assert "patches-mlp: all 30 images give" in text
    with Image.open(out.with_suffix(".png")) as image:
        assert image.size[0] >= 600
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["kind"] == "curve" and set(sidecar["caches"]) == {r["method"] for r in rows}


def test_budgets_too_small_for_a_head_are_reported_in_their_row(tree, tmp_path):
    _, _, common = tree
    out = tmp_path / "tiny.csv"
    code, text = invoke("curve", *common, *FAST, "--heads", "mlp,whole-svm", "--shots", "1",
                        "--images", "1", "--seeds", "1", "--output", str(out))  # fmt: skip
    assert code == 0, text
    notes = {(r["method"], r["budget"]): r["note"] for r in read_rows(out)}
    # one image: two classes have no positive patch for the MLP, no negative for the SVM
    assert notes[("patches-mlp", "images=1")].startswith("no positive patch of ")
    assert notes[("patches-mlp", "images=1")].endswith("in the 1 drawn images")
    assert notes[("whole-svm", "images=1")].startswith("no ")
    assert "fits the budget could not support" in text


def svm_curve(common: list[str], out: Path) -> list[str]:
    """The arguments of a small SVM curve (shots 1 and all, two seeds), run once: 4 fits."""
    args = ["curve", *common, *FAST, "--heads", "svm", "--shots", "1,all", "--seeds", "2",
            "--output", str(out)]  # fmt: skip
    code, text = invoke(*args)
    assert code == 0 and "(4 run, 0 kept)" in text, text
    return args


def test_a_rerun_keeps_finished_rows_and_reruns_those_whose_data_changed(tmp_path):
    voc = make_shapes_voc(tmp_path / "data", n_trainval=30, n_test=12)
    cache = tmp_path / "cache"
    common = extract(voc, cache, grids=("patches",))
    out = tmp_path / "curve.csv"
    args = svm_curve(common, out)
    first = read_rows(out)
    code, text = invoke(*args)
    assert code == 0 and "(0 run, 4 kept)" in text, text
    assert read_rows(out) == first
    # a test image's truth changes: every row is scored again, none kept
    annotation = voc / "Annotations" / "000031.xml"
    annotation.write_text(
        annotation.read_text().replace("<difficult>0</difficult>", "<difficult>1</difficult>", 1)
    )
    code, text = invoke(*args)
    assert code == 2 and "pipeline extract" in text, text  # the stale cache is refused first
    extract(voc, cache, splits=("test",), grids=("patches",))
    code, text = invoke(*args)
    assert (
        code == 0 and "(4 run, 0 kept)" in text and "4 rows of other settings or data kept" in text
    ), text


def test_the_random_arm_equals_a_plain_curve_at_the_same_budgets(tree, tmp_path):
    _, _, common = tree
    out = tmp_path / "sim.csv"
    code, text = invoke("curve", *common, *FAST, "--heads", "svm", "--shots", "1", "--seeds",
                        "2", "--simulate", "uncertainty,diversity,combined", "--batch", "3",
                        "--up-to", "9", "--start", "one-per-class", "--output", str(out))  # fmt: skip
    assert code == 0, text
    rows = read_rows(out)
    random = [r for r in rows if r["arm"] == "random"]
    assert {r["round"] for r in random} >= {"0", "1", "2"}
    assert max(int(r["images"]) for r in random) == 9
    counts = sorted({r["images"] for r in random}, key=int)
    plain_out = tmp_path / "plain.csv"
    code, text = invoke("curve", *common, *FAST, "--heads", "svm", "--shots", "", "--images",
                        ",".join(counts), "--seeds", "2", "--output", str(plain_out))  # fmt: skip
    assert code == 0, text
    plain = {(r["images"], r["seed"]): r for r in read_rows(plain_out)}
    for row in random:
        twin = plain[(row["images"], row["seed"])]
        for column in ("map", "ap_bus", "ap_car", "ap_cat", "positives_car"):
            assert row[column] == twin[column], (row["images"], column)
    for strategy in ("uncertainty", "diversity", "combined"):
        arm = [r for r in rows if r["arm"] == strategy]
        assert sorted(int(r["images"]) for r in arm if r["seed"] == "0") == sorted(
            int(r["images"]) for r in random if r["seed"] == "0"
        )


def test_from_no_label_every_arm_picks_its_first_batch_and_reruns_the_same(tree, tmp_path):
    """Issue 27: a simulation starts cold by default: no fit before the first batch, which is
    random's random and the strategy's own (typical needs no head), the same at every run."""
    _, _, common = tree
    args = ["curve", *common, *FAST, "--heads", "svm", "--shots", "1", "--seeds", "1",
            "--simulate", "typical,uncertainty", "--batch", "4", "--up-to", "8"]  # fmt: skip
    rows = {}
    for run in ("first", "again"):
        code, text = invoke(*args, "--output", str(tmp_path / f"{run}.csv"))
        assert code == 0, text
        rows[run] = [r for r in read_rows(tmp_path / f"{run}.csv") if r["arm"] != "budget"]
    table = read_rows(tmp_path / "first-simulation.csv")
    fitted = {(r["arm"], r["round"]) for r in rows["first"] if r["map"]}  # a round unfit: none
    assert {(r["arm"], r["round"]) for r in table} == fitted and ("typical", "0") in fitted
    assert "patches-svm typical minus random by images (1 seed): 4: " in text, text
    assert "too few seeds paired to test" in text, text
    arms = {r["arm"] for r in rows["first"]}
    assert arms == {"random", "typical", "uncertainty"}, arms
    for arm in arms:
        mine = [r for r in rows["first"] if r["arm"] == arm]
        assert [(r["round"], r["images"]) for r in mine] == [("0", "4"), ("1", "8")], arm
        assert json.loads(mine[0]["key"])["start"] == "cold"
    same = ("arm", "round", "images", "map", "ap_bus", "ap_car", "ap_cat", "note")
    assert sorted([r[c] for c in same] for r in rows["again"]) == sorted(
        [r[c] for c in same] for r in rows["first"]
    )


def test_refusals_are_one_line(tree, tmp_path):
    _, _, common = tree
    for extra, message in (
        (["--protocol", "vissl"], "only --heads whole-svm"),
        (["--shots", "1,two"], "--shots '1,two'"),
        (["--heads", "mlp,cnn"], "unknown cnn"),
        (["--simulate", "greedy"], "--simulate 'greedy': choose one of"),
        (["--test-split", "train"], "run pipeline extract --split train first"),
    ):
        code, out = invoke("curve", *common, *extra, "--output", str(tmp_path / "x.csv"))
        assert code == 2 and len(error_lines(out)) == 1 and message in out, (extra, out)


def test_vissl_protocol_on_the_whole_image_svm(tree, tmp_path):
    _, _, common = tree
    out = tmp_path / "vissl.csv"
    code, text = invoke("curve", *common, "--heads", "whole-svm", "--protocol", "vissl",
                        "--shots", "2", "--seeds", "1", "--jobs", "1", "--output", str(out))  # fmt: skip
    assert code == 0, text
    (row,) = read_rows(out)
    assert row["note"] == "" and float(row["map"]) > 0
    assert all(row[f"positives_{c}"] == "2" for c in ("bus", "car", "cat"))


def test_suggest_ranks_a_pool_and_draws_its_sheet(tree, tmp_path):
    _, _, common = tree
    code, out = invoke("fit", *common, "--head", "svm", "--svm-epochs", "2")
    assert code == 0, out
    csv_path = tmp_path / "suggest.csv"
    code, out = invoke("suggest", *common, "--head", "svm", "--split", "test", "--batch", "4",
                       "--output", str(csv_path))  # fmt: skip
    assert code == 0, out
    rows = read_rows(csv_path)
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4"]
    assert len({r["image"] for r in rows}) == 4
    assert all(Path(r["path"]).is_file() and r["strategy"] == "typical" for r in rows)
    assert all(len(r["top_classes"].split("; ")) == 3 for r in rows)
    assert csv_path.with_suffix(".png").is_file()
    assert "suggest: 4 of 12 pool images" in out
    code, out = invoke("suggest", *common, "--head", "svm", "--split", "trainval",
                       "--output", str(csv_path))  # fmt: skip
    assert code == 2 and "no image outside the training split" in out, out


def test_suggest_picks_a_first_batch_with_no_head(tree, tmp_path):
    """Issue 27, cold start: no labels, no head; a strategy that needs none ranks the pool."""
    _, _, common = tree
    csv_path = tmp_path / "first.csv"
    args = ["suggest", *common, "--head", "none", "--split", "test", "--batch", "4"]
    code, out = invoke(*args, "--output", str(csv_path))  # the default, typical, needs no head
    assert code == 0, out
    rows = read_rows(csv_path)
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4"] and len(
        {r["image"] for r in rows}
    ) == 4
    assert all(r["strategy"] == "typical" and r["top_classes"] == "" for r in rows)
    assert all(Path(r["path"]).is_file() for r in rows) and csv_path.with_suffix(".png").is_file()
    assert (
        "suggest: 4 of 12 pool images to label next by typical (no label yet: a first batch)" in out
    )
    sidecar = json.loads(csv_path.with_suffix(".json").read_text())
    assert sidecar["head"] is None and sidecar["labelled"] is None
    code, again = invoke(*args, "--strategy", "typical", "--output", str(tmp_path / "b.csv"))
    assert read_rows(tmp_path / "b.csv") == rows  # the same pool, the same batch
    code, out = invoke(*args, "--strategy", "combined", "--output", str(csv_path))
    (line,) = error_lines(out)  # combined needs a head
    assert code == 2 and "--head none" in line and "typical" in line, out
    code, out = invoke(*args, "--strategy", "auto", "--output", str(tmp_path / "auto.csv"))
    assert code == 0 and "to label next by typical (auto: no head yet)" in out, out
    assert read_rows(tmp_path / "auto.csv") == [{**r, "strategy": "typical"} for r in rows]
    sidecar = json.loads((tmp_path / "auto.json").read_text())
    assert sidecar["strategy"] == {"asked": "auto", "used": "typical", "why": "no head yet"}


def test_suggest_auto_says_what_it_chose_and_why(tree, tmp_path):
    """Issue 27, item 6: with a head, auto is typical while a class has few labelled
    positives, then balanced; the summary line, the CSV and its sidecar say which and why."""
    _, _, common = tree
    code, out = invoke("fit", *common, "--head", "svm", "--svm-epochs", "2")
    assert code == 0, out
    csv_path = tmp_path / "auto.csv"
    code, out = invoke("suggest", *common, "--head", "svm", "--split", "test", "--batch", "4",
                       "--strategy", "auto", "--output", str(csv_path))  # fmt: skip
    assert code == 0, out
    chosen = json.loads(csv_path.with_suffix(".json").read_text())["strategy"]
    assert chosen["asked"] == "auto" and chosen["used"] in ("typical", "balanced"), chosen
    assert f"to label next by {chosen['used']} (auto: {chosen['why']})" in out, out
    assert {r["strategy"] for r in read_rows(csv_path)} == {chosen["used"]}


def extracted_pool(voc: Path, cache: Path, common: list[str], photos: Path):
    """(options, head file) of a pool of plain photos extracted with the tree's settings."""
    options = [a for a in common if a not in ("--voc-root", str(voc))]
    pool = ["--data", f"images:{photos}", *options]
    code, out = invoke("extract", *pool, "--split", "pool", "--workers", "0")
    assert code == 0, out
    (head,) = cache.glob("trainval-*/heads/svm.safetensors")
    return pool, head


def test_suggest_on_plain_photos_passes_over_a_near_duplicate(tree, tmp_path):
    voc, cache, common = tree
    code, out = invoke("fit", *common, "--head", "svm", "--svm-epochs", "2")
    assert code == 0, out
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("000031", "000032", "000033", "000034", "000035"):
        shutil.copy(voc / "JPEGImages" / f"{name}.jpg", photos / f"{name}.jpg")
    shutil.copy(voc / "JPEGImages" / "000031.jpg", photos / "copy-of-000031.jpg")
    pool, head = extracted_pool(voc, cache, common, photos)
    csv_path = tmp_path / "suggest.csv"
    code, out = invoke("suggest", *pool, "--split", "pool", "--head", str(head), "--strategy",
                       "diversity", "--batch", "5", "--output", str(csv_path))  # fmt: skip
    assert code == 0, out
    chosen = [r["image"] for r in read_rows(csv_path)]
    assert len({"000031", "copy-of-000031"} & set(chosen)) == 1, chosen
    assert len(chosen) == 5 and "30 labelled already" in out, out[-400:]
    assert all(Path(r["path"]).parent == photos for r in read_rows(csv_path))


def test_suggest_keeps_pool_photos_named_like_training_images(tree, tmp_path):
    """Issue 26, item 6: a pool of new photos named 000001.jpg..000012.jpg beside a training
    split with those ids lost 11 of them ("1 of 1 pool images"). Only the same image is left
    out: here the one photo whose bytes are a training image's, under another name."""
    voc, cache, common = tree
    code, out = invoke("fit", *common, "--head", "svm", "--svm-epochs", "2")
    assert code == 0, out
    photos = tmp_path / "photos"
    photos.mkdir()
    tests = (voc / "ImageSets" / "Main" / "test.txt").read_text().split()
    for n, name in enumerate(tests, 1):  # new photos (the test split's) under trainval's ids
        shutil.copy(voc / "JPEGImages" / f"{name}.jpg", photos / f"{n:06d}.jpg")
    trainval = (voc / "ImageSets" / "Main" / "trainval.txt").read_text().split()
    assert {f"{n:06d}" for n in range(1, 13)} <= set(trainval)
    shutil.copy(voc / "JPEGImages" / f"{trainval[-1]}.jpg", photos / "labelled-already.jpg")
    pool, head = extracted_pool(voc, cache, common, photos)
    csv_path = tmp_path / "suggest.csv"
    code, out = invoke("suggest", *pool, "--split", "pool", "--head", str(head), "--batch",
                       "20", "--output", str(csv_path))  # fmt: skip
    assert code == 0, out
    chosen = {r["image"] for r in read_rows(csv_path)}
    assert chosen == {f"{n:06d}" for n in range(1, 13)}, chosen
    assert "12 of 12 pool images" in out and "1 pool image is a training image" in out, out


def test_curve_with_its_default_heads_runs_those_whose_grid_is_extracted(tmp_path):
    """Issue 26: a user who extracted the patch grid only, as the README shows, was refused
    for want of the whole-image SVM's features. The default heads now run the three patch
    heads and say what to extract for whole-svm; a head asked for by name is still refused."""
    voc = make_shapes_voc(tmp_path / "data", n_trainval=12, n_test=6)
    common = extract(voc, tmp_path / "cache", grids=("patches",))
    out = tmp_path / "curve.csv"
    args = ["curve", *common, *FAST, "--shots", "all", "--seeds", "1", "--output", str(out)]
    code, text = invoke(*args)
    assert code == 0, text
    assert {r["method"] for r in read_rows(out)} == {"patches-mlp", "patches-svm", "patches-weak"}
    summary = text.strip().splitlines()[-1]
    assert "whole-svm left out: no --grid whole features (pipeline extract --split trainval " \
        "and --split test --grid whole" in summary, summary  # fmt: skip
    code, text = invoke(*args, "--heads", "mlp,whole-svm")
    assert code == 2 and "no 'trainval' features with these settings" in text, text


@pytest.mark.parametrize(
    ("column", "value"),
    [("map", "nan"), ("map", "lots"), ("map", "250"), ("ap_car", "x"), ("images", "-3")],
)
def test_a_tampered_curve_row_is_measured_again_not_reused(tree, tmp_path, column, value):
    """Issue 26: a finished row is reused only when it holds what curve writes (APs and mAP
    in [0, 100] or blank with a note, whole counts); an edited or damaged one is fitted again."""
    _, _, common = tree
    out = tmp_path / "curve.csv"
    args = svm_curve(common, out)
    first = read_rows(out)
    rows = [dict(r) for r in first]
    rows[0][column] = value
    write_rows(out, rows)
    code, text = invoke(*args)
    assert code == 0 and "(1 run, 3 kept)" in text, text
    again = {r["key"]: r for r in read_rows(out)}
    assert {k: r["map"] for k, r in again.items()} == {r["key"]: r["map"] for r in first}
