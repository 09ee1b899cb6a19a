"""ONNX Runtime for the frozen net on a CPU: the same features, several times faster. The frozen
part is exported once per backbone, weights and part into a model cache checked by SHA-256
(docs/cache.md); the runtime is not part of the cache key, as its features match torch's."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from pipeline.cores import cpu_threads
from pipeline.errors import BackboneUnavailable
from pipeline.io import atomic_path, file_digest, json_digest, recorded_damage, write_json

MODEL_CACHE_ENV = "MIDLEVEL_MODEL_CACHE"
EXPORT_FORMAT = 1  # bump when the exported graphs change meaning: old files are not reused


def model_cache_dir() -> Path:
    """Where exported models live: shared by every feature cache of this user."""
    if os.environ.get(MODEL_CACHE_ENV):
        return Path(os.environ[MODEL_CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "midlevel" / "onnx"


def _onnxruntime():
    """The onnxruntime module, or the reason it does not load here."""
    try:
        import onnxruntime
    except Exception as exc:  # ImportError, or a broken native library (OSError)
        return f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
    return onnxruntime


def resolve_runtime(name: str, device: torch.device) -> str:
    """ "torch" or "onnxruntime" for `--runtime name` on `device`: auto is ONNX Runtime on a
    CPU (torch, with one warning line, where it does not load) and torch on CUDA (fp16)."""
    if device.type != "cpu":
        if name == "onnxruntime":
            raise BackboneUnavailable(
                f"--runtime onnxruntime runs the net on the CPU; on {device.type} use "
                "--runtime torch (or auto)"
            )
        return "torch"
    if name == "torch":
        return "torch"
    loaded = _onnxruntime()
    if isinstance(loaded, str):
        if name == "onnxruntime":
            raise BackboneUnavailable(
                f"--runtime onnxruntime: onnxruntime does not load here ({loaded}); "
                "pip install onnxruntime, or use --runtime torch"
            )
        print(
            f"warning: onnxruntime does not load here ({loaded}); the net runs with torch, "
            "several times slower on a CPU",
            file=sys.stderr,
        )
        return "torch"
    return "onnxruntime"


def ort_session(model, *, spinning: bool = True):
    """An ONNX Runtime session of a graph (a file's path or a model's bytes) on the CPU,
    with every core this process may use. `spinning` False: its idle threads sleep at once
    instead of spin-waiting for the next run, for graphs that take turns with other work."""
    ort = _onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = cpu_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", str(int(spinning)))
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


class OrtPart(torch.nn.Module):
    """An exported part of the net under ONNX Runtime, in place of the torch module it was
    exported from: a float32 tensor in, a float32 tensor out."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path  # what an export copies (pipeline/deploy/export.py)
        self.session = ort_session(path)
        self.input = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().contiguous().numpy()  # NCHW, as exported
        return torch.from_numpy(self.session.run(None, {self.input: array})[0])


class OrtGraph:
    """A graph joined around exported parts (pipeline/features/graphs.py) under ONNX
    Runtime: named float32 arrays in, its one output out."""

    def __init__(self, model, *, spinning: bool = True):
        self.session = ort_session(model.SerializeToString(), spinning=spinning)

    def __call__(self, **inputs: np.ndarray) -> np.ndarray:
        return self.session.run(None, inputs)[0]


def onnx_part(module: torch.nn.Module, key: dict, example: torch.Tensor, dynamic: dict):
    """The ONNX Runtime twin of `module` (exported now if the model cache lacks a sound
    copy), or None with one warning line when this net does not export."""
    path = model_cache_dir() / f"{key['name']}-{key['part']}-{_key_digest(key)}.onnx"
    problem = unsound(path, key)
    if problem is None:
        try:
            return OrtPart(path)
        except Exception as exc:  # a file that hashes right but ORT refuses: export again
            problem = f"ONNX Runtime cannot load it ({type(exc).__name__})"
    if problem != "missing":
        print(f"{path}: {problem}; exporting it again", file=sys.stderr)
    try:
        _export(module, path, key, example, dynamic)
        return OrtPart(path)
    except Exception as exc:
        detail = " ".join(str(exc).split())[:160]
        print(
            f"warning: {key['name']} {key['part']} does not run under ONNX Runtime "
            f"({type(exc).__name__}: {detail}); using torch for it",
            file=sys.stderr,
        )
        return None


def unsound(path: Path, key: dict) -> str | None:
    """Why the model cache's file at `path` cannot serve as `key`'s (a part: its net,
    weights, input size and part; an int8 twin: its calibration, recipe and fp32 part):
    damaged (io.recorded_damage), or sound but its record names another key than its file
    name stands for (a file copied or renamed there); None if it can."""
    problem = recorded_damage(path)
    if problem is not None:
        return problem
    try:
        record = json.loads(path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return "its record is unreadable"
    other = {name: record.get(name) for name in key if record.get(name) != key[name]}
    if other:
        said = ", ".join(f"{name} {value!r}" for name, value in other.items())
        wanted = ", ".join(f"{name} {key[name]!r}" for name in other)
        return f"its record names {said}, not {wanted}"
    return None


def _key_digest(key: dict) -> str:
    return json_digest({**key, "format": EXPORT_FORMAT})


def _export(module, path: Path, key: dict, example: torch.Tensor, dynamic: dict) -> None:
    """Export `module` to `path` atomically, then its record (SHA-256, torch version) beside
    it. The TorchScript exporter is tried first (about a second; one file with its
    weights), the torch.export-based one where it fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    modes = {sub: sub.training for sub in module.modules()}
    try:
        with atomic_path(path) as partial:
            exporter = _run_exporter(module.eval(), partial, example, dynamic)
            with open(partial, "rb") as handle:
                os.fsync(handle.fileno())
    finally:  # the exporter restores the top module's mode to all of them: undo that
        for sub, training in modes.items():
            sub.training = training
    record = {**key, "sha256": file_digest(path), "torch": torch.__version__, "exporter": exporter}
    write_json(path.with_suffix(".json"), record, sort_keys=False)


def _run_exporter(module, path: Path, example: torch.Tensor, dynamic: dict) -> str:
    axes = {"x": dynamic, "features": {0: "batch"} if 0 in dynamic else {}}
    quiet = contextlib.redirect_stdout(io.StringIO())
    with warnings.catch_warnings(), quiet, torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                module, (example,), str(path), input_names=["x"], output_names=["features"],
                dynamic_axes=axes, dynamo=False,
            )  # fmt: skip
            return "torchscript"
        except Exception:
            shapes = ({axis: torch.export.Dim(name, min=2) for axis, name in dynamic.items()},)
            torch.onnx.export(
                module, (example,), str(path), input_names=["x"], output_names=["features"],
                dynamic_shapes=shapes, dynamo=True, external_data=False,
            )  # fmt: skip
            return "dynamo"
