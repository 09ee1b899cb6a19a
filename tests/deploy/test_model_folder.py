"""The deployed side of a model folder: `pipeline serve HEAD` exports the head again into its
own folder when that folder is damaged (issue 26, defect 10), and `pipeline predict --model`
and `pipeline serve` run where torch, torchvision, h5py and scikit-learn cannot be imported
(defect 13): a server installs the runtime alone (requirements-runtime.txt)."""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from cli_helpers import error_lines, held_port, invoke
from conftest import REPO

from pipeline.deploy.runtime import Model

TRAINING_STACK = ("torch", "torchvision", "h5py", "sklearn")
# The command line in a process where the training stack cannot be imported, as on a server
# that installed requirements-runtime.txt alone (a None in sys.modules: import raises
# ModuleNotFoundError, importlib.util.find_spec answers None).
WITHOUT_TRAINING_STACK = f"""
import sys
sys.modules.update(dict.fromkeys({TRAINING_STACK!r}))
from pipeline.cli import main
sys.argv[0] = "pipeline"
main()
"""


@pytest.fixture(scope="module")
def exported(exported_svm) -> dict:
    """An SVM head on the shapes tree (crop mode) exported, its model, three test photos."""
    return {**exported_svm, "model": Model.load(exported_svm["folder"]),
            "photos": exported_svm["photos"][:3]}  # fmt: skip


def pipeline(*args: str, blocked: bool = False) -> list[str]:
    """The argv of `pipeline ARGS` in a new process (without the training stack: blocked)."""
    prefix = ["-c", WITHOUT_TRAINING_STACK] if blocked else ["-m", "pipeline"]
    return [sys.executable, *prefix, *args]


def serving(argv: list[str]) -> tuple[subprocess.Popen, list[str], str]:
    """`pipeline serve ... --port 0` started: (the process, its lines up to the one with the
    URL, the URL)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    server = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=REPO, env=env)  # fmt: skip
    lines = []
    while not lines or " at http://" not in lines[-1]:
        line = server.stdout.readline()
        if not line:
            server.kill()
            pytest.fail(f"the server ended: {lines} {server.stderr.read()}")
        lines.append(line.strip())
    return server, lines, re.search(r" at (http://\S+/) ", lines[-1])[1]


def served_scores(argv: list[str], photo: Path) -> tuple[list[str], list[float], str]:
    """(the lines up to the URL, the scores POST /predict answers for `photo`, what the server
    said once stopped by Ctrl-C)."""
    server, lines, url = serving(argv)
    try:
        answer = httpx.post(url + "predict", files={"file": photo.read_bytes()}, timeout=60)
        assert answer.status_code == 200, answer.text
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=30)
        assert server.returncode == 0, err
    finally:
        server.kill()
    return lines, list(answer.json()["scores"].values()), out.strip()


def scores_in_process(exported: dict, photo: Path) -> np.ndarray:
    return exported["model"].predict(photo).scores


def heads_with_model(exported: dict, where: Path) -> Path:
    """A heads folder holding a copy of the SVM head, its record and its <head>-model/."""
    heads = where / "heads"
    heads.mkdir()
    for part in exported["head"].parent.glob("svm.*"):  # the head and its record
        shutil.copy(part, heads / part.name)
    shutil.copytree(exported["folder"], heads / "svm-model")
    return heads


@pytest.mark.parametrize("damage", ["{not json", '{"format": "midlevel-model/1"}'])
def test_serve_head_exports_again_over_a_damaged_model_folder_and_says_so(
    exported, tmp_path, damage
):
    """Issue 26, defect 10: <head>-model/ is derived from the head, so a model.json there that
    does not load (JSONDecodeError, AttributeError tracebacks before) is exported again. Run
    in this process with its port held: serve exports, loads, then stops at the bind (serving
    a head as a process: tests/deploy/test_server.py)."""
    heads = heads_with_model(exported, tmp_path)
    (heads / "svm-model" / "model.json").write_text(damage)
    with held_port() as port:
        code, out = invoke("serve", str(heads / "svm.safetensors"), "--port", port)
    lines = out.strip().splitlines()
    assert code == 2 and len(lines) == 3 and "cannot listen on" in lines[2], out
    assert lines[0].startswith(f"{heads / 'svm-model' / 'model.json'}: ") and lines[0].endswith(
        "; exporting the head again"
    ), lines[0]
    assert lines[1].startswith("export: ") and lines[1].endswith(f"-> {heads / 'svm-model'}/")
    model = Model.load(heads / "svm-model")
    assert model.info["head"]["sha256"] == exported["model"].info["head"]["sha256"]
    photo = exported["photos"][0]
    np.testing.assert_allclose(
        model.predict(photo).scores, scores_in_process(exported, photo), rtol=1e-6
    )


def test_serve_head_exports_again_over_an_export_cut_short(exported, tmp_path):
    """An export killed before its model.json leaves graphs alone in <head>-model/: serve
    exported into it again (the folder is derived from the head), it did not say "pass a new
    --output DIR", a flag serve does not have. Anything else there is left alone, refused."""
    heads = heads_with_model(exported, tmp_path)
    (heads / "svm-model" / "model.json").unlink()
    with held_port() as port:
        code, out = invoke("serve", str(heads / "svm.safetensors"), "--port", port)
    lines = out.strip().splitlines()
    assert code == 2 and len(lines) == 3 and "cannot listen on" in lines[2], out
    assert (
        lines[0]
        == f"{heads / 'svm-model'}: an export cut short (no model.json); exporting the head again"
    )
    photo = exported["photos"][0]
    np.testing.assert_allclose(
        Model.load(heads / "svm-model").predict(photo).scores,
        scores_in_process(exported, photo),
        rtol=1e-6,
    )
    (heads / "svm-model" / "model.json").unlink()
    (heads / "svm-model" / "notes.txt").write_text("mine")
    code, out = invoke("serve", str(heads / "svm.safetensors"), "--port", "0")
    (line,) = error_lines(out)
    assert code == 2 and line.startswith(f"error: {heads / 'svm-model'}: not a model folder")
    assert "notes.txt" in line, line
    assert (heads / "svm-model" / "notes.txt").read_text() == "mine"


def test_predict_with_a_model_folder_runs_without_torch_h5py_or_sklearn(exported, tmp_path):
    """Issue 26, defect 13: ModuleNotFoundError: h5py before (the CLI reached store/ and
    reporting/ through stages/predict.py)."""
    output = tmp_path / "p.csv"
    done = subprocess.run(
        pipeline("predict", "--model", str(exported["folder"]), *map(str, exported["photos"]),
                 "--output", str(output), blocked=True),
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert re.search(r"^predict: 3 images, 3 classes, k 5 in ", done.stdout), done.stdout
    with open(output) as handle:
        rows = list(csv.DictReader(handle))
    classes = exported["model"].classes
    for row, photo in zip(rows, exported["photos"], strict=True):
        got = [float(row[name]) for name in classes]
        np.testing.assert_allclose(got, scores_in_process(exported, photo), rtol=1e-5)
    assert output.with_suffix(".json").is_file()  # its sidecar


def test_serve_runs_without_torch_h5py_or_sklearn(exported):
    photo = exported["photos"][1]
    lines, scores, said = served_scores(
        pipeline("serve", str(exported["folder"]), "--port", "0", blocked=True), photo
    )
    assert len(lines) == 1 and lines[0].startswith(f"serve: {exported['folder']} (3 classes")
    np.testing.assert_allclose(scores, scores_in_process(exported, photo), rtol=1e-6)
    assert said == "serve: stopped after 1 prediction"


def test_predict_maps_without_h5py_is_one_line_naming_what_to_install(exported, tmp_path):
    """maps.h5 is an HDF5 file: without h5py, --maps is refused before any photo is read."""
    done = subprocess.run(
        pipeline("predict", "--model", str(exported["folder"]), str(exported["photos"][0]),
                 "--output", str(tmp_path / "p.csv"), "--maps", str(tmp_path / "maps"),
                 blocked=True),
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and errors == [
        "error: --maps needs h5py (maps.h5 and its overlays): pip install h5py, or drop --maps"
    ], done.stderr
    assert not (tmp_path / "p.csv").exists()


def test_the_runtime_requirements_are_pyprojects_own_without_the_training_stack():
    """requirements-runtime.txt: the install the tests above stand for, in pyproject.toml's
    versions (its dependencies and the serve extra), and none of the training stack."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {*project["dependencies"], *project["optional-dependencies"]["serve"]}
    text = (REPO / "requirements-runtime.txt").read_text()
    wanted = {line.split("#")[0].strip() for line in text.splitlines()} - {""}
    assert wanted and wanted <= declared, wanted - declared
    names = {re.split(r"[<>=!~\[]", line)[0] for line in wanted}
    assert not names & {"torch", "torchvision", "h5py", "scikit-learn"}
    assert {"numpy", "pillow", "onnxruntime", "click", "tqdm", "fastapi", "uvicorn"} <= names
