"""A tiny VOC tree of coloured shapes on noisy grey, made in code for fast tests.

Each class is one shape in one colour, so a head on any backbone (even untrained) separates them;
boxes are the shapes' exact bounding rectangles. Written through `write_voc_tree`, so the tests
read it with the same reader as real VOC.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pipeline.datasets.voc_writer import VocSample, write_voc_tree
from pipeline.datasets.voc_xml import VOC_CLASSES, VocObject

# class -> (shape, RGB fill)
SHAPE_STYLES = {
    "bus": ("square", (220, 30, 30)),
    "car": ("disc", (30, 60, 220)),
    "cat": ("triangle", (30, 190, 40)),
}
SHAPE_CLASSES = tuple(SHAPE_STYLES)


def draw_shape(
    draw: ImageDraw.ImageDraw, style: tuple[str, tuple], box: tuple[int, int, int, int]
) -> None:
    """A filled square, disc or triangle exactly covering `box` (ends exclusive)."""
    shape, fill = style
    x0, y0, x1, y1 = box
    inclusive = (x0, y0, x1 - 1, y1 - 1)  # PIL's rectangle/ellipse ends are inclusive
    if shape == "square":
        draw.rectangle(inclusive, fill=fill)
    elif shape == "disc":
        draw.ellipse(inclusive, fill=fill)
    else:
        draw.polygon([(x0, y1 - 1), (x1 - 1, y1 - 1), ((x0 + x1 - 1) / 2, y0)], fill=fill)


def _sample(
    image_id: str,
    first_class: str,
    size: tuple[int, int],
    rng: np.random.Generator,
    styles: dict[str, tuple] = SHAPE_STYLES,
) -> VocSample:
    width, height = size
    noise = rng.normal(128, 20, (height, width, 3)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(noise)
    draw = ImageDraw.Draw(image)
    names = [first_class]
    if rng.random() < 0.5:
        names.append(list(styles)[rng.integers(len(styles))])
    short = min(width, height)
    boxes: list[tuple[int, int, int, int]] = []
    objects = []
    for name in names:
        for _ in range(50):
            side = int(short * rng.uniform(0.25, 0.6))
            x, y = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
            box = (x, y, x + side, y + side)
            if all(box[2] <= b[0] or b[2] <= x or box[3] <= b[1] or b[3] <= y for b in boxes):
                break
        else:
            continue
        draw_shape(draw, styles[name], box)
        boxes.append(box)
        objects.append(VocObject(name, tuple(float(v) for v in box)))
    return VocSample(image_id, image, tuple(objects))


def make_shapes_voc(
    root: Path,
    *,
    n_trainval: int = 24,
    n_test: int = 16,
    image_size: tuple[int, int] = (128, 96),
    seed: int = 0,
    year: str = "VOC2007",
    classes: tuple[str, ...] = SHAPE_CLASSES,
) -> Path:
    """Write `root/<year>` with train/val (even/odd halves of trainval), trainval and test.

    image_size is (width, height). The i-th image of a split has a SHAPE_CLASSES[i % 3] shape,
    so every class is in every split once n_trainval >= 6 and n_test >= 3; half the images
    have a second shape of any class. `classes` names the three shapes (any names: a custom
    dataset), in the order of SHAPE_STYLES.
    """
    styles = dict(zip(classes, SHAPE_STYLES.values(), strict=True))
    rng = np.random.default_rng(seed)
    ids = [f"{i:06d}" for i in range(1, n_trainval + n_test + 1)]
    trainval, test = ids[:n_trainval], ids[n_trainval:]
    samples = [
        _sample(image_id, classes[i % len(classes)], image_size, rng, styles)
        for split_ids in (trainval, test)
        for i, image_id in enumerate(split_ids)
    ]
    splits = {"train": trainval[0::2], "val": trainval[1::2], "trainval": trainval, "test": test}
    known = classes if set(classes) - set(VOC_CLASSES) else VOC_CLASSES
    return write_voc_tree(Path(root) / year, samples, splits, known)


def make_one_image_voc(
    root: Path,
    *,
    name: str = "cat",
    missing: bool = False,
    n_trainval: int = 12,
    image_size: tuple[int, int] = (128, 96),
    seed: int = 0,
) -> Path:
    """Write `root/VOC2007` with one split, trainval, where class `name` is in the first image
    alone: no cross-validation fold can train it once that image is held out. The others
    alternate the other two shapes (half with a second one of those). With `missing`, `name`
    is instead in every image but the first (a shape of another class): its one negative."""
    rng = np.random.default_rng(seed)
    others = {n: style for n, style in SHAPE_STYLES.items() if n != name}
    ids = [f"{i:06d}" for i in range(1, n_trainval + 1)]
    if missing:
        samples = [_sample(ids[0], list(others)[0], image_size, rng, others)]
        samples += [_sample(i, name, image_size, rng, SHAPE_STYLES) for i in ids[1:]]
    else:
        samples = [_sample(ids[0], name, image_size, rng, {name: SHAPE_STYLES[name]})]
        samples += [
            _sample(image_id, list(others)[i % len(others)], image_size, rng, others)
            for i, image_id in enumerate(ids[1:])
        ]
    return write_voc_tree(Path(root) / "VOC2007", samples, {"trainval": ids}, VOC_CLASSES)
