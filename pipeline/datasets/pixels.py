"""What an image file shows, the one reader of image files (extract, predict, overlays,
contact sheets, and every reader that sizes an image from its header): the EXIF orientation
applied, any mode to 8-bit RGB, one line for a file it cannot read. The rule of each mode,
and why: docs/datasets.md ("What an image shows")."""

from __future__ import annotations

import functools
import io
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, TiffImagePlugin

from pipeline.errors import DataError

ORIENTATION = 0x0112  # the EXIF tag
# EXIF orientation -> the transpose that shows the stored pixels upright (as ImageOps's)
UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
BACKGROUND = (255, 255, 255)  # under transparent pixels
ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa"})
# What PIL raises on a file it cannot read: OSError (UnidentifiedImageError, truncated
# files), its decompression-bomb refusal (no OSError), and what broken chunks let through.
READ_ERRORS = (
    OSError, ValueError, EOFError, SyntaxError, IndexError, struct.error, zlib.error,
    Image.DecompressionBombError,
)  # fmt: skip


class ImageFileError(DataError):
    """An image file that cannot be read: `path`, and `reason` (None: no such file). The
    message says how a dataset fixes it; `redone` how a reader of results does."""

    def __init__(self, path: Path, reason: str | None, message: str):
        super().__init__(message)
        self.path, self.reason = path, reason

    def redone(self, missing: str) -> DataError:
        """The error for a reader of images already extracted (overlays, contact sheets): a
        missing image means another --data (`missing` says which), a broken one a restore."""
        if self.reason is None:
            return DataError(f"{self.path}: image not found; {missing}")
        return DataError(f"{self.path}: not a readable image ({self.reason}); restore it")


@contextmanager
def _opened(path, doing: str, fix: str, *, name: str | None = None) -> Iterator[Image.Image]:
    """The open image of a path (or a file object called `name`); any failure inside the
    block an ImageFileError: `<path>: cannot <doing> (<reason>); <fix>`."""
    try:
        with Image.open(path) as image:
            yield image
    except FileNotFoundError:
        message = f"{path}: image not found; restore it or drop it from the dataset"
        raise ImageFileError(path, None, message) from None
    except READ_ERRORS as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        shown = path if name is None else name
        reason = reason.replace(str(path), str(shown))  # a file object's repr says nothing
        raise ImageFileError(shown, reason, f"{shown}: cannot {doing} ({reason}); {fix}") from None


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of the image as shown, from its header without decoding."""
    with _opened(path, "read", "replace the file or drop it") as image:
        width, height = image.size
        return (height, width) if _orientation(image) in (5, 6, 7, 8) else (width, height)


def read_rgb(path: Path) -> np.ndarray:
    """[H, W, 3] uint8 (writable, C order) of what the image file shows (docs/datasets.md)."""
    with _opened(path, "decode", "replace the file or drop its id") as image:
        return shown_rgb(image)


def decode_rgb_bytes(data: bytes, name: str) -> np.ndarray:
    """[H, W, 3] uint8 of an image file's bytes (an upload called `name`), as read_rgb."""
    with _opened(io.BytesIO(data), "decode", "send a JPEG or PNG photo", name=name) as image:
        return shown_rgb(image)


def array_rgb(pixels) -> np.ndarray:
    """[H, W, 3] uint8 of a uint8 numpy array (gray, RGB, or RGBA shown over white as an RGBA
    file is); DataError for any other shape or dtype."""
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or not (
        pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] in (3, 4))
    ):
        raise DataError(
            f"an image array of shape {pixels.shape} and dtype {pixels.dtype}: pass [H, W, 3] uint8"
        )
    return shown_rgb(Image.fromarray(pixels))


def shown_rgb(image: Image.Image) -> np.ndarray:
    """[H, W, 3] uint8 of what an open PIL image shows: its orientation applied (none once
    ImageOps.exif_transpose has turned it), its mode made 8-bit RGB (docs/datasets.md)."""
    orientation = _orientation(image)  # before decoding: the header's, as image_size reads it
    rgb = _eight_bit_rgb(image)
    if orientation in UPRIGHT:
        rgb = rgb.transpose(UPRIGHT[orientation])
    return np.array(rgb)


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation in the image's header that is left to apply: 1 (as stored) when
    none, broken, or applied by PIL itself (a TIFF's own tag, by recent PIL)."""
    try:
        if isinstance(image, TiffImagePlugin.TiffImageFile):
            value = 1 if _pil_turns_tiff() else image.tag_v2.get(ORIENTATION, 1)
        else:  # the base class's reader: PNG's own would decode the pixels to look for an
            # eXIf chunk after them, and image_size must not decode
            value = Image.Image.getexif(image).get(ORIENTATION, 1)
    except READ_ERRORS:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


@functools.cache
def _pil_turns_tiff() -> bool:
    """Whether this PIL applies a TIFF's orientation tag itself, sizing and loading it upright
    (recent versions do, older ones leave it to the caller): asked of a 2x1 TIFF, once."""
    buffer = io.BytesIO()
    Image.new("L", (2, 1)).save(buffer, "TIFF", tiffinfo={ORIENTATION: 6})
    with Image.open(buffer) as probe:
        return probe.size == (1, 2)


def _eight_bit_rgb(image: Image.Image) -> Image.Image:
    """The image in mode RGB by the rules in docs/datasets.md."""
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        image.load()
        return image
    if mode in ("I", "F") or mode.startswith("I;16"):
        return Image.fromarray(_eight_bits(np.asarray(image), mode)).convert("RGB")
    if mode in ALPHA_MODES or "transparency" in image.info:
        over = Image.new("RGBA", image.size, (*BACKGROUND, 255))
        return Image.alpha_composite(over, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def _eight_bits(values: np.ndarray, mode: str) -> np.ndarray:
    """[H, W] uint8 of 16-bit, 32-bit integer or float gray values (docs/datasets.md)."""
    values = values.astype(np.float64)  # also makes a big-endian I;16B native
    finite = np.isfinite(values)
    low, high = (values[finite].min(), values[finite].max()) if finite.any() else (0.0, 0.0)
    values[~finite] = low
    if mode == "F" and low >= 0 and high <= 1:
        values *= 255
    elif mode != "F" and low >= 0 and high <= 65535:
        values /= 257
    elif high > low:
        values = (values - low) * (255 / (high - low))
    return np.rint(values).clip(0, 255).astype(np.uint8)
