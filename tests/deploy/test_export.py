"""`pipeline export` and the torch-free runtime: a model folder predicts what `pipeline
predict` does, without torch, and refuses a damaged folder in one line."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from cli_helpers import SMALL, error_lines, extract_splits, invoke
from conftest import REPO
from ort_sessions import spinning

from pipeline import load_head
from pipeline.deploy.runtime import Model
from pipeline.errors import DataError

HEADS = ("mlp", "svm", "weak")
COARSE_REAL = ["--scales", "3", "--min-scale", "0.4"]


@pytest.fixture(scope="module", params=["crop", "shared"])
def exported(request, shapes_voc, tmp_path_factory) -> dict:
    """The three patch heads on the shapes tree in each mode, each exported."""
    mode = request.param
    cache = tmp_path_factory.mktemp(f"export-{mode}")
    common = extract_splits(shapes_voc, cache, "--mode", mode)
    heads, models = {}, {}
    for head in HEADS:
        code, out = invoke("fit", "--head", head, "--epochs", "4", *common)
        assert code == 0, out
        (heads[head],) = cache.glob(f"trainval-*/heads/{head}.safetensors")
        models[head] = cache / f"model-{head}"
        code, out = invoke("export", "--head", str(heads[head]), "--output", str(models[head]))
        assert code == 0, out
    ids = (shapes_voc / "ImageSets" / "Main" / "test.txt").read_text().split()[:3]
    images = [shapes_voc / "JPEGImages" / f"{i}.jpg" for i in ids]
    return {"mode": mode, "heads": heads, "models": models, "images": images, "cache": cache}


def predict_scores(head: Path, images, **options) -> np.ndarray:
    predictor = load_head(head, **options)
    return np.array([list(predictor.predict(image).values()) for image in images])


def test_the_runtime_gives_the_scores_of_predict_for_every_head(exported):
    """The same graphs on the same crops, or on the same resized photo (one resize for
    both: pipeline/features/resize.py); only float rounding differs."""
    tolerance = 1e-6 if exported["mode"] == "crop" else 1e-5
    for head in HEADS:
        model = Model.load(exported["models"][head])
        expected = predict_scores(exported["heads"][head], exported["images"])
        got = np.array([model.predict(image).scores for image in exported["images"]])
        np.testing.assert_allclose(got, expected, atol=tolerance, err_msg=head)
        assert len(np.unique(got.round(3))) > 3  # the scores say something per image


def test_the_folder_says_what_the_head_was_trained_on(exported):
    folder = exported["models"]["weak"]
    info = json.loads((folder / "model.json").read_text())
    record = json.loads(exported["heads"]["weak"].with_suffix(".json").read_text())
    graphs = ["crop.onnx"] if exported["mode"] == "crop" else ["head.onnx", "trunk.onnx"]
    assert sorted(info["files"]) == graphs
    assert info["classes"] == record["classes"] == ["bus", "car", "cat"]
    assert info["fingerprint"] == record["fingerprint"] and info["digest"] == record["digest"]
    assert info["pooling"]["pool"] == record["params"]["pool"] and info["link"] == "sigmoid"
    assert info["precision"] == "fp32" and info["mode"] == exported["mode"]


def test_predict_with_the_model_folder_writes_what_predict_with_the_head_writes(exported, tmp_path):
    rows = {}
    for flag, value in (
        ("--head", exported["heads"]["mlp"]),
        ("--model", exported["models"]["mlp"]),
    ):
        output = tmp_path / f"{flag[2:]}.csv"
        code, out = invoke("predict", flag, str(value), *map(str, exported["images"]),
                           "--output", str(output))  # fmt: skip
        assert code == 0, out
        with open(output) as handle:
            rows[flag] = list(csv.DictReader(handle))
    assert [r["top"] for r in rows["--head"]] == [r["top"] for r in rows["--model"]]
    for by_head, by_model in zip(rows["--head"], rows["--model"], strict=True):
        for name in ("bus", "car", "cat"):
            assert float(by_model[name]) == pytest.approx(float(by_head[name]), abs=1e-5)


def test_a_thin_photo_is_refused_before_any_pixel_is_resized(exported):
    """Issue 26, defect 1: a 32x4 or 400x2 photo (the grid follows the short side) costs as
    many patches, and in shared mode resized pixels, as hundreds of photos; the runtime
    refuses it from its size (a DataError: the server's 422), in either mode."""
    model = Model.load(exported["models"]["mlp"])
    for width, height in ((32, 4), (400, 2)):
        with pytest.raises(DataError, match=rf"^thin: {width}x{height} pixels .* limit of"):
            model.predict(np.zeros((height, width, 3), np.uint8), name="thin")
    assert model.predict(np.zeros((24, 96, 3), np.uint8)).scores.shape == (3,)  # 4:1 passes


BLOCKER = """
import importlib.abc, json, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {"torch", "torchvision", "h5py", "sklearn"}:
            raise ImportError(f"{name} is not installed here")
sys.meta_path.insert(0, Blocked())
from pipeline.deploy.runtime import Model
model = Model.load(sys.argv[1])
scores = [model.predict(path).scores.tolist() for path in sys.argv[2:]]
loaded = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "torchvision", "h5py", "sklearn"})
print(json.dumps({"scores": scores, "loaded": loaded}))
"""


def test_the_runtime_needs_no_torch_h5py_or_sklearn(exported):
    """In a process where importing torch, torchvision, h5py or sklearn fails."""
    model = exported["models"]["svm"]
    done = subprocess.run(
        [sys.executable, "-c", BLOCKER, str(model), *map(str, exported["images"])],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["loaded"] == []
    inside = [Model.load(model).predict(path).scores for path in exported["images"]]
    np.testing.assert_allclose(result["scores"], inside, rtol=0, atol=1e-12)


def test_a_damaged_or_foreign_folder_is_refused_in_one_line(exported, tmp_path):
    source = exported["models"]["mlp"]
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for path in source.iterdir():
        (damaged / path.name).write_bytes(path.read_bytes())
    graph = sorted(damaged.glob("*.onnx"))[-1]
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 1
    graph.write_bytes(bytes(data))
    image = str(exported["images"][0])
    code, out = invoke("predict", "--model", str(damaged), image)
    assert code == 2 and error_lines(out) == [
        f"error: {graph}: its bytes differ from the SHA-256 in model.json; export it again "
        "with pipeline export"
    ], out
    code, out = invoke("predict", "--model", str(tmp_path), image)
    assert code == 2 and len(error_lines(out)) == 1 and "not a folder pipeline export wrote" in out
    code, out = invoke("export", "--head", str(exported["heads"]["mlp"]), "--output",
                       str(exported["cache"]))  # fmt: skip
    assert code == 2 and "not empty and not a model folder" in out


def test_int8_is_a_cache_of_its_own_and_the_int8_export_predicts_as_predict(shapes_voc, tmp_path):
    """int8 features get their own cache key; in crop mode the exported int8 graph gives
    the int8 predictions of the head to float rounding."""
    common = extract_splits(shapes_voc, tmp_path, "--precision", "int8")
    extract_splits(shapes_voc, tmp_path)
    caches = sorted(p.name for p in tmp_path.glob("trainval-*"))
    assert len(caches) == 2, caches  # one key per precision
    code, out = invoke("fit", "--head", "svm", *common)
    assert code == 0, out
    (head,) = (p for p in tmp_path.glob("trainval-*/heads/svm.safetensors"))
    record = json.loads(head.with_suffix(".json").read_text())
    assert record["fingerprint"]["backbone"]["precision"] == "int8"
    code, out = invoke("export", "--head", str(head), "--output", str(tmp_path / "int8"))
    assert code == 0 and "int8" in out, out
    code, out = invoke("score", "--head", "svm", "--output", str(tmp_path / "ap.csv"), *common)
    assert code == 0, out
    (test,) = (
        p for p in tmp_path.glob("test-*") if p.name.split("-")[1] in str(head.parent.parent)
    )
    for shard in test.glob("shard-*.h5"):  # as if made by another calibration
        with h5py.File(shard, "r+") as h5:
            h5.attrs["runtime"] = h5.attrs["runtime"].rsplit(" ", 1)[0] + " 0123456789ab"
    code, out = invoke("score", "--head", "svm", "--output", str(tmp_path / "ap.csv"), *common)
    assert code == 2 and len(error_lines(out)) == 1 and "int8 features of net 0123456789ab" in out
    images = sorted((shapes_voc / "JPEGImages").glob("*.jpg"))[:2]
    model = Model.load(tmp_path / "int8")
    got = np.array([model.predict(image).scores for image in images])
    np.testing.assert_allclose(got, predict_scores(head, images), atol=1e-6)
    code, out = invoke("extract", "--split", "test", "--voc-root", str(shapes_voc), "--cache-dir",
                       str(tmp_path / "torch"), *SMALL, "--runtime", "torch", "--precision", "int8")  # fmt: skip
    assert code == 2 and error_lines(out) == [
        "error: --precision int8 runs the net under ONNX Runtime on a CPU; use --device cpu "
        "and --runtime auto, or --precision fp32"
    ], out


@pytest.fixture(scope="module")
def real_heads(tmp_path_factory) -> dict:
    """MLP, SVM and weak heads on a few genuine VOC photos (Lite0, ImageNet weights), in
    each mode; a coarse grid keeps it to about a minute."""
    from conftest import VOC_SUBSET

    if not (VOC_SUBSET / "Annotations").is_dir():
        pytest.skip(f"real VOC subset not found at {VOC_SUBSET}")
    heads = {}
    for mode in ("crop", "shared"):
        cache = tmp_path_factory.mktemp(f"real-{mode}")
        common = ["--voc-root", str(VOC_SUBSET), "--cache-dir", str(cache), "--mode", mode,
                  *COARSE_REAL]  # fmt: skip
        code, out = invoke("extract", "--split", "trainval", "--limit", "24", "--workers", "0",
                           *common)  # fmt: skip
        assert code == 0, out
        for head in HEADS:
            code, out = invoke("fit", "--head", head, "--epochs", "5",
                               "--classes", "car,person", *common)  # fmt: skip
            assert code == 0, out
            (heads[mode, head],) = cache.glob(f"trainval-*/heads/{head}.safetensors")
    ids = (VOC_SUBSET / "ImageSets" / "Main" / "test.txt").read_text().split()[:2]
    return {"heads": heads, "images": [VOC_SUBSET / "JPEGImages" / f"{i}.jpg" for i in ids]}


@pytest.mark.parametrize("mode", ["crop", "shared"])
def test_on_real_photos_the_runtime_equals_predict_to_1e4(real_heads, mode, tmp_path):
    for head in HEADS:
        path = real_heads["heads"][mode, head]
        code, out = invoke("export", "--head", str(path), "--output", str(tmp_path / head))
        assert code == 0, out
        model = Model.load(tmp_path / head)
        if mode == "shared":  # its two graphs take turns: their idle threads sleep
            assert {spinning(s) for s in model.sessions.values()} == {"0"}
        got = np.array([model.predict(image).scores for image in real_heads["images"]])
        expected = predict_scores(path, real_heads["images"])
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4, err_msg=f"{mode} {head}")


def test_an_int8_export_of_an_fp32_shared_head_predicts_as_predict_at_int8(exported, tmp_path):
    """`export --precision int8` of a head trained on fp32 features calibrates on its own
    training images; the runtime then gives `predict --precision int8`'s scores (the same
    resized pixels into the same int8 trunk), and both stay near the fp32 scores."""
    if exported["mode"] != "shared":
        pytest.skip("crop mode's int8 export is checked above")
    head, images = exported["heads"]["mlp"], exported["images"]
    code, out = invoke("export", "--head", str(head), "--output", str(tmp_path / "int8"),
                       "--precision", "int8")  # fmt: skip
    assert code == 0 and "int8" in out, out
    model = Model.load(tmp_path / "int8")
    assert model.info["precision"] == "int8" and model.info["trained_precision"] == "fp32"
    got = np.array([model.predict(image).scores for image in images])
    np.testing.assert_allclose(got, predict_scores(head, images, precision="int8"), atol=1e-5)
    assert np.abs(got - predict_scores(head, images)).max() < 0.1  # int8 is near fp32
