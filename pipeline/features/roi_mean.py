"""roi_align followed by a mean over its cells, as one matmul: shared mode's pooling for heads
that start with a global average. Each roi's bilinear samples are a separable weighting of
the map, so the mean is one [N, H*W] x [H*W, C] product: the same numbers, far less CPU (but
a sample landing on the map's very edge, which float rounding of roi_align's own arithmetic
may drop). The pooling graph of pipeline/features/graphs.py repeats this arithmetic."""

from __future__ import annotations

import torch

CHUNK = 1 << 24  # weights per matmul (N rois x H*W cells): about 64 MB of float32


def axis_weights(start: torch.Tensor, end: torch.Tensor, points: int, size: int) -> torch.Tensor:
    """[N, size] bilinear weights of `points` evenly spaced samples in [start, end) per roi,
    with roi_align's border rules (a sample beyond -1 or size counts zero, one between
    -1 and 0 or past size - 1 sits on the border cell), divided by `points`."""
    offsets = (torch.arange(points, device=start.device, dtype=start.dtype) + 0.5) / points
    position = start[:, None] + offsets[None] * (end - start)[:, None]
    inside = ((position >= -1) & (position <= size)).to(start.dtype)
    position = position.clamp(min=0)
    low = position.floor().clamp(max=size - 1)
    high_weight = torch.where(low >= size - 1, torch.zeros_like(position), position - low)
    low_index = low.long()
    high_index = (low_index + 1).clamp(max=size - 1)
    weights = torch.zeros(len(start), size, device=start.device, dtype=start.dtype)
    weights.scatter_add_(1, low_index, (1 - high_weight) * inside)
    weights.scatter_add_(1, high_index, high_weight * inside)
    return weights / points


def roi_mean(
    fmap: torch.Tensor, rois: torch.Tensor, pool: int, spatial_scale: float, samples: int
) -> torch.Tensor:
    """What `roi_align(fmap, rois, pool, spatial_scale, samples, aligned=True)` averaged over
    its pool x pool cells gives, as [N, C, 1, 1]. fmap [1, C, H, W]; rois [N, 5] (batch
    index 0, x1, y1, x2, y2 in image pixels)."""
    _, channels, height, width = fmap.shape
    box = rois[:, 1:].to(fmap.dtype) * spatial_scale - 0.5  # aligned: pixel centres at +0.5
    points = pool * samples
    wy = axis_weights(box[:, 1], box[:, 3], points, height)
    wx = axis_weights(box[:, 0], box[:, 2], points, width)
    cells = fmap[0].reshape(channels, height * width).T  # [H*W, C]
    out = torch.empty(len(rois), channels, device=fmap.device, dtype=fmap.dtype)
    step = max(1, CHUNK // (height * width))
    for start in range(0, len(rois), step):
        part = slice(start, start + step)
        weights = (wy[part, :, None] * wx[part, None, :]).reshape(-1, height * width)
        out[part] = weights @ cells
    return out[:, :, None, None]
