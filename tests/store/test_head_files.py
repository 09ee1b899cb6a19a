"""Heads on disk: the estimator and its record in one file (a readable .json copy beside
it), whole after any interruption, found by name or path."""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import CacheSettings
from pipeline.errors import CacheError
from pipeline.heads.linear_svm import LinearSVMHead
from pipeline.store.cache import head_path
from pipeline.store.head_files import (
    HeadRecord,
    find_head,
    head_of_split,
    load_head_file,
    save_head,
)
from pipeline.store.keys import CacheKey


def fitted(seed: int) -> LinearSVMHead:
    """A head of one class and the background (label 1), as fit makes them."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(60, 4)).astype(np.float32)
    head = LinearSVMHead(epochs=2, class_weight={1: 1.0}, seed=seed)
    return head.fit(X, (X[:, 0] > 0).astype(int))


def test_save_then_load_round_trips_with_its_record(tmp_path):
    path = head_path(tmp_path / "trainval-abc", "svm")
    head = fitted(0)
    save_head(path, head, HeadRecord(head="svm", classes=("a",)))
    back, record = load_head_file(path)
    assert record.classes == ("a",) and len(record.sha256) == 64
    X = np.ones((3, 4), np.float32)
    np.testing.assert_array_equal(back.decision_function(X), head.decision_function(X))
    assert sorted(p.name for p in path.parent.iterdir()) == ["svm.json", "svm.safetensors"]


X = np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4)


def assert_is(loaded, record, head: LinearSVMHead, classes: list[str]) -> None:
    """`loaded` and `record` are exactly `head` and its classes: never one fit's estimator
    with another's record."""
    assert record.classes == tuple(classes)
    np.testing.assert_array_equal(loaded.decision_function(X), head.decision_function(X))


def assert_pair_on_disk_agrees(path) -> dict:
    """The .json beside the head file is the record of that file (its SHA-256)."""
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    return record


def full_disk() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# (file interrupted, when, what stops the save, which head must load afterwards)
POINTS = [
    (".safetensors", "before", KeyboardInterrupt, "old"),
    (".safetensors", "before", full_disk, "old"),
    (".safetensors", "during", KeyboardInterrupt, "old"),
    (".safetensors", "during", full_disk, "old"),
    (".safetensors", "killed", KeyboardInterrupt, "old"),
    (".json", "before", KeyboardInterrupt, "new"),  # between the two writes
    (".json", "before", full_disk, "new"),
    (".json", "during", KeyboardInterrupt, "new"),
    (".json", "during", full_disk, "new"),
    (".json", "killed", KeyboardInterrupt, "new"),
]


@pytest.mark.parametrize(
    ("suffix", "when", "stop", "expected"),
    POINTS,
    ids=[f"{s[1:]}-{w}-{getattr(e, '__name__', 'x')}" for s, w, e, _ in POINTS],
)
def test_an_interrupted_save_leaves_the_old_head_or_the_new_one_whole(
    tmp_path, monkeypatch, suffix, when, stop, expected
):
    """Ctrl-C or a full disk before, during or after either write (a SIGKILL leaving a
    temporary file behind, too): loading gives exactly the previous head or exactly the new
    one, with its own classes, never a refusal and never a mix; the .json is made to agree."""
    import pipeline.io as shards
    import pipeline.store.head_files as store

    path = head_path(tmp_path / "trainval-abc", "svm")
    old, new = fitted(0), fitted(1)
    save_head(path, old, HeadRecord(head="svm", classes=("old",)))
    real_write, real_fsync = store.write_atomically, shards.os.fsync

    def write(target, data):
        if target.suffix != suffix:
            return real_write(target, data)
        if when == "before":
            raise stop()
        if when == "killed":  # its temporary file half written, never renamed
            target.with_name(f"{target.name}.tmp-99999").write_bytes(bytes(data)[: len(data) // 2])
            raise stop()

        def fsync(fd: int) -> None:  # "during": the bytes are out, the fsync fails
            if f"{suffix}.tmp-" in os.readlink(f"/proc/self/fd/{fd}"):
                raise stop()
            real_fsync(fd)

        monkeypatch.setattr(shards.os, "fsync", fsync)
        try:
            real_write(target, data)
        finally:
            monkeypatch.setattr(shards.os, "fsync", real_fsync)

    monkeypatch.setattr(store, "write_atomically", write)
    with pytest.raises((KeyboardInterrupt, OSError, CacheError)):
        save_head(path, new, HeadRecord(head="svm", classes=("new",)))
    monkeypatch.setattr(store, "write_atomically", real_write)
    loaded, record = load_head_file(path)
    if expected == "old":
        assert_is(loaded, record, old, ["old"])
    else:
        assert_is(loaded, record, new, ["new"])
    assert HeadRecord.from_dict(assert_pair_on_disk_agrees(path)) == record
    again, record_again = load_head_file(path)  # and it stays so
    assert record_again == record
    np.testing.assert_array_equal(again.decision_function(X), loaded.decision_function(X))


def test_a_fit_killed_between_its_two_writes_loads_the_new_head_and_mends_its_record(
    tmp_path, monkeypatch
):
    """Ctrl-C after the new head file is renamed, before its .json is: the file carries its
    own record, so the new head loads with the new classes, and the stale .json (the old
    fit's) is rewritten from it."""
    path = head_path(tmp_path / "trainval-abc", "svm")
    save_head(path, fitted(0), HeadRecord(head="svm", classes=("old",)))
    import pipeline.store.head_files as store

    real = store.write_atomically

    def interrupted(target, data):
        if target.suffix == ".json":
            raise KeyboardInterrupt
        real(target, data)

    monkeypatch.setattr(store, "write_atomically", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_head(path, fitted(1), HeadRecord(head="svm", classes=("new",)))
    monkeypatch.setattr(store, "write_atomically", real)
    assert json.loads(path.with_suffix(".json").read_text())["classes"] == ["old"]
    head, record = load_head_file(path)
    assert_is(head, record, fitted(1), ["new"])
    assert assert_pair_on_disk_agrees(path)["classes"] == ["new"]


def test_a_missing_record_is_rebuilt_and_a_read_only_folder_still_loads(tmp_path, monkeypatch):
    """No .json at all (deleted, or the first fit killed before it): rebuilt from the head file.
    Where it cannot be written (a read-only cache), the head loads all the same."""
    import pipeline.store.head_files as store

    path = head_path(tmp_path / "trainval-abc", "svm")
    head = fitted(2)
    save_head(path, head, HeadRecord(head="svm", classes=("a",), k=3.0))
    written = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").unlink()

    def read_only(target, data):
        raise CacheError(f"{target}: cannot write it (Read-only file system)")

    monkeypatch.setattr(store, "write_atomically", read_only)
    loaded, record = load_head_file(path)
    assert_is(loaded, record, head, ["a"])
    assert record == HeadRecord.from_dict(written) and not path.with_suffix(".json").exists()
    monkeypatch.undo()
    loaded, record = load_head_file(path)
    assert record == HeadRecord.from_dict(written) and assert_pair_on_disk_agrees(path) == written


def test_a_json_that_agrees_with_its_head_file_is_the_record_read(tmp_path):
    """A .json whose SHA-256 is its head file's is that head's record as it is on disk (what
    predict's and score's settings checks read; a copied heads/ folder keeps it)."""
    path = head_path(tmp_path / "trainval-abc", "svm")
    save_head(path, fitted(0), HeadRecord(head="svm", classes=("a",), fingerprint={"w": "x"}))
    record = json.loads(path.with_suffix(".json").read_text())
    record["fingerprint"]["w"] = "edited"
    path.with_suffix(".json").write_text(json.dumps(record))
    assert load_head_file(path)[1].fingerprint == {"w": "edited"}


def test_a_head_of_the_old_format_loads_and_a_mismatched_old_pair_is_refused(tmp_path):
    """Heads saved before the record went into the .joblib (a bare estimator, trusted): the
    .json is their only record, checked by its SHA-256 as before."""
    import joblib

    path = head_path(tmp_path / "trainval-abc", "svm").with_suffix(".joblib")
    path.parent.mkdir(parents=True)
    head = fitted(3)
    joblib.dump(head, path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_suffix(".json").write_text(json.dumps({"classes": ["x"], "joblib_sha256": sha}))
    loaded, record = load_head_file(path, trust_pickle=True)
    assert_is(loaded, record, head, ["x"])
    joblib.dump(fitted(4), path)
    with pytest.raises(CacheError, match="come from different fits"):
        load_head_file(path, trust_pickle=True)
    path.with_suffix(".json").unlink()
    with pytest.raises(CacheError, match="record svm.json is missing or unreadable"):
        load_head_file(path, trust_pickle=True)


def test_find_head_by_name_path_or_refusal(tmp_path):
    for split in ("trainval-abc", "train-def"):
        save_head(head_path(tmp_path / split, "svm"), fitted(0), HeadRecord(head="svm"))
    save_head(head_path(tmp_path / "trainval-abc", "mlp"), fitted(0), HeadRecord(head="mlp"))
    assert find_head("mlp", tmp_path) == head_path(tmp_path / "trainval-abc", "mlp")
    given = head_path(tmp_path / "train-def", "svm")
    assert find_head(str(given), tmp_path) == given
    with pytest.raises(CacheError, match="several heads are named 'svm'"):
        find_head("svm", tmp_path)
    with pytest.raises(CacheError, match="no head named 'knn'"):
        find_head("knn", tmp_path)


def test_a_head_beside_no_features_is_not_offered_by_name(tmp_path):
    """A heads/ folder whose directory holds no fingerprint.json (its features deleted) is no
    trained head to point the user to: the refusal says there is none, in one line."""
    save_head(head_path(tmp_path / "trainval-abc", "mlp"), fitted(0), HeadRecord(head="mlp"))
    key = CacheKey({"format": 2, "backbone": {"name": "resnet18"}})
    with pytest.raises(CacheError, match="no mlp head fitted on split 'trainval'"):
        head_of_split(CacheSettings(cache_dir=str(tmp_path)), "trainval", "mlp", None, key)


@pytest.mark.parametrize(
    ("module", "former"),
    [
        ("pipeline.heads.linear_svm", "pipeline.heads"),
        ("pipeline.heads.image_svm", "pipeline.image_head"),
    ],
)
def test_a_head_pickled_under_its_former_module_loads(tmp_path, monkeypatch, module, former):
    """Heads saved before the library was grouped into packages name their class by its old
    module (pipeline.heads.LinearSVMHead, pipeline.image_head.ImageSVMHead): trusted, they load."""
    import importlib
    import sys

    import joblib

    estimator_type = {"pipeline.heads.linear_svm": "LinearSVMHead"}.get(module, "ImageSVMHead")
    cls = getattr(importlib.import_module(module), estimator_type)
    X = np.linspace(-1, 1, 40, dtype=np.float32).reshape(10, 4)
    if estimator_type == "LinearSVMHead":  # one class and the background
        head = cls(epochs=2, class_weight={1: 1.0}).fit(X, (X[:, 0] > 0).astype(int))
    else:  # one column per class
        head = cls().fit(X, np.where(X[:, :1] > 0, 1, -1))
    path = head_path(tmp_path / "trainval-abc", "svm").with_suffix(".joblib")
    path.parent.mkdir(parents=True)
    with monkeypatch.context() as old_layout:  # pickled as the former code named it
        old_layout.setattr(cls, "__module__", former)
        old_layout.setitem(sys.modules, former, importlib.import_module(module))
        joblib.dump(
            {"format": "midlevel-head/2", "estimator": head, "record": {"classes": ["a"]}}, path
        )
    assert former.encode() in path.read_bytes()
    monkeypatch.delitem(sys.modules, "pipeline.image_head", raising=False)
    loaded, record = load_head_file(path, trust_pickle=True)
    assert type(loaded) is cls and record.classes == ("a",)
    np.testing.assert_array_equal(loaded.decision_function(X), head.decision_function(X))


class Payload:
    """What a crafted pickle carries: unpickling it runs `touch <target>`."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_a_pickled_head_runs_no_code_unless_trusted(tmp_path):
    """Issue 19, item 10: `--head FILE` and `load_head` unpickled any .joblib, so a crafted
    one ran its code (then a KeyError traceback). A pickle is now refused in one line naming
    the option that trusts it, and nothing of it runs."""
    import joblib
    from cli_helpers import error_lines, invoke

    from pipeline import load_head

    ran = tmp_path / "ran"
    path = tmp_path / "heads" / "evil.joblib"
    path.parent.mkdir()
    joblib.dump({"format": "midlevel-head/2", "estimator": Payload(ran), "record": {}}, path)
    with pytest.raises(CacheError, match="--trust-pickled-head"):
        load_head(path)
    code, out = invoke("predict", "--head", str(path), str(tmp_path / "photo.jpg"))
    (line,) = error_lines(out)
    assert code == 2 and "runs any code it holds" in line, out
    assert not ran.exists()


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (
            lambda meta: {**meta, "state": meta["state"].replace("LinearSVMHead", "os.system")},
            "is not a class a head file may hold",
        ),
        (
            lambda meta: {**meta, "record": json.dumps({"classes": "abc"})},
            "its record's 'classes' is 'abc'",
        ),
        (
            lambda meta: {**meta, "record": json.dumps({"classes": ["a"], "k": -1})},
            "its record's 'k' is -1",
        ),
        (lambda meta: {**meta, "format": "pickle"}, "format 'pickle'"),
    ],
)
def test_a_head_file_that_midlevel_did_not_write_is_one_line(tmp_path, spoil, message):
    """A head file is arrays and JSON: a foreign class, a record of the wrong types or another
    format is refused naming the file, never a traceback and never an import of its choosing."""
    from safetensors.numpy import load, save

    path = head_path(tmp_path / "trainval-abc", "svm")
    save_head(path, fitted(0), HeadRecord(head="svm", classes=("a",)))
    data = path.read_bytes()
    meta = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])["__metadata__"]
    path.write_bytes(save(load(data), metadata=spoil(meta)))
    path.with_suffix(".json").unlink()
    with pytest.raises(CacheError) as info:
        load_head_file(path)
    assert str(info.value).startswith(f"{path}: not a head midlevel wrote") and message in str(
        info.value
    )


def head_of_kind(kind: str):
    """(a fitted head of this kind on random features, its class names): a patch head with or
    without a background column, the weak head, the whole-image SVM."""
    from pipeline.heads.image_svm import ImageSVMHead
    from pipeline.heads.mlp import MLPHead
    from pipeline.heads.weak import WeakPatchHead

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4)).astype(np.float32)
    y = np.arange(60) % 3  # classes a, b and the background label 2
    Y = np.where(rng.random((20, 2)) < 0.5, 1, -1).astype(np.int8)
    Y[0], Y[1] = 1, -1
    heads = {
        "mlp": lambda: MLPHead(hidden=8, epochs=1, class_weight={2: 0.5}).fit(X, y),
        "mlp-no-background": lambda: MLPHead(hidden=8, epochs=1).fit(X, y % 2),
        "svm": lambda: LinearSVMHead(epochs=1, class_weight={2: 1.0}).fit(X, y),
        "weak": lambda: WeakPatchHead(hidden=8, epochs=1).fit(X, np.arange(60) // 3, Y),
        "whole-svm": lambda: ImageSVMHead().fit(X[:20], Y),
    }
    return heads[kind](), ("a", "b")


def spoil_record(path, change) -> None:
    """Rewrite the record inside the head file (its arrays and state untouched)."""
    from safetensors.numpy import load, save

    data = path.read_bytes()
    meta = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])["__metadata__"]
    record = change(json.loads(meta["record"]))
    path.write_bytes(save(load(data), metadata={**meta, "record": json.dumps(record)}))


KINDS = ["mlp", "mlp-no-background", "svm", "weak", "whole-svm"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("where", ["inside", "json"])
@pytest.mark.parametrize("change", [1, -1])
def test_a_record_naming_other_classes_than_the_head_outputs_is_refused(
    tmp_path, kind, where, change
):
    """Issue 26, defect 4: a record edited to one class more (or fewer) than the head was
    trained on loaded, and predict named the background column as the extra class. The class
    count (and the background column, where the head has one) must match the outputs."""
    path = head_path(tmp_path / "trainval-abc", "mlp")
    head, classes = head_of_kind(kind)
    save_head(path, head, HeadRecord(head="mlp", classes=classes))
    assert load_head_file(path)[1].classes == classes  # the genuine head loads
    names = list(classes) + ["unicorn"] if change > 0 else list(classes[:1])
    if where == "inside":
        spoil_record(path, lambda record: {**record, "classes": names})
        path.with_suffix(".json").unlink()
    else:  # the readable copy, whose SHA-256 still names the head file
        record = json.loads(path.with_suffix(".json").read_text())
        path.with_suffix(".json").write_text(json.dumps({**record, "classes": names}))
    with pytest.raises(CacheError) as info:
        load_head_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and message.endswith("fit the head again"), message
    assert "\n" not in message and f"{len(names)} classes" in message, message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("k", float("inf")),
        ("k", float("nan")),
        ("k", True),
        ("loss_curve", [0.5, float("nan")]),
        ("classes", ["a", "a"]),
        ("classes", [""]),
        ("patches", True),
        ("images", -1),
        ("config", {"grid": 5}),
        ("head", ""),
    ],
)
def test_a_record_field_out_of_range_is_one_line(tmp_path, field, value):
    """Issue 26: the record's types were checked, not their ranges; an infinite k pooled every
    score to the same value, a repeated class named two columns alike."""
    path = head_path(tmp_path / "trainval-abc", "svm")
    save_head(path, fitted(0), HeadRecord(head="svm", classes=("a",)))
    spoil_record(path, lambda record: {**record, field: value})
    path.with_suffix(".json").unlink()
    with pytest.raises(CacheError) as info:
        load_head_file(path)
    assert str(info.value).startswith(f"{path}: not a head midlevel wrote") and (
        f"its record's {field!r} is" in str(info.value)
    ), info.value


records = st.fixed_dictionaries(
    {},
    optional={
        "classes": st.lists(st.text(max_size=4), max_size=3) | st.text(max_size=3),
        "head": st.sampled_from(["mlp", "svm", "weak", ""]) | st.integers(),
        "k": st.floats() | st.integers(-2, 9) | st.booleans() | st.text(max_size=2),
        "patches": st.integers(-2, 5) | st.booleans() | st.floats(),
        "images": st.integers(-2, 5) | st.none(),
        "loss_curve": st.lists(st.floats(), max_size=3) | st.text(max_size=2),
        "sha256": st.text("0123456789abcdef", min_size=60, max_size=66) | st.integers(),
        "digest": st.text(max_size=12) | st.integers(),
        "params": st.dictionaries(st.text(max_size=3), st.integers(), max_size=2) | st.text(),
    },
)


@settings(derandomize=True, max_examples=200, deadline=None, database=None)
@given(record=records)
def test_any_record_is_read_in_range_or_refused(record):
    """Whatever a record holds, it is read with every field of its type and range, or
    refused with a ValueError naming the field (load_head_file makes it one line)."""
    try:
        read = HeadRecord.from_dict(record)
    except ValueError as error:
        assert str(error).startswith("its record's "), error
        return
    assert all(isinstance(c, str) and c for c in read.classes)
    assert len(set(read.classes)) == len(read.classes)
    assert math.isfinite(read.k) and read.k > 0 and not isinstance(read.k, bool)
    assert all(math.isfinite(v) for v in read.loss_curve)
    for count in (read.patches, read.images):
        assert isinstance(count, int) and not isinstance(count, bool) and count >= 0
    assert read.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", read.sha256)
    assert read.head is None or (isinstance(read.head, str) and read.head)
