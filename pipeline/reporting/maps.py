"""What localize and predict --maps write: maps.h5, one [C, h, w] float16 score map per image,
written whole or not at all, and overlay PNGs beside it (layout in docs/localize.md)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import quote

import h5py
import numpy as np

from pipeline.evaluation.score_maps import CELL
from pipeline.io import atomic_path
from pipeline.reporting.overlays import overlay_image

Truth = Callable[[str], Mapping[str, tuple[np.ndarray, np.ndarray]]]  # image id -> its boxes


def file_key(sample_id: str) -> str:
    """The id as one safe name (an HDF5 group, a file name): every character that is not a
    letter, a digit or one of `._-` as %XX (UTF-8), so `sub/0001` stays one name."""
    safe = "".join(c if c.isalnum() or c in "._-" else quote(c, safe="") for c in sample_id)
    return "%2E" + safe[1:] if safe.startswith(".") else safe


class MapsWriter:
    """`directory`/maps.h5, written under a temporary name and renamed when closed without
    error, and an overlay of each of the first `overlays` images added in overlays/ (its
    `top` classes; truth: the boxes drawn, None for new photos)."""

    def __init__(
        self,
        directory: Path,
        classes: tuple[str, ...],
        reduce: str,
        *,
        overlays: int,
        top: int,
        truth: Truth | None = None,
        **attrs,
    ):
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.overlays = directory / "overlays"
        if overlays:
            self.overlays.mkdir(exist_ok=True)
        self.path = directory / "maps.h5"
        self._classes, self._top, self._truth, self._overlays_left = classes, top, truth, overlays
        self._writing = contextlib.ExitStack()
        self._h5 = h5py.File(self._writing.enter_context(atomic_path(self.path)), "w")
        self._h5.attrs.update(classes=json.dumps(list(classes)), reduce=reduce, cell=CELL, **attrs)
        self._maps = self._h5.create_group("maps")

    def add(self, sample_id: str, image_path: Path, maps: np.ndarray, size: tuple[int, int]):
        """The image's maps [C, h, w] of its width x height `size`, and its overlay if due."""
        entry = self._maps.create_group(file_key(sample_id))
        entry.create_dataset("scores", data=maps.astype(np.float16), compression="gzip")
        entry.attrs.update(id=sample_id, width=size[0], height=size[1])
        if self._overlays_left:
            truth = None if self._truth is None else self._truth(sample_id)
            overlay = overlay_image(image_path, maps, self._classes, self._top, size, truth)
            overlay.save(self.overlays / f"{file_key(sample_id)}.png")
            self._overlays_left -= 1

    def __enter__(self) -> MapsWriter:
        return self

    def __exit__(self, *exc) -> None:
        self._h5.close()
        self._writing.__exit__(*exc)  # renamed onto `path`, or removed on an error
