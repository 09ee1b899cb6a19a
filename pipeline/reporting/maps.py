"""maps.h5: one [C, h, w] float16 score map per image, written whole or not at all, what
localize and predict --maps write (layout in docs/localize.md)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from urllib.parse import quote

import h5py
import numpy as np

from pipeline.evaluation.score_maps import CELL
from pipeline.io import atomic_path


def file_key(sample_id: str) -> str:
    """The id as one safe name (an HDF5 group, a file name): every character that is not a
    letter, a digit or one of `._-` as %XX (UTF-8), so `sub/0001` stays one name."""
    safe = "".join(c if c.isalnum() or c in "._-" else quote(c, safe="") for c in sample_id)
    return "%2E" + safe[1:] if safe.startswith(".") else safe


class MapsFile:
    """maps.h5 written under a temporary name and renamed when closed without error."""

    def __init__(self, path: Path, classes: tuple[str, ...], reduce: str, **attrs):
        self.path = Path(path)
        self._writing = contextlib.ExitStack()
        self._h5 = h5py.File(self._writing.enter_context(atomic_path(self.path)), "w")
        self._h5.attrs.update(classes=json.dumps(list(classes)), reduce=reduce, cell=CELL, **attrs)
        self._maps = self._h5.create_group("maps")

    def add(self, sample_id: str, maps: np.ndarray, width: int, height: int) -> None:
        entry = self._maps.create_group(file_key(sample_id))
        entry.create_dataset("scores", data=maps.astype(np.float16), compression="gzip")
        entry.attrs.update(id=sample_id, width=width, height=height)

    def __enter__(self) -> MapsFile:
        return self

    def __exit__(self, *exc) -> None:
        self._h5.close()
        self._writing.__exit__(*exc)  # renamed onto `path`, or removed on an error
