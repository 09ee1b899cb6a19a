"""Shared mode's one resize, in numpy and Pillow: extract, predict and the torch-free runtime
(pipeline/deploy/runtime.py) resize a photo to each scale with the same code, so that an
exported model, int8 included, sees the very pixels the head's features came from."""

from __future__ import annotations

import numpy as np
from PIL import Image


def resized(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[1, 3, h, w] float32 of an [H, W, 3] uint8 photo resized to size (h, w): bilinear,
    antialiased when shrinking (a triangle filter widened by the factor), per channel in
    float (Pillow's "F" mode: no rounding to 8 bits)."""
    height, width = size
    planes = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(pixels[:, :, c], dtype=np.float32)).resize(
                (width, height), Image.Resampling.BILINEAR
            )
        )
        for c in range(3)
    ]
    return np.stack(planes)[None]
