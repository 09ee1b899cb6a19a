"""The torch device of a device setting: what the heads and the frozen backbone run on."""

from __future__ import annotations

import torch

from pipeline.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """cpu, cuda, or auto (cuda when there is one); cuda is refused where there is none."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", name, "no CUDA device here; use cpu or auto")
    return torch.device(name)
