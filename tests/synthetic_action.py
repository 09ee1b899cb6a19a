"""A tiny VOC 2012 Action tree made in code: grey "persons" holding a coloured action sign.

Each action is one shape and colour inside the person's box (the synthetic stand-in for a phone,
a book or a jump), so a head on any backbone separates them. Images hold one or two persons;
every fifth image adds a person without <actions> (not part of the task), and every seventh
person has two actions. Written through `write_voc_tree`, which writes ImageSets/Action as
VOC 2012 does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from synthetic_voc import SHAPE_STYLES, draw_shape

from pipeline.datasets.voc_writer import VocSample, write_voc_tree
from pipeline.datasets.voc_xml import VocObject

# action -> (shape, RGB fill): the object tree's three styles
ACTION_STYLES = dict(zip(("jumping", "phoning", "reading"), SHAPE_STYLES.values(), strict=True))
SYNTHETIC_ACTIONS = tuple(ACTION_STYLES)


def _image(
    image_id: str, index: int, size, rng: np.random.Generator, counter: list[int]
) -> VocSample:
    width, height = size
    pixels = rng.normal(128, 12, (height, width, 3)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    objects = []
    n_persons = 1 + index % 2
    slot = width // n_persons
    for p in range(n_persons):
        w, h = 36, 60
        x0 = p * slot + int(rng.integers(0, slot - w + 1))
        y0 = int(rng.integers(0, height - h + 1))
        box = (x0, y0, x0 + w, y0 + h)
        draw.rectangle((x0, y0, x0 + w - 1, y0 + h - 1), fill=(90, 90, 90))
        counter[0] += 1
        first = SYNTHETIC_ACTIONS[(index + p) % len(SYNTHETIC_ACTIONS)]
        actions = [first]
        if counter[0] % 7 == 0:
            actions.append(SYNTHETIC_ACTIONS[(SYNTHETIC_ACTIONS.index(first) + 1) % 3])
        for k, action in enumerate(actions):
            draw_shape(
                draw, ACTION_STYLES[action], (x0 + 6, y0 + 8 + 24 * k, x0 + 30, y0 + 28 + 24 * k)
            )
        objects.append(VocObject("person", tuple(float(v) for v in box), actions=tuple(actions)))
    if index % 5 == 4:  # a person outside the action task: no <actions>
        objects.append(VocObject("person", (0.0, 0.0, 12.0, 20.0)))
    return VocSample(image_id, image, tuple(objects))


def make_action_voc(
    root: Path, *, n_train: int = 24, n_val: int = 16, image_size=(128, 96), seed: int = 0
) -> Path:
    """Write `root/VOC2012` with Action splits train, val and trainval; returns the year dir."""
    rng = np.random.default_rng(seed)
    ids = [f"2012_{i:06d}" for i in range(1, n_train + n_val + 1)]
    counter = [0]
    samples = [_image(image_id, i, image_size, rng, counter) for i, image_id in enumerate(ids)]
    splits = {"train": ids[:n_train], "val": ids[n_train:], "trainval": ids}
    return write_voc_tree(Path(root) / "VOC2012", samples, splits)
