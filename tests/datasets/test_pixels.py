"""What an image file shows (pipeline/datasets/pixels.py): its EXIF orientation applied, any
mode as 8-bit RGB by the rules in the module's docstring, its size as shown; a file that
cannot be read, a decompression bomb included, is a one-line DataError naming it. Every
image is made in code, and each test checks decoded pixels against values computed here."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from pipeline.datasets.pixels import image_size, read_rgb, shown_rgb
from pipeline.errors import DataError
from pipeline.reporting.plots import thumbnail

W, H = 40, 30  # the upright picture's size
ORIENTATION = 0x0112  # the EXIF tag


def _upright() -> np.ndarray:
    """[H, W, 3]: four flat quadrants of different colours, so that any flip or turn shows."""
    pixels = np.zeros((H, W, 3), np.uint8)
    pixels[: H // 2, : W // 2] = (255, 0, 0)
    pixels[: H // 2, W // 2 :] = (0, 255, 0)
    pixels[H // 2 :, : W // 2] = (0, 0, 255)
    pixels[H // 2 :, W // 2 :] = (255, 255, 0)
    return pixels


# EXIF orientation -> the stored pixels of an upright picture, by the EXIF definition (where
# the stored row 0 and column 0 are seen): 6 is a phone held upright, its sensor turned.
STORED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # row 0 at the top, column 0 on the right
    3: lambda a: a[::-1, ::-1],  # bottom, right
    4: lambda a: a[::-1],  # bottom, left
    5: lambda a: a.transpose(1, 0, 2),  # row 0 on the left, column 0 at the top
    6: lambda a: np.rot90(a, 1),  # right, top
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # right, bottom
    8: lambda a: np.rot90(a, -1),  # left, bottom
}


def _stored(path: Path, orientation: int, fmt: str = "PNG", upright=None) -> Path:
    """`upright` (default `_upright()`) saved as a viewer would show it with `orientation`."""
    upright = _upright() if upright is None else upright
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    image = Image.fromarray(np.ascontiguousarray(STORED[orientation](upright)))
    image.save(path, fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(path: Path, pixels: np.ndarray, *, header_size: tuple[int, int] | None = None) -> Path:
    """A 16-bit PNG written by hand (PIL writes 16 bits only for gray): gray [H, W] or RGB
    [H, W, 3]; `header_size` makes its header lie about the size."""
    height, width = pixels.shape[:2]
    rows = pixels.astype(">u2").reshape(height, -1).view(np.uint8)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()
    header = struct.pack(">IIBBBBB", *(header_size or (width, height)), 16,
                         0 if pixels.ndim == 2 else 2, 0, 0, 0)  # fmt: skip
    body = _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def _composited(rgb, alpha) -> np.ndarray:
    """What an image with alpha shows over the white background."""
    alpha = np.asarray(alpha, np.float64)[..., None] / 255
    return np.rint(np.asarray(rgb) * alpha + 255 * (1 - alpha))


def _gray(values) -> np.ndarray:
    return np.repeat(np.asarray(values, np.float64)[..., None], 3, axis=2)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])  # an eXIf chunk; a TIFF's own tag
@pytest.mark.parametrize("orientation", sorted(STORED))
def test_each_exif_orientation_shows_the_upright_picture_and_its_size(tmp_path, orientation, fmt):
    path = _stored(tmp_path / f"photo.{fmt.lower()}", orientation, fmt)
    with Image.open(path) as image:
        assert ImageOps.exif_transpose(image).size == (W, H)  # the table is PIL's too
    np.testing.assert_array_equal(read_rgb(path), _upright())
    assert image_size(path) == (W, H)
    with Image.open(path) as image:
        np.testing.assert_array_equal(shown_rgb(image), _upright())
    with Image.open(path) as image:
        image.load()  # as a caller may: its file closed, a TIFF already turned by recent PIL
        np.testing.assert_array_equal(shown_rgb(image), _upright())


@pytest.mark.parametrize("orientation", [6, 8])
def test_a_phone_jpeg_stored_turned_comes_out_upright(tmp_path, orientation):
    path = _stored(tmp_path / "phone.jpg", orientation, "JPEG")
    assert image_size(path) == (W, H)
    with Image.open(path) as image:  # stored turned; as PIL's viewer turns it, to the value
        assert image.size == (H, W)
        np.testing.assert_array_equal(read_rgb(path), np.asarray(ImageOps.exif_transpose(image)))
    assert np.abs(read_rgb(path).astype(int) - _upright()).mean() < 12  # JPEG's chroma blur


def test_an_image_already_turned_upright_is_not_turned_again(tmp_path):
    with Image.open(_stored(tmp_path / "photo.png", 6)) as image:
        upright = ImageOps.exif_transpose(image)
    np.testing.assert_array_equal(shown_rgb(upright), _upright())


@pytest.mark.parametrize("orientation", [0, 9, 255])
def test_an_orientation_out_of_range_leaves_the_picture_as_stored(tmp_path, orientation):
    path = tmp_path / "photo.png"
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    Image.fromarray(_upright()).save(path, exif=exif)
    np.testing.assert_array_equal(read_rgb(path), _upright())
    assert image_size(path) == (W, H)


def test_contact_sheets_show_the_upright_photo(tmp_path):
    path = _stored(tmp_path / "photo.png", 8)
    np.testing.assert_array_equal(thumbnail(path), _upright())  # under THUMB: not shrunk


RNG = np.random.default_rng(0)
SIXTEEN = RNG.integers(0, 65536, (H, W)).astype(np.uint16)
SIXTEEN[0, :4] = (0, 128, 129, 65535)  # black, 0.498 rounds to 0, 0.502 to 1, white
TRUE_MEAN = 124.4  # the photo: a 16-bit PNG whose true mean is 124.4 decoded as 254.9
MID_GRAY = np.clip(RNG.normal(TRUE_MEAN * 257, 9000, (H, W)), 0, 65535).astype(np.uint16)
WIDE = RNG.integers(-1000, 3000, (H, W)).astype(np.int32)  # beyond 0..65535: min-max
WIDE[0, :2] = (-1000, 2999)
UNIT = RNG.random((H, W)).astype(np.float32)  # within [0, 1]: times 255
FLOATS = (RNG.random((H, W)) * 8 - 2).astype(np.float32)  # beyond [0, 1]: min-max
FLOATS[0, :3] = (-2.0, 6.0, np.nan)  # NaN shows as the minimum
RGB16 = RNG.integers(0, 65536, (H, W, 3)).astype(np.uint16)
CMYK = RNG.integers(0, 256, (H, W, 4)).astype(np.uint8)
INK = (255 - CMYK.astype(np.float64)) / 255  # what each ink leaves of white
RGBA = RNG.integers(0, 256, (H, W, 4)).astype(np.uint8)
RGBA[0, :3, 3] = (0, 255, 128)  # transparent, opaque, half
PALETTE = np.array([[10, 20, 30], [200, 100, 0], [0, 0, 0]], np.uint8)
PALETTE_ALPHA = np.array([255, 128, 0], np.uint8)  # opaque, half, transparent
INDICES = RNG.integers(0, 3, (H, W)).astype(np.uint8)
BITS = RNG.random((H, W)) > 0.5


def _min_max(values: np.ndarray) -> np.ndarray:
    finite = np.isfinite(values)
    low, high = values[finite].min(), values[finite].max()
    return np.rint((np.where(finite, values, low) - low) * 255 / (high - low))


def _palette(path: Path) -> Path:
    image = Image.fromarray(INDICES, "P")
    image.putpalette(PALETTE.tobytes())
    image.save(path, transparency=PALETTE_ALPHA.tobytes())
    return path


def _save(array, path: Path, mode: str | None = None) -> Path:
    Image.fromarray(array, mode).save(path)
    return path


def _big_endian(path: Path) -> Path:
    Image.frombytes("I;16B", (W, H), SIXTEEN.astype(">u2").tobytes()).save(path)
    return path


# mode -> (file name, how it is made, expected [H, W, 3] as float, how far each value may be)
MODES = {
    "I;16 (16-bit PNG)": ("a.png", lambda p: _save(SIXTEEN, p), _gray(np.rint(SIXTEEN / 257)), 0),
    "I;16B (TIFF)": ("a.tif", _big_endian, _gray(np.rint(SIXTEEN / 257)), 0),
    "I within 16 bits": ("a.tif", lambda p: _save(SIXTEEN.astype(np.int32), p),
                         _gray(np.rint(SIXTEEN / 257)), 0),
    "I beyond 16 bits": ("a.tif", lambda p: _save(WIDE, p), _gray(_min_max(WIDE)), 0),
    "F within [0, 1]": ("a.tif", lambda p: _save(UNIT, p), _gray(np.rint(UNIT * 255)), 0),
    "F beyond [0, 1]": ("a.tif", lambda p: _save(FLOATS, p), _gray(_min_max(FLOATS)), 0),
    "16-bit RGB PNG": ("a.png", lambda p: _png(p, RGB16), RGB16 / 257, 1),
    "CMYK (TIFF)": ("a.tif", lambda p: _save(CMYK, p, "CMYK"),
                    255 * INK[..., :3] * INK[..., 3:], 1),
    "P with transparency": ("a.png", _palette,
                            _composited(PALETTE[INDICES], PALETTE_ALPHA[INDICES]), 1),
    "L": ("a.png", lambda p: _save(RGBA[..., 0], p), _gray(RGBA[..., 0]), 0),
    "LA": ("a.png", lambda p: _save(RGBA[..., [0, 3]], p, "LA"),
           _composited(_gray(RGBA[..., 0]), RGBA[..., 3]), 1),
    "RGBA": ("a.png", lambda p: _save(RGBA, p), _composited(RGBA[..., :3], RGBA[..., 3]), 1),
    "1 (bilevel)": ("a.png", lambda p: _save(BITS, p), _gray(BITS * 255.0), 0),
}  # fmt: skip


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_decodes_to_its_8_bit_rgb_values(tmp_path, mode):
    name, make, expected, tolerance = MODES[mode]
    path = make(tmp_path / name)
    decoded = read_rgb(path)
    assert decoded.dtype == np.uint8 and decoded.shape == (H, W, 3)
    error = np.abs(decoded - expected).max()
    assert error <= tolerance, f"{mode}: a value off by {error}"
    with Image.open(path) as image:  # an open PIL image (predict's API) shows the same
        np.testing.assert_array_equal(shown_rgb(image), decoded)


def test_a_16_bit_photo_keeps_its_brightness_instead_of_white(tmp_path):
    path = _save(MID_GRAY, tmp_path / "scan.png")
    assert read_rgb(path).mean() == pytest.approx(MID_GRAY.mean() / 257, abs=0.5)
    assert abs(MID_GRAY.mean() / 257 - TRUE_MEAN) < 2


def test_a_16_bit_photo_stored_turned_is_upright_and_rescaled(tmp_path):
    upright = np.repeat(np.rint(_upright()[..., :1] * 257.0).astype(np.uint16), 3, axis=2)
    path = _stored(tmp_path / "scan.png", 6, upright=upright[..., 0])
    np.testing.assert_array_equal(read_rgb(path), np.rint(upright / 257))


def test_a_plain_rgb_jpeg_decodes_as_pil_does_into_a_writable_array(tmp_path):
    path = tmp_path / "plain.jpg"
    Image.fromarray(RGBA[..., :3]).save(path, quality=90)
    decoded = read_rgb(path)
    np.testing.assert_array_equal(decoded, np.asarray(Image.open(path)))
    assert decoded.flags.writeable and decoded.flags.c_contiguous


def _bomb(path: Path) -> Path:
    """A 67-byte PNG whose header says 20000x20000: PIL refuses it as a decompression bomb."""
    return _png(path, np.zeros((1, 1), np.uint16), header_size=(20000, 20000))


# a bad file -> (how it is made, whether its header still reads, what the message says)
BAD = {
    "missing": (lambda p: p, False, "not found"),
    "empty": (lambda p: p.write_bytes(b""), False, "cannot identify image file"),
    "garbage": (lambda p: p.write_bytes(RNG.bytes(500)), False, "cannot identify image file"),
    "truncated": (lambda p: p.write_bytes(_png(p, SIXTEEN).read_bytes()[:300]), True,
                  "truncated"),
    "decompression bomb": (_bomb, False, "decompression bomb"),
}  # fmt: skip


@pytest.mark.parametrize("fault", BAD)
def test_a_bad_file_is_one_line_naming_it(tmp_path, fault):
    make, header_reads, says = BAD[fault]
    path = tmp_path / "bad.png"
    make(path)
    readers = [read_rgb] if header_reads else [read_rgb, image_size]
    for reader in readers:
        with pytest.raises(DataError) as caught:
            reader(path)
        message = str(caught.value)
        assert message.startswith(f"{path}: ") and says in message and "\n" not in message
