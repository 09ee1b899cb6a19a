"""The paper's multi-scale square patch grid and its training labels (Oquab et al., 3.1)."""

from __future__ import annotations

import zlib

import numpy as np

from pipeline.config import GridConfig, LabelRule

IGNORED = -1  # touches an object without meeting the rule, or meets it for two classes


def scale_factors(grid: GridConfig) -> np.ndarray:
    """[scales] patch side as a fraction of min(W, H): geometric from 1 to min_scale."""
    if grid.scales == 1:
        return np.ones(1)
    return np.geomspace(1.0, grid.min_scale, grid.scales)


def _positions(length: float, side: float, stride: float) -> np.ndarray:
    """Start offsets along one axis, first at 0 and last at length - side, spread evenly.

    The count is the smallest that keeps neighbours at least `stride` close, so the
    overlap is never below the asked one and the image border is always covered.
    """
    span = length - side
    count = int(np.ceil(span / stride - 1e-9)) + 1 if span > 0 else 1
    return np.linspace(0.0, max(span, 0.0), count)


def patch_grid(width: int, height: int, grid: GridConfig) -> np.ndarray:
    """[N, 4] float32 square patches x0, y0, x1, y1, coarse scales first; for the "whole"
    grid, the one box of the whole image (squashed to a square by the crop)."""
    if grid.kind == "whole":
        return np.array([[0, 0, width, height]], dtype=np.float32)
    out = []
    for s in scale_factors(grid):
        side = min(width, height) * s
        stride = side * (1.0 - grid.overlap)
        xs, ys = _positions(width, side, stride), _positions(height, side, stride)
        x0, y0 = np.meshgrid(xs, ys, indexing="xy")
        x0, y0 = x0.ravel(), y0.ravel()
        out.append(np.stack([x0, y0, x0 + side, y0 + side], axis=1))
    return np.concatenate(out).astype(np.float32)


def _intersection(patches: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """[N, M] intersection areas."""
    lo = np.maximum(patches[:, None, :2], boxes[None, :, :2])
    hi = np.minimum(patches[:, None, 2:], boxes[None, :, 2:])
    return np.clip(hi - lo, 0, None).prod(axis=2)


def _area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def label_patches(
    patches: np.ndarray,
    boxes: np.ndarray,
    box_classes: np.ndarray,
    difficult: np.ndarray,
    rule: LabelRule,
    background: int,
) -> np.ndarray:
    """[N] int16 labels: a class index, `background`, or IGNORED.

    patches [N, 4], boxes [M, 4], box_classes [M] int, difficult [M] bool. A patch is
    positive for class o when a non-difficult box of o meets both cover thresholds and no
    box of another class does (the paper's "overlaps at most one object", read per class so
    that a patch holding two cars is still a car). A patch that touches no box at all,
    difficult ones included, is background; every other patch is IGNORED.
    """
    labels = np.full(len(patches), background, dtype=np.int16)
    if len(boxes) == 0:
        return labels
    inter = _intersection(patches, boxes) * (1 + 1e-6)  # a cover exactly at a threshold meets it
    meets = (inter >= rule.min_patch_cover * _area(patches)[:, None]) & (
        inter >= rule.min_box_cover * _area(boxes)[None, :]
    )
    labels[(inter > 0).any(axis=1)] = IGNORED
    positive = meets & ~difficult[None, :]
    for cls in np.unique(box_classes):
        of_cls = box_classes == cls
        hit = positive[:, of_cls].any(axis=1) & ~meets[:, ~of_cls].any(axis=1)
        labels[hit] = cls
    return labels


def sample_labels(sample, boxes: np.ndarray, rule: LabelRule, background: int, *, by_boxes: bool):
    """[N] labels of a sample's patches `boxes` (extract, and relabelling a shard): by its
    boxes, or all IGNORED where boxes label nothing (image-level labels, or a sample not
    annotated yet: `Sample.labelled`)."""
    if not (by_boxes and sample.labelled):
        return np.full(len(boxes), IGNORED, dtype=np.int16)
    return label_patches(
        boxes, sample.boxes, sample.box_classes, sample.difficult, rule, background
    )


def sample_mask(n_patches: int, rule: LabelRule, image_id: str) -> np.ndarray:
    """[N] bool: a label-blind random `background_ratio` share of an image's patches.

    The generator is seeded by (seed, image id), so the sample of an image is the same
    whatever order, shard or machine processes it. Training keeps its background patches;
    cross-validation pools held-out images over it, since, unlike the kept set, it does not
    depend on where the objects are.
    """
    rng = np.random.default_rng([rule.seed, zlib.crc32(image_id.encode())])
    return rng.random(n_patches) < rule.background_ratio


def keep_mask(labels: np.ndarray, sampled: np.ndarray, background: int) -> np.ndarray:
    """[N] bool: what a training split stores, every object patch and the sampled rest."""
    return (labels >= 0) & (labels != background) | sampled
