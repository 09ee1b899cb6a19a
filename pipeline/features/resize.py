"""Shared mode's one resize, in numpy and Pillow: extract, predict and the torch-free runtime
(pipeline/deploy/runtime.py) resize a photo to each scale with the same code, so that an
exported model, int8 included, sees the very pixels the head's features came from."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image


def resized(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[1, 3, h, w] float32 of an [H, W, 3] uint8 photo resized to size (h, w): bilinear,
    antialiased when shrinking (a triangle filter widened by the factor), per channel in
    float (Pillow's "F" mode: no rounding to 8 bits). The channels resize on threads of
    their own (Pillow lets go of the GIL): the finest scale's 2000 px took 131 ms on one."""
    height, width = size

    def plane(channel: int) -> np.ndarray:
        source = np.ascontiguousarray(pixels[:, :, channel], dtype=np.float32)
        return np.asarray(
            Image.fromarray(source).resize((width, height), Image.Resampling.BILINEAR)
        )

    with ThreadPoolExecutor(max_workers=3) as threads:  # one per call: safe across a fork
        return np.stack(list(threads.map(plane, range(3))))[None]
