"""Decoding VOC images and laying out their patches, as a Dataset for DataLoader workers.

Each item is one image, decoded once, with its patch boxes and labels; the crops are cut
later on the compute device, all patches of the image in one op. A decode failure comes
back as an item with an `error` message, not an exception, so that the worker's traceback
never reaches the user: the stage turns it into one line naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from pipeline.config import GridConfig, LabelRule
from pipeline.patches import keep_mask, label_patches, patch_grid, sample_mask
from pipeline.voc import ImageRecord


def decode_rgb(path: Path) -> torch.Tensor:
    """[3, H, W] uint8. Grayscale, CMYK and PNG-in-.jpg files decode too (PIL sniffs bytes)."""
    with Image.open(path) as image:
        image.load()
        return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)


class PatchImages(torch.utils.data.Dataset):
    """Images of a split -> {index, image, boxes, labels, sampled}; training splits keep the
    object patches and a seeded label-blind sample of the rest, others keep every patch."""

    def __init__(
        self,
        year_dir: Path,
        records: list[ImageRecord],
        indices: list[int],
        *,
        grid: GridConfig,
        rule: LabelRule,
        class_index: dict[str, int],
        background: int,
        keep_all: bool,
    ):
        self.year_dir = year_dir
        self.records = records
        self.indices = indices
        self.grid = grid
        self.rule = rule
        self.class_index = class_index
        self.background = background
        self.keep_all = keep_all

    def __len__(self) -> int:
        return len(self.indices)

    def layout(self, record: ImageRecord) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Patch boxes [N, 4], labels [N] and sampled flags [N] of one image, after subsampling."""
        boxes = patch_grid(record.width, record.height, self.grid)
        box_classes = np.array([self.class_index[o.name] for o in record.objects], dtype=np.int64)
        difficult = np.array([o.difficult for o in record.objects], dtype=bool)
        labels = label_patches(
            boxes, record.boxes(), box_classes, difficult, self.rule, self.background
        )
        if self.keep_all:
            return boxes, labels, np.ones(len(boxes), dtype=bool)
        sampled = sample_mask(len(boxes), self.rule, record.image_id)
        keep = keep_mask(labels, sampled, self.background)
        return boxes[keep], labels[keep], sampled[keep]

    def __getitem__(self, position: int) -> dict:
        index = self.indices[position]
        record = self.records[index]
        path = self.year_dir / "JPEGImages" / f"{record.image_id}.jpg"
        try:
            image = decode_rgb(path)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            return {
                "index": index,
                "error": f"{path}: cannot decode ({exc}); replace the file or drop its id",
            }
        if tuple(image.shape[1:]) != (record.height, record.width):
            return {
                "index": index,
                "error": f"{path}: is {image.shape[2]}x{image.shape[1]} but its annotation says "
                f"{record.width}x{record.height}; fix <size> in Annotations/{record.image_id}.xml",
            }
        boxes, labels, sampled = self.layout(record)
        return {
            "index": index,
            "image": image,
            "boxes": torch.from_numpy(boxes),
            "labels": labels,
            "sampled": sampled,
        }
