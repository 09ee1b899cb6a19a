"""The demo VOC tree: objects cut from photos that installed packages ship (nothing downloaded)
and pasted onto real backgrounds, so the whole pipeline runs end to end on any machine, on
photos a pretrained network recognises. An object's box is exactly its pasted rectangle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.datasets.voc_writer import VocSample, write_voc_tree
from pipeline.datasets.voc_xml import VocObject
from pipeline.errors import MidlevelError

DEMO_CLASSES = ("cat", "motorbike", "person")

# (class, photo, crop x0, y0, x1, y1 in photo pixels); each crop was saved and looked at.
OBJECT_CROPS = (
    ("cat", "chelsea", (10, 0, 420, 300)),  # the whole head
    ("cat", "chelsea", (110, 20, 380, 290)),  # face close-up
    ("motorbike", "motorcycle_left", (90, 60, 690, 455)),  # whole bike, side view
    ("motorbike", "motorcycle_right", (45, 40, 635, 452)),
    ("person", "astronaut", (20, 10, 365, 512)),  # upper body
    ("person", "astronaut", (110, 10, 320, 300)),  # head and shoulders
    ("person", "grace_hopper", (10, 20, 512, 600)),  # upper body
    ("person", "grace_hopper", (140, 20, 390, 380)),  # head and shoulders
)
BACKGROUNDS = ("brick", "grass", "gravel", "coffee", "rocket", "china", "flower")

# Object height as a fraction of the image height: one object may fill most of the frame, two
# share it. Pasting stops trying to place a second object after PLACEMENT_TRIES overlaps.
SINGLE_SCALE = (0.45, 0.9)
PAIR_SCALE = (0.3, 0.6)
SECOND_OBJECT_P = 0.5
PLACEMENT_TRIES = 50


# Where each photo comes from:
# - cat: `skimage.data.chelsea()`, Chelsea the cat (CC0, photo by Stefan van der Walt).
# - person: `skimage.data.astronaut()`, Eileen Collins (NASA, public domain), and matplotlib's
#   sample `grace_hopper.jpg` (`matplotlib.cbook.get_sample_data`), Grace Hopper (US Navy photo,
#   public domain).
# - motorbike: `skimage.data.stereo_motorcycle()`, left and right views of the Middlebury 2014
#   stereo benchmark pair.
# - backgrounds: `skimage.data.brick()`, `grass()`, `gravel()` (CC0 textures, grey), `coffee()`
#   (CC0, Rachel Michetti), `rocket()` (SpaceX, public domain), and scikit-learn's
#   `load_sample_image("china.jpg")` / `("flower.jpg")` (CC BY 2.0, Flickr).
def _load_photos() -> dict[str, np.ndarray]:
    """Every source photo as an [H, W, 3] uint8 RGB array, by name."""
    try:
        import skimage.data
        from matplotlib import cbook
    except ImportError as err:
        raise MidlevelError(
            f"the demo tree needs scikit-image and matplotlib ({err.name} is missing): "
            "pip install 'midlevel[demo]'"
        ) from err
    from sklearn.datasets import load_sample_image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        grace_hopper = np.asarray(Image.open(f).convert("RGB"))
    left, right, _ = skimage.data.stereo_motorcycle()
    photos = {
        "chelsea": skimage.data.chelsea(),
        "astronaut": skimage.data.astronaut(),
        "grace_hopper": grace_hopper,
        "motorcycle_left": left,
        "motorcycle_right": right,
        "brick": skimage.data.brick(),
        "grass": skimage.data.grass(),
        "gravel": skimage.data.gravel(),
        "coffee": skimage.data.coffee(),
        "rocket": skimage.data.rocket(),
        "china": load_sample_image("china.jpg"),
        "flower": load_sample_image("flower.jpg"),
    }
    return {k: np.stack([v] * 3, axis=-1) if v.ndim == 2 else v for k, v in photos.items()}


def _background(photo: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A random crop of `photo` with the aspect of `size` (width, height), resized to it."""
    width, height = size
    ph, pw = photo.shape[:2]
    max_w = min(pw, ph * width / height)
    cw = int(max_w * rng.uniform(0.5, 1.0))
    ch = int(cw * height / width)
    x = int(rng.integers(0, pw - cw + 1))
    y = int(rng.integers(0, ph - ch + 1))
    image = Image.fromarray(photo[y : y + ch, x : x + cw]).resize(size, Image.Resampling.BILINEAR)
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else image


def _place(
    aspect: float,
    scale: tuple[float, float],
    size: tuple[int, int],
    taken: list[tuple[int, int, int, int]],
    rng: np.random.Generator,
) -> tuple[int, int, int, int] | None:
    """A box (x0, y0, x1, y1) of width/height `aspect` inside the image, off every `taken` box."""
    width, height = size
    for _ in range(PLACEMENT_TRIES):
        h = int(height * rng.uniform(*scale))
        w = int(h * aspect)
        if w > 0.95 * width:
            w = int(0.95 * width)
            h = int(w / aspect)
        x = int(rng.integers(0, width - w + 1))
        y = int(rng.integers(0, height - h + 1))
        box = (x, y, x + w, y + h)
        if all(box[2] <= t[0] or t[2] <= box[0] or box[3] <= t[1] or t[3] <= box[1] for t in taken):
            return box
    return None


def _compose(
    image_id: str,
    first_class: str,
    photos: dict[str, np.ndarray],
    size: tuple[int, int],
    rng: np.random.Generator,
) -> VocSample:
    """One demo image: a `first_class` object and, half the time, a second object of any class."""
    image = _background(photos[BACKGROUNDS[rng.integers(len(BACKGROUNDS))]], size, rng)
    classes = [first_class]
    if rng.random() < SECOND_OBJECT_P:
        classes.append(DEMO_CLASSES[rng.integers(len(DEMO_CLASSES))])
    scale = SINGLE_SCALE if len(classes) == 1 else PAIR_SCALE
    objects: list[VocObject] = []
    taken: list[tuple[int, int, int, int]] = []
    for name in classes:
        crops = [c for c in OBJECT_CROPS if c[0] == name]
        _, photo, (cx0, cy0, cx1, cy1) = crops[rng.integers(len(crops))]
        box = _place((cx1 - cx0) / (cy1 - cy0), scale, size, taken, rng)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        patch = Image.fromarray(photos[photo][cy0:cy1, cx0:cx1])
        if rng.random() < 0.5:
            patch = patch.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        image.paste(patch.resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR), (x0, y0))
        taken.append(box)
        objects.append(VocObject(name, (float(x0), float(y0), float(x1), float(y1))))
    return VocSample(image_id, image, tuple(objects))


def build_demo_tree(
    output: Path,
    *,
    n_trainval: int = 48,
    n_test: int = 32,
    image_size: tuple[int, int] = (320, 240),
    seed: int = 0,
) -> Path:
    """Write the demo VOC tree under `output/VOC2007` and return it; same seed, same bytes.

    image_size is (width, height). The i-th image of a split has a DEMO_CLASSES[i % 3] object
    first, so every class is in every split (train, val: the even / odd halves of trainval);
    with at most two objects, every image lacks some class."""
    n_classes = len(DEMO_CLASSES)
    if n_trainval < 2 * n_classes or n_test < n_classes:
        raise ValueError(
            f"n_trainval={n_trainval}, n_test={n_test}: need n_trainval >= {2 * n_classes} "
            f"and n_test >= {n_classes} so that every class is in every split"
        )
    photos = _load_photos()
    rng = np.random.default_rng(seed)
    ids = [f"{i:06d}" for i in range(1, n_trainval + n_test + 1)]
    trainval, test = ids[:n_trainval], ids[n_trainval:]
    samples = [
        _compose(image_id, DEMO_CLASSES[i % n_classes], photos, image_size, rng)
        for split_ids in (trainval, test)
        for i, image_id in enumerate(split_ids)
    ]
    splits = {"train": trainval[0::2], "val": trainval[1::2], "trainval": trainval, "test": test}
    return write_voc_tree(Path(output) / "VOC2007", samples, splits)
