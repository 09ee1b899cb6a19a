"""Heads on disk: a pair (estimator, record) that is whole or refused, found by name or path."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.errors import CacheError
from pipeline.head_store import find_head, head_path, load_head_file, save_head
from pipeline.heads import LinearSVMHead


def fitted(seed: int) -> LinearSVMHead:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(60, 4)).astype(np.float32)
    return LinearSVMHead(epochs=2, seed=seed).fit(X, (X[:, 0] > 0).astype(int))


def test_save_then_load_round_trips_with_its_record(tmp_path):
    path = head_path(tmp_path / "trainval-abc", "svm")
    head = fitted(0)
    save_head(path, head, {"head": "svm", "classes": ["a"]})
    back, record = load_head_file(path)
    assert record["classes"] == ["a"] and len(record["joblib_sha256"]) == 64
    X = np.ones((3, 4), np.float32)
    np.testing.assert_array_equal(back.decision_function(X), head.decision_function(X))
    assert sorted(p.name for p in path.parent.iterdir()) == ["svm.joblib", "svm.json"]


def test_a_fit_killed_between_its_two_writes_is_refused_not_mixed(tmp_path, monkeypatch):
    """Ctrl-C after the new estimator is renamed, before its record is: the old record would
    pair the new head with another fit's classes; loading refuses the pair instead."""
    path = head_path(tmp_path / "trainval-abc", "svm")
    save_head(path, fitted(0), {"head": "svm", "classes": ["old"]})
    import pipeline.head_store as store

    real = store.write_atomically

    def interrupted(target, data):
        if target.suffix == ".json":
            raise KeyboardInterrupt
        real(target, data)

    monkeypatch.setattr(store, "write_atomically", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_head(path, fitted(1), {"head": "svm", "classes": ["new"]})
    assert json.loads(path.with_suffix(".json").read_text())["classes"] == ["old"]
    with pytest.raises(CacheError, match="come from different fits"):
        load_head_file(path)


def test_find_head_by_name_path_or_refusal(tmp_path):
    for split in ("trainval-abc", "train-def"):
        save_head(head_path(tmp_path / split, "svm"), fitted(0), {"head": "svm"})
    save_head(head_path(tmp_path / "trainval-abc", "mlp"), fitted(0), {"head": "mlp"})
    assert find_head("mlp", tmp_path) == head_path(tmp_path / "trainval-abc", "mlp")
    given = head_path(tmp_path / "train-def", "svm")
    assert find_head(str(given), tmp_path) == given
    with pytest.raises(CacheError, match="several heads are named 'svm'"):
        find_head("svm", tmp_path)
    with pytest.raises(CacheError, match="no head named 'knn'"):
        find_head("knn", tmp_path)
