"""Decoding images and laying out their patches, as a DataLoader dataset: one item per image,
decoded once, with its patch boxes and labels. A bad file comes back as an item carrying its
error (never a worker's traceback); items are numpy, which a SIGINT cannot break in transit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.config import GridConfig, LabelRule
from pipeline.datasets import Sample
from pipeline.datasets.pixels import read_rgb
from pipeline.errors import DataError
from pipeline.features.patches import keep_mask, patch_grid, sample_labels, sample_mask


def decode_rgb(path: Path) -> torch.Tensor:
    """[3, H, W] uint8 of what the file shows (pipeline/datasets/pixels.py: its orientation
    applied, any mode made 8-bit RGB); DataError naming it when it cannot be read."""
    return torch.from_numpy(read_rgb(path)).permute(2, 0, 1)


class PatchImages(torch.utils.data.Dataset):
    """Samples of a split -> {index, image, boxes, labels, sampled}; training splits keep the
    object patches and a seeded label-blind sample of the rest, others keep every patch.

    A sample is a whole image (object task) or a region of one (action task: a person and its
    context, see pipeline/datasets/voc_action.py); its patches cover that region. Without
    `patch_labels` (a dataset of image-level labels only) every patch is labelled IGNORED:
    no box says what a patch shows, and calling it background would be a lie. Nor does a box
    label the patches of a sample not annotated yet (`Sample.labelled`).
    """

    def __init__(
        self,
        samples: list[Sample],
        indices: list[int],
        *,
        grid: GridConfig,
        rule: LabelRule,
        background: int,
        keep_all: bool,
        patch_labels: bool = True,
    ):
        self.samples = samples
        self.indices = indices
        self.grid = grid
        self.rule = rule
        self.background = background
        self.keep_all = keep_all
        self.patch_labels = patch_labels

    def __len__(self) -> int:
        return len(self.indices)

    def layout(self, sample: Sample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Patch boxes [N, 4] (image pixels), labels [N] and sampled flags [N], subsampled."""
        x0, y0, x1, y1 = sample.region
        boxes = patch_grid(x1 - x0, y1 - y0, self.grid) + np.array([x0, y0, x0, y0], np.float32)
        labels = self.labels(sample, boxes)
        if self.keep_all:
            return boxes, labels, np.ones(len(boxes), dtype=bool)
        sampled = sample_mask(len(boxes), self.rule, sample.sample_id)
        keep = keep_mask(labels, sampled, self.background)
        return boxes[keep], labels[keep], sampled[keep]

    def labels(self, sample: Sample, boxes: np.ndarray) -> np.ndarray:
        """[N] labels of the patches `boxes` of a sample."""
        return sample_labels(sample, boxes, self.rule, self.background, by_boxes=self.patch_labels)

    def __getitem__(self, position: int) -> dict:
        index = self.indices[position]
        sample = self.samples[index]
        if sample.error is not None:
            return {"index": index, "error": sample.error}
        path = sample.image_path
        try:
            image = decode_rgb(path)
        except DataError as exc:  # unreadable, a decompression bomb included
            return {"index": index, "error": str(exc)}
        if tuple(image.shape[1:]) != (sample.height, sample.width):
            return {
                "index": index,
                "error": f"{path}: is {image.shape[2]}x{image.shape[1]} but its annotation says "
                f"{sample.width}x{sample.height}; fix the image size in its annotation",
            }
        boxes, labels, sampled = self.layout(sample)
        return {
            "index": index,
            "image": image.numpy(),
            "boxes": boxes,
            "labels": labels,
            "sampled": sampled,
        }
