"""Stage one on a CPU as ONNX Runtime graphs, those an export joins (pipeline/deploy/export.py):
crop mode runs one graph from an image and its boxes to the features (normalisation,
RoiAlign and the net); shared mode one from the resized image to the trunk's map and one
from the map and the boxes to the features (the pooled cells and the net's head). Cutting,
pooling and normalising run on ONNX Runtime's threads, int8 nets included (they stay float)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import onnx

from pipeline.features import graphs
from pipeline.features.onnx_runtime import OrtGraph
from pipeline.features.roi_mean import CHUNK


class CropGraphs:
    """Crop mode: `features` (image, boxes -> the net's features), `batch` patches a run,
    and `cut` (image, boxes -> normalised patches: what the bench times alone)."""

    def __init__(self, net: Path, size: int, mean, std, batch: int):
        self.prep = graphs.crop_prep(size, mean, std)
        self.features = OrtGraph(graphs.chain(self.prep, onnx.load(net), names=("crop", "net")))
        self.batch = batch

    @functools.cached_property
    def cut(self) -> OrtGraph:
        """The cut alone, built on first use: extraction never runs it."""
        return OrtGraph(self.prep)

    def __call__(self, image: np.ndarray, boxes: np.ndarray) -> list[np.ndarray]:
        """image [3, H, W] uint8 and boxes [N, 4] -> the features of each batch of patches."""
        pixels = image[None].astype(np.float32)
        return [
            self.features(image=pixels, boxes=boxes[start : start + self.batch])
            for start in range(0, len(boxes), self.batch)
        ]


class SharedGraphs:
    """Shared mode: `trunk` (a resized image -> the trunk's map) and `pooled` (the map and
    the boxes in its image's pixels -> features: cells pooled as the net's head expects).
    The two take turns, with the next scale's resize beside them, so neither session's
    threads spin while idle: they took the cores the other ran on (docs/benchmarks.md)."""

    def __init__(self, trunk: Path, head: Path, mean, std, cells: tuple[int, float, int, bool]):
        prep, pooling = graphs.trunk_prep(mean, std), graphs.roi_cells(*cells)
        trunk_graph = graphs.chain(prep, onnx.load(trunk), names=("prep", "trunk"))
        self.trunk = OrtGraph(trunk_graph, spinning=False)
        pooled_graph = graphs.chain(pooling, onnx.load(head), names=("cells", "net"))
        self.pooled = OrtGraph(pooled_graph, spinning=False)

    def __call__(self, scaled: np.ndarray, rois: np.ndarray) -> np.ndarray:
        """scaled [1, 3, h, w] float32 (0..255) and rois [N, 4] -> [N, D] features, the rois
        pooled a chunk at a time (at most CHUNK sample weights of the map at once)."""
        fmap = self.trunk(image=scaled)
        step = max(1, CHUNK // (fmap.shape[2] * fmap.shape[3]))
        parts = [self.pooled(fmap=fmap, rois=rois[i : i + step]) for i in range(0, len(rois), step)]
        return np.concatenate(parts)
