"""Which head a verb finds for a training split (issue 26, defect 12): fit, score, suggest and
curve resolve the training split's cache the same way, and a refusal names a head that
exists."""

from __future__ import annotations

import pytest
from cli_helpers import SMALL, error_lines, invoke
from synthetic_voc import make_shapes_voc


@pytest.fixture(scope="module")
def two_trees(tmp_path_factory) -> dict:
    """Tree A's trainval and tree B's test extracted into one cache, an SVM fitted without a
    dataset flag (on A, the one dataset whose trainval is cached)."""
    root = tmp_path_factory.mktemp("two")
    a = make_shapes_voc(root / "a", n_trainval=12, n_test=4, seed=0)
    b = make_shapes_voc(root / "b", n_trainval=12, n_test=8, seed=1)  # ids apart from A's
    cache = root / "cache"
    common = ["--cache-dir", str(cache), *SMALL]
    for split, voc in (("trainval", a), ("test", b)):
        code, out = invoke("extract", "--split", split, "--voc-root", str(voc), "--workers", "0",
                           *common)  # fmt: skip
        assert code == 0, out
    code, out = invoke("fit", "--head", "svm", *common)
    assert code == 0, out
    (head,) = cache.glob("trainval-*/heads/svm.safetensors")
    return {"a": a, "b": b, "cache": cache, "common": common, "head": head, "root": root}


@pytest.fixture(autouse=True)
def no_dataset_in_the_environment(monkeypatch):
    monkeypatch.delenv("MIDLEVEL_DATA", raising=False)


def test_score_without_a_dataset_finds_the_head_fit_found(two_trees):
    """fit found A's trainval without a dataset flag; score without one finds the same
    training cache, and its head scores B's test split."""
    out_csv = two_trees["root"] / "ap.csv"
    code, out = invoke("score", "--split", "test", "--head", "svm", "--output", str(out_csv),
                       *two_trees["common"])  # fmt: skip
    assert code == 0, out
    code, out = invoke("suggest", "--split", "test", "--head", "svm", "--batch", "2", "--output",
                       str(two_trees["root"] / "suggest.csv"), *two_trees["common"])  # fmt: skip
    assert code == 0 and "12 labelled already" in out, out


@pytest.mark.parametrize("verb", ["score", "suggest"])
def test_given_the_other_dataset_the_refusal_names_the_head_that_exists(two_trees, verb):
    """`score --voc-root B` looked for the head in a directory that does not exist and said
    "run pipeline fit --head svm first"; B has no trainval, so the refusal now names A's head
    and how to score with it."""
    code, out = invoke(verb, "--split", "test", "--head", "svm", "--voc-root", str(two_trees["b"]),
                       "--output", str(two_trees["root"] / f"{verb}.csv"),
                       *two_trees["common"])  # fmt: skip
    assert code == 2, out
    (line,) = error_lines(out)
    head = two_trees["head"]
    assert line.startswith(f"error: {two_trees['cache']}: no svm head fitted on split "), line
    assert f"{head} (fitted on {two_trees['a']}, split trainval)" in line, line
    assert "pass --head PATH to use it" in line, line
    code, out = invoke(verb, "--split", "test", "--head", str(head), "--voc-root",
                       str(two_trees["b"]), "--output", str(two_trees["root"] / f"{verb}.csv"),
                       *two_trees["common"])  # fmt: skip
    assert code == 0, out


def test_curve_resolves_the_training_split_as_fit_does(two_trees):
    """curve fits its own heads on the training split fit finds, and scores B's test split."""
    code, out = invoke("curve", "--heads", "svm", "--shots", "all", "--seeds", "1", "--output",
                       str(two_trees["root"] / "curve.csv"), *two_trees["common"])  # fmt: skip
    assert code == 0, out
