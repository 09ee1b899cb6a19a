"""VOC 2012 Action: parsing, person samples, and the whole pipeline with --task action."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import SMALL, invoke, read_ap
from PIL import Image
from synthetic_action import SYNTHETIC_ACTIONS, make_action_voc

from pipeline.config import TaskConfig
from pipeline.datasets.voc import VocDataset
from pipeline.datasets.voc_action import enlarge
from pipeline.datasets.voc_xml import ACTIONS, parse_annotation
from pipeline.errors import DataError
from pipeline.reporting.plots import BORDER, DPI, HEADER_INCHES, LABEL_INCHES, THUMB
from pipeline.training.methods import METHODS

PERSON = """<object><name>person</name>
  <bndbox><xmin>11</xmin><ymin>21</ymin><xmax>50</xmax><ymax>80</ymax></bndbox>{actions}</object>"""


def write_xml(path: Path, *objects: str) -> Path:
    path.write_text(
        "<annotation><size><width>100</width><height>100</height></size>"
        + "".join(objects)
        + "</annotation>"
    )
    return path


def flags(**values: int) -> str:
    return "<actions>" + "".join(f"<{a}>{v}</{a}>" for a, v in values.items()) + "</actions>"


def test_parse_actions_several_persons_and_actions(tmp_path):
    path = write_xml(
        tmp_path / "a.xml",
        PERSON.format(actions=flags(jumping=1, running=1, phoning=0)),
        PERSON.format(actions=flags(reading=1)),
        PERSON.format(actions=""),  # no <actions>: not in the action task
        PERSON.format(actions="<actions></actions>"),  # all flags missing: no action
    )
    persons = parse_annotation(path).objects
    assert [p.actions for p in persons] == [("jumping", "running"), ("reading",), None, ()]


def test_bad_action_flag_names_the_file(tmp_path):
    path = write_xml(tmp_path / "a.xml", PERSON.format(actions=flags(jumping=2)))
    with pytest.raises(DataError, match="not 0 or 1") as exc:
        parse_annotation(path)
    assert str(path) in str(exc.value)


def test_enlarge_grows_the_box_and_stays_in_the_image():
    assert enlarge((20, 20, 40, 60), 0.5, 100, 100) == (15, 10, 45, 70)
    assert enlarge((0, 0, 40, 60), 1.0, 50, 70) == (0, 0, 50, 70)


@pytest.fixture(scope="module")
def action_voc(tmp_path_factory) -> Path:
    return make_action_voc(tmp_path_factory.mktemp("action"))


def test_samples_are_the_listed_persons_with_their_flags(action_voc):
    task = VocDataset(action_voc).load("train", task=TaskConfig("action"))
    assert task.classes == ACTIONS
    lines = (action_voc / "ImageSets" / "Action" / "jumping_train.txt").read_text().splitlines()
    listed = [f"{i}/{j}" for i, j, _ in (line.split() for line in lines)]
    assert [s.sample_id for s in task.samples] == listed  # persons without <actions> left out
    jumping = ACTIONS.index("jumping")
    assert [int(v) for _, _, v in (line.split() for line in lines)] == task.truth[
        :, jumping
    ].tolist()
    several = [s for s, row in zip(task.samples, task.truth, strict=True) if (row == 1).sum() == 2]
    assert several and all(s.difficult.all() for s in several)  # labels no patch, still scored
    single = task.samples[0]
    x0, y0, x1, y1 = single.boxes[0]
    assert single.region == enlarge((x0, y0, x1, y1), 0.5, single.width, single.height)


def test_truth_from_xml_when_the_split_files_lack_labels(action_voc, tmp_path):
    year = tmp_path / "VOC2012"
    shutil.copytree(action_voc, year)
    for path in (year / "ImageSets" / "Action").glob("*_train.txt"):
        path.unlink()
    from_xml = VocDataset(year).load("train", task=TaskConfig("action"))
    from_files = VocDataset(action_voc).load("train", task=TaskConfig("action"))
    assert [s.sample_id for s in from_xml.samples] == [s.sample_id for s in from_files.samples]
    np.testing.assert_array_equal(from_xml.truth, from_files.truth)


def test_not_an_action_tree_is_one_clear_error(shapes_voc):
    with pytest.raises(DataError, match="needs a VOC 2012 Action tree"):
        VocDataset(shapes_voc).load("train", task=TaskConfig("action"))


def test_action_pipeline_far_above_chance_and_export(action_voc, tmp_path):
    common = [
        "--voc-root",
        str(action_voc),
        "--cache-dir",
        str(tmp_path / "c"),
        "--task",
        "action",
        *SMALL,
    ]
    for split in ("train", "val"):
        code, out = invoke("extract", "--split", split, "--workers", "0", *common)
        assert code == 0, out
    code, out = invoke("fit", "--split", "train", "--head", "svm", *common)
    assert code == 0 and f"{len(SYNTHETIC_ACTIONS)} classes" in out, out
    ap_csv = tmp_path / "action.csv"
    code, out = invoke("score", "--split", "val", "--train-split", "train", "--head", "svm",
                       "--output", str(ap_csv), "--export", str(tmp_path / "sub"), *common)  # fmt: skip
    assert code == 0, out
    ap = read_ap(ap_csv)
    assert set(ap) == {*SYNTHETIC_ACTIONS, "mean"}
    # each action is on about a third of the persons: chance AP is about 33
    assert ap["mean"] > 80, ap
    exported = tmp_path / "sub" / "results" / "VOC2012" / "Action" / "comp10_action_val_jumping.txt"
    rows = [line.split() for line in exported.read_text().splitlines()]
    with open(tmp_path / "action-scores.csv") as handle:
        scores = list(csv.DictReader(handle))
    assert [f"{i}/{j}" for i, j, _ in rows] == [r["image_id"] for r in scores]
    assert [float(v) for _, _, v in rows] == pytest.approx(
        [float(r["jumping"]) for r in scores], abs=1e-5
    )


def test_a_bad_annotation_becomes_one_sample_to_skip(action_voc, tmp_path):
    """--on-error skip: an image whose XML is broken stands as one sample carrying the error,
    so the other persons keep their places and the error reaches the shard's metadata."""
    year = Path(shutil.copytree(action_voc, tmp_path / "VOC2012"))
    clean = VocDataset(year).load("train", task=TaskConfig("action"))
    broken = clean.samples[0].sample_id.split("/")[0]
    (year / "Annotations" / f"{broken}.xml").write_text("<annotation><size>")
    with pytest.raises(DataError, match="malformed XML"):
        VocDataset(year).load("train", task=TaskConfig("action"))
    task = VocDataset(year).load("train", task=TaskConfig("action"), skip_bad=True)
    bad = [s for s in task.samples if s.error]
    assert [s.sample_id for s in bad] == [f"{broken}/0"] and "malformed XML" in bad[0].error
    kept = [s.sample_id for s in task.samples if not s.error]
    assert kept == [s.sample_id for s in clean.samples if s.sample_id.split("/")[0] != broken]


def sheet_size(n_classes: int, top: int = 6) -> tuple[int, int]:
    """(width, height) in pixels of a contact sheet of `n_classes` rows, `top` images an end."""
    cell = THUMB + 2 * BORDER
    return (2 * top * cell + cell // 2 + round(LABEL_INCHES * DPI),
            n_classes * cell + round(HEADER_INCHES * DPI))  # fmt: skip


def test_compare_and_report_on_an_action_run(action_voc, tmp_path):
    """compare --task action fits every method on the action caches and scores them there
    (not under the object task's digest); report reads a run's person ids (<image>/<person>)
    back to their images from its sidecar alone."""
    common = ["--voc-root", str(action_voc), "--cache-dir", str(tmp_path / "c"), "--task",
              "action", *SMALL]  # fmt: skip
    for grid in ("patches", "whole"):
        for split in ("train", "val"):
            code, out = invoke("extract", "--split", split, "--grid", grid, "--workers", "0",
                               *common)  # fmt: skip
            assert code == 0, out
    output = tmp_path / "compare"
    code, out = invoke("compare", "--split", "train", "--test-split", "val", "--epochs", "6",
                       "--hidden", "32", "--output", str(output), *common)  # fmt: skip
    assert code == 0, out
    persons = len(VocDataset(action_voc).load("val", task=TaskConfig("action")).samples)
    for name in METHODS:
        ap = read_ap(output / f"{name}.csv")
        assert set(ap) == {*SYNTHETIC_ACTIONS, "mean"}, (name, ap)
        # each action is on about a third of the persons: chance AP is about 33; the weak
        # head learns from person labels alone, in 6 short epochs (measured 59-91, mean 72)
        low, mean = (45, 60) if name == "patches-weak" else (60, 75)
        assert min(ap[a] for a in SYNTHETIC_ACTIONS) > low and ap["mean"] > mean, (name, ap)
        assert f"{name} {ap['mean']:.2f}" in out
        with open(output / f"{name}-scores.csv") as handle:
            ids = [row["image_id"] for row in csv.DictReader(handle)]
        assert len(ids) == persons and all(i.count("/") == 1 for i in ids), name
        with Image.open(output / f"contact-{name}.png") as sheet:
            assert sheet.size == sheet_size(len(SYNTHETIC_ACTIONS)), name
    table = (output / "results.md").read_text()
    assert all(name in table for name in METHODS)
    assert "skipped" not in out, out  # every run's contact sheet was drawn

    run = output / "patches-svm.csv"
    report = tmp_path / "report"
    code, out = invoke("report", str(run), "--output", str(report), "--top", "3")
    assert code == 0 and "skipped" not in out, out
    with Image.open(report / "contact-svm.png") as sheet:
        assert sheet.size == sheet_size(len(SYNTHETIC_ACTIONS), top=3)
    assert f"{read_ap(run)['mean']:.1f}" in (report / "results.md").read_text()


def test_an_image_id_with_spaces_keeps_its_persons_and_labels(action_voc, tmp_path):
    """ImageSets/Action lines are `<image id> <person> [label]`: split from the right, so an
    id with a space is whole (issue 19)."""
    year = Path(shutil.copytree(action_voc, tmp_path / "VOC2012"))
    clean = VocDataset(action_voc).load("train", task=TaskConfig("action"))
    first = clean.samples[0].sample_id.split("/")[0]
    spaced = "photo 1 2"  # ends in digits, as a person and a label would
    (year / "Annotations" / f"{first}.xml").rename(year / "Annotations" / f"{spaced}.xml")
    (year / "JPEGImages" / f"{first}.jpg").rename(year / "JPEGImages" / f"{spaced}.jpg")
    for path in (year / "ImageSets").rglob("*.txt"):
        path.write_text(path.read_text().replace(first, spaced))
    task = VocDataset(year).load("train", task=TaskConfig("action"))
    assert [s.sample_id for s in task.samples] == [
        s.sample_id.replace(first, spaced) for s in clean.samples
    ]
    np.testing.assert_array_equal(task.truth, clean.truth)
    assert task.samples[0].image_path == year / "JPEGImages" / f"{spaced}.jpg"
