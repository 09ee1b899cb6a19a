"""Extraction speed: the full `pipeline extract` path against the backbone alone.

Prints, from one run on one device: patches/s of the whole extract path (decode, patch
grid, crops, forward, HDF5 write) in --mode crop, patches/s of the backbone on ready tensors
(the limit of crop mode), their ratio (target on CPU: >= 0.8), and patches/s of the same
extraction in --mode shared (one trunk pass per image and scale) with its ratio to crop.

    python bench/extract_speed.py --voc-root ../shared/voc2007-subset/VOC2007 --images 8
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click
import torch

from pipeline.backbone import FrozenBackbone, resolve_device
from pipeline.config import BackboneConfig, ExtractConfig, GridConfig
from stages import extract

DEFAULT_VOC = Path(__file__).resolve().parents[2] / "shared" / "voc2007-subset" / "VOC2007"


def backbone_only(backbone: FrozenBackbone, patches: int, batch_size: int) -> float:
    """patches/s of the forward pass alone on uint8 tensors already in memory."""
    size = backbone.input_size
    batch = torch.randint(0, 256, (batch_size, 3, size, size), dtype=torch.uint8)
    backbone(batch)  # warm-up: first-call allocations are not throughput
    done, started = 0, time.perf_counter()
    while done < patches:
        backbone(batch)
        done += batch_size
    return done / (time.perf_counter() - started)


@click.command()
@click.option("--voc-root", default=str(DEFAULT_VOC), show_default=True, help="VOC year dir.")
@click.option("--split", default="test", show_default=True, help="Split (test keeps every patch).")
@click.option("--images", type=int, default=8, show_default=True, help="Images to extract.")
@click.option("--backbone", default="efficientnet_lite0", show_default=True)
@click.option("--scales", type=int, default=GridConfig.scales, show_default=True)
@click.option("--min-scale", type=float, default=GridConfig.min_scale, show_default=True)
@click.option("--batch-size", type=int, default=ExtractConfig.batch_size, show_default=True)
@click.option("--workers", type=int, default=ExtractConfig.workers, show_default=True)
@click.option("--device", default="auto", show_default=True)
def main(voc_root, split, images, backbone, scales, min_scale, batch_size, workers, device) -> None:
    rates = {}
    for mode in ("crop", "shared"):
        with tempfile.TemporaryDirectory() as cache:
            config = ExtractConfig(
                voc_root=voc_root,
                split=split,
                cache_dir=cache,
                backbone=BackboneConfig(name=backbone, mode=mode),
                grid=GridConfig(scales=scales, min_scale=min_scale),
                device=device,
                batch_size=batch_size,
                workers=workers,
                limit=images,
            )
            summary = extract.run(config)
        rates[mode] = summary.patches / summary.seconds
    full = rates["crop"]
    net = FrozenBackbone(BackboneConfig(name=backbone), resolve_device(device))
    limit = backbone_only(net, min(summary.patches, 2048), batch_size)
    print(
        f"device {net.device}, {torch.get_num_threads()} threads, backbone {backbone}, batch {batch_size}"
    )
    print(
        f"full extract path : {full:8.1f} patches/s  ({summary.images} images, {summary.patches} patches)"
    )
    print(f"backbone alone    : {limit:8.1f} patches/s  (ready uint8 tensors)")
    print(f"ratio full/limit  : {full / limit:8.2f}  (target >= 0.8 on CPU)")
    print(f"--mode shared     : {rates['shared']:8.1f} patches/s  (full extract path)")
    print(f"ratio shared/crop : {rates['shared'] / full:8.2f}")


if __name__ == "__main__":
    main()
