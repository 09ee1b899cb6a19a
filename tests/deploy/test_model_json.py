"""model.json is read back, so every field of it is checked on load (issue 26, defect 3): a
tampered field is refused in one line naming model.json, the field and the fix, by Model.load,
`pipeline predict --model` (exit 2) and `pipeline serve` (exit 2, before it binds); or the
model runs as the untouched one does. The SHA-256s in model.json cover the graphs, not
model.json itself, so a test may rewrite it freely. Derandomized, as tests/faults are."""

from __future__ import annotations

import copy
import csv
import functools
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import error_lines, extract_splits, invoke
from conftest import REPO
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pipeline.deploy.bundle import HEADS, MANIFEST, sha256
from pipeline.deploy.runtime import Model
from pipeline.errors import CacheError

CASES = settings(
    derandomize=True, max_examples=40, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)  # fmt: skip
FIX = "export it again with pipeline export"


@pytest.fixture(scope="module")
def models(shapes_voc, tmp_path_factory) -> dict:
    """A crop-mode MLP (softmax, a background column) and a shared-mode weak head (sigmoid,
    topk pooling with its bottom term), exported; each model loaded, and a test photo."""
    root = tmp_path_factory.mktemp("model-json")
    folders = {}
    for mode, fit in (("crop", ["--head", "mlp"]),
                      ("shared", ["--head", "weak", "--pool", "topk", "--bottom-fraction", "0.2"])):  # fmt: skip
        common = extract_splits(shapes_voc, root / f"cache-{mode}", "--mode", mode)
        code, out = invoke("fit", *fit, "--epochs", "2", *common)
        assert code == 0, out
        folders[mode] = root / f"model-{mode}"
        code, out = invoke("export", "--head", out.strip().rsplit(" -> ", 1)[1], "--output",
                           str(folders[mode]))  # fmt: skip
        assert code == 0, out
    ids = (shapes_voc / "ImageSets" / "Main" / "test.txt").read_text().split()
    return {
        "folders": folders,
        "models": {mode: Model.load(folder, threads=1) for mode, folder in folders.items()},
        "photo": shapes_voc / "JPEGImages" / f"{ids[0]}.jpg",
    }


def fields(value, path=()) -> list[tuple]:
    """Every path into a model.json: each key of each object, each item of each list."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return []
    found = []
    for key, inner in items:
        found += [(*path, key), *fields(inner, (*path, key))]
    return found


def tampered(info: dict, path: tuple, change: str, value=None) -> dict:
    """A copy of `info` with the field at `path` set to `value`, deleted, or (a list, or an
    object: a new key) given `value` as one more item."""
    info = copy.deepcopy(info)
    *parents, last = path
    parent = info
    for key in parents:
        parent = parent[key]
    target = parent[last] if change == "append" else None
    if change == "delete":
        del parent[last]
    elif isinstance(target, list):
        target.append(value)
    elif isinstance(target, dict):
        target["extra"] = value
    else:
        parent[last] = value
    return info


def folder_with(source: Path, info: dict) -> Path:
    """A model folder holding `info` as its model.json, its graphs linked to `source`'s."""
    folder = Path(tempfile.mkdtemp(prefix="tampered-", dir=source.parent))
    for graph in source.glob("*.onnx"):
        (folder / graph.name).symlink_to(graph)
    (folder / MANIFEST).write_text(json.dumps(info))
    return folder


def assert_refused(message: str, folder: Path) -> None:
    assert "\n" not in message and message.startswith(str(folder)), message
    assert MANIFEST in message and message.endswith(FIX), message


def judge(folder: Path, original: Model, photo: Path, *, verbs: bool) -> str | None:
    """Refused in one line by Model.load (and by both verbs), or run as `original` runs with
    the pooling power the file names: the refusal, or None."""
    try:
        model = Model.load(folder, threads=1)
    except CacheError as exc:
        assert_refused(str(exc), folder)
        if verbs:
            assert_verbs_refuse(folder, photo, str(exc))
        return str(exc)
    k = model.info["pooling"]["k"]
    assert len(model.classes) == len(original.classes)
    expected = untouched_scores(original, photo, k)
    np.testing.assert_allclose(model.predict(photo).scores, expected, rtol=0, atol=1e-5)
    if verbs:
        output = folder / "p.csv"
        code, out = invoke("predict", "--model", str(folder), str(photo), "--output", str(output))
        assert code == 0, out
        with open(output) as handle:
            (row,) = csv.DictReader(handle)
        got = [float(row[name]) for name in model.classes]
        np.testing.assert_allclose(got, expected, rtol=1e-5)
    return None


@functools.cache
def untouched_scores(original: Model, photo: Path, k: float) -> np.ndarray:
    """The untouched model's scores with pooling power k (most tampered files run as it)."""
    return original.predict(photo, k=k).scores


def assert_verbs_refuse(folder: Path, photo: Path, message: str) -> None:
    code, out = invoke("predict", "--model", str(folder), str(photo), "--output",
                       str(folder / "p.csv"))  # fmt: skip
    assert code == 2 and error_lines(out) == [f"error: {message}"], out
    served = subprocess.run(
        [sys.executable, "-m", "pipeline", "serve", str(folder), "--port", "0"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert served.returncode == 2 and served.stdout == "", served.stdout  # never bound
    assert error_lines(served.stderr) == [f"error: {message}"], served.stderr


# The issue's cases: each was a traceback, a wrong class or a silent NaN before.
ISSUE = {
    "an extra class name": ("crop", ("classes",), "append", "dog", "classes"),
    "a NaN pooling k": ("crop", ("pooling", "k"), "set", math.nan, "pooling.k"),
    "an infinite lse r": ("shared", ("pooling", "r"), "set", math.inf, "pooling.r"),
    "a grid key missing": ("crop", ("grid", "overlap"), "delete", None, "grid.overlap"),
    "an extra grid key": ("shared", ("grid",), "append", 2, "grid.extra"),
    "classes: 5": ("crop", ("classes",), "set", 5, "classes"),
    "another input_size": ("shared", ("input_size",), "set", 96, "input_size"),
    "scales as text": ("crop", ("grid", "scales"), "set", "3", "grid.scales"),
}


@pytest.mark.parametrize("case", ISSUE)
def test_the_issues_tampered_fields_are_refused_by_load_predict_and_serve(models, case):
    mode, path, change, value, field = ISSUE[case]
    info = tampered(models["models"][mode].info, path, change, value)
    folder = folder_with(models["folders"][mode], info)
    message = judge(folder, models["models"][mode], models["photo"], verbs=True)
    assert message is not None and f"{MANIFEST}: {field} " in message, message


HOSTILE = st.one_of(
    st.sampled_from(
        [
            0,
            -1,
            1,
            2,
            3,
            0.5,
            1e9,
            10**20,
            math.nan,
            math.inf,
            -math.inf,
            "",
            "x",
            "crop",
            "shared",
            "int8",
            "softmax",
            "sigmoid",
            "max",
            "lse",
            "topk",
            "mean-pk",
            "patches",
            "whole",
            *HEADS,
            True,
            False,
            None,
            [],
            {},
            ["bus"],
            [1, 2],
            {"a": 1},
        ]
    ),  # fmt: skip
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=6),
)


def near(value) -> list:
    """Values a hand edit would give: the number moved, the text changed, a list cut."""
    if isinstance(value, bool) or value is None:
        return [not value]
    if isinstance(value, int | float):
        return [value + 1, value * 2, -value, value / 3]
    if isinstance(value, str):
        return [value + "x", value.upper(), value[:-1]]
    if isinstance(value, list):
        return [value[:-1], value[::-1], [*value, value[-1] if value else 1]]
    return [{}, {**value, "extra": 1}]


@CASES
@given(data=st.data())
def test_every_tampered_field_is_refused_in_one_line_or_runs_right(models, data):
    mode = data.draw(st.sampled_from(sorted(models["models"])), label="mode")
    original = models["models"][mode]
    path = data.draw(st.sampled_from(fields(original.info)), label="field")
    change = data.draw(st.sampled_from(["set", "set", "delete", "append"]), label="change")
    here = original.info
    for key in path:
        here = here[key]
    value = data.draw(st.sampled_from(near(here)) | HOSTILE, label="value")
    folder = folder_with(models["folders"][mode], tampered(original.info, path, change, value))
    event("refused" if judge(folder, original, models["photo"], verbs=False) else "ran right")


def test_each_field_alone_is_refused_or_harmless(models):
    """Every field of both files deleted and made NaN: refused, or (a field the runtime does
    not use) the same scores."""
    for mode, original in models["models"].items():
        for path in fields(original.info):
            for change, value in (("delete", None), ("set", math.nan)):
                folder = folder_with(models["folders"][mode],
                                     tampered(original.info, path, change, value))  # fmt: skip
                judge(folder, original, models["photo"], verbs=False)


def test_the_head_kinds_links_are_those_of_the_heads():
    """bundle.HEADS (torch-free) says what each head's margins are, as the heads do."""
    from pipeline import heads

    for name, (link, background) in HEADS.items():
        assert getattr(heads, name).link == link, name
        assert background == (name in ("MLPHead", "LinearSVMHead")), name


def test_a_graph_whose_sha256_was_rewritten_too_is_refused_when_it_is_not_such_a_graph(models):
    """files may name other bytes with their own SHA-256: ONNX Runtime must load them as a
    graph with the inputs and output the runtime feeds and reads, or it is one line."""
    crop = models["models"]["crop"]
    trunk = models["folders"]["shared"] / "trunk.onnx"
    for bytes_, problem in ((b"not a graph", "ONNX Runtime cannot load it ("),
                            (trunk.read_bytes(), "inputs ['image'] and outputs ['fmap'], not")):  # fmt: skip
        folder = folder_with(models["folders"]["crop"], crop.info)
        (folder / "crop.onnx").unlink()
        (folder / "crop.onnx").write_bytes(bytes_)
        info = tampered(crop.info, ("files", "crop.onnx"), "set", sha256(folder / "crop.onnx"))
        (folder / MANIFEST).write_text(json.dumps(info))
        with pytest.raises(CacheError) as refused:
            Model.load(folder, threads=1)
        message = str(refused.value)
        assert message.startswith(f"{folder / 'crop.onnx'}: {problem}") and message.endswith(FIX)
