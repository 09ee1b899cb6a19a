"""A fitted head as named arrays and plain values, and back: what a head file holds, so that
loading one builds only the classes named here and runs no code from the file."""

from __future__ import annotations

import importlib
import math

import numpy as np

from pipeline.errors import MidlevelError
from pipeline.heads import CLASSES

PLAIN = (bool, int, float, str, type(None))


def head_state(head) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, state): what `head` learnt, arrays by dotted name; state says its class, its
    parameters and the plain values (JSON)."""
    arrays, learnt = _learnt(head, "")
    _check_finite(type(head).__name__, arrays, learnt)
    return arrays, {"class": type(head).__name__, "params": head.get_params(), **learnt}


def _non_finite(value) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _check_finite(head: str, arrays: dict[str, np.ndarray], learnt: dict) -> None:
    """A head whose weights hold NaN or Inf (a diverged fit) is refused, never saved: every
    score it gave would be NaN, and AP of NaN scores is silently wrong."""
    bad = [k for k, v in arrays.items() if v.dtype.kind in "fc" and not np.isfinite(v).all()]
    numbers = {k: v if isinstance(v, list) else [v] for k, v in learnt["values"].items()}
    bad += [k for k, v in numbers.items() if any(_non_finite(x) for x in v)]
    if bad:
        raise MidlevelError(
            f"the {head} learnt NaN or Inf ({', '.join(bad[:3])}): its training diverged and it "
            "is not saved; fit it again with a smaller learning rate (--lr) or other settings"
        )


def head_from_state(arrays: dict[str, np.ndarray], state: dict):
    """The head `state` and `arrays` describe; ValueError, KeyError or TypeError for any
    that a head of these classes did not write."""
    return _built(state, arrays, "")


def _learnt(estimator, prefix: str) -> tuple[dict[str, np.ndarray], dict]:
    """What fit set (public attributes ending in `_`), split into arrays, plain values and
    parts (a torch network, a scikit-learn estimator), the parts' arrays under `name.`."""
    arrays, values, parts = {}, {}, {}
    for name, value in vars(estimator).items():
        if name.startswith("_") or not name.endswith("_"):
            continue
        if isinstance(value, np.ndarray):
            arrays[prefix + name] = np.ascontiguousarray(value)
        elif isinstance(value, np.generic):
            values[name] = value.item()
        elif isinstance(value, PLAIN):
            values[name] = value
        elif isinstance(value, list | tuple) and all(isinstance(v, PLAIN) for v in value):
            values[name] = list(value)
        elif hasattr(value, "state_dict"):  # the torch network
            state = value.state_dict()
            arrays |= {f"{prefix}{name}.{k}": t.detach().cpu().numpy() for k, t in state.items()}
            parts[name] = {"network": True}
        elif type(value).__name__ in CLASSES:
            inner, learnt = _learnt(value, f"{prefix}{name}.")
            arrays |= inner
            parts[name] = {"class": type(value).__name__, "params": value.get_params(), **learnt}
        else:
            raise ValueError(f"{type(estimator).__name__}.{name} is a {type(value).__name__}")
    return arrays, {"values": values, "parts": parts}


def _built(state: dict, arrays: dict[str, np.ndarray], prefix: str):
    name = state["class"]
    if name not in CLASSES:
        raise ValueError(f"{name!r} is not a class a head file may hold")
    params = dict(state["params"])
    if isinstance(params.get("class_weight"), dict):  # JSON wrote its label keys as text
        params["class_weight"] = {int(k): w for k, w in params["class_weight"].items()}
    estimator = getattr(importlib.import_module(CLASSES[name]), name)(**params)
    for key, value in state["values"].items():
        setattr(estimator, key, value)
    for key, value in arrays.items():
        if key.startswith(prefix) and "." not in key[len(prefix) :]:
            setattr(estimator, key[len(prefix) :], value)
    for key, part in state["parts"].items():
        inner = f"{prefix}{key}."
        if part.get("network"):
            named = {k[len(inner) :]: v for k, v in arrays.items() if k.startswith(inner)}
            estimator.restore_network(key, named)
        else:
            setattr(estimator, key, _built(part, arrays, inner))
    return estimator
