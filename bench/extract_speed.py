"""Extraction speed: our extract paths against the backbone alone and a naive loader.

Each measurement runs in its own process (so that its peak RSS is its own), on the same
images of one split, and prints patches/s:

1. limit: the backbone's forward pass alone on ready uint8 tensors (crop mode's bound);
2. crop: the full `pipeline extract --mode crop` path (decode, grid, roi_align crops,
   forward, HDF5 write), and its ratio to (1) (target >= 0.9);
3. shared: the full `--mode shared` path (the trunk once per image and scale), and its ratio
   to (2);
4. naive: what a user would write: a DataLoader over patches, each opened with PIL, cropped,
   resized and normalised by torchvision transforms, one forward per batch; our crop ratio
   to it (target >= 1.5 on CPU, >= 3 on a GPU).

It then prints what bounds those ratios, measured on the same images: the share of the
compute that crop mode spends cutting crops (bounds crop/limit), the trunk/head split of a
forward pass and the grid's conv sharing factor (together they bound shared/limit: sharing
divides only the trunk's work), and naive/limit (bounds crop/naive).

    python bench/extract_speed.py --voc-root ../shared/voc2007-subset/VOC2007 --images 8
    python bench/extract_speed.py --backbone alexnet --weights random   # untrained: speed only
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import torch
from PIL import Image
from torchvision import transforms

from pipeline.backbone import FrozenBackbone, build_net, resolve_device
from pipeline.config import BackboneConfig, ExtractConfig, GridConfig
from pipeline.datasets.voc import load_records, read_split
from pipeline.extraction import extract_split
from pipeline.images import decode_rgb
from pipeline.patches import patch_grid
from pipeline.registry import get_spec

DEFAULT_VOC = Path(__file__).resolve().parents[2] / "shared" / "voc2007-subset" / "VOC2007"
METHODS = ("limit", "crop", "shared", "naive", "bounds")


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


class NaivePatches(torch.utils.data.Dataset):
    """One item per patch, the way tutorials do it: open the JPEG, crop, resize, normalise."""

    def __init__(self, year_dir: Path, ids: list[str], grid: GridConfig, spec, size: int):
        self.items = [
            (r.image_path, box)
            for r in load_records(year_dir, ids)
            for box in patch_grid(r.width, r.height, grid).tolist()
        ]
        self.transform = transforms.Compose(
            [
                transforms.Resize((size, size)),
                transforms.ToTensor(),
                transforms.Normalize(spec.mean, spec.std),
            ]
        )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> torch.Tensor:
        path, box = self.items[index]
        with Image.open(path) as image:
            return self.transform(image.convert("RGB").crop(box))


def naive(options: dict, backbone: BackboneConfig, grid: GridConfig) -> tuple[float, int]:
    spec = get_spec(backbone.name)
    device = resolve_device(options["device"])
    model = build_net(spec, backbone.weights).eval().to(device)
    year_dir = Path(options["voc_root"])
    ids = read_split(year_dir, options["split"])[: options["images"]]
    dataset = NaivePatches(year_dir, ids, grid, spec, backbone.input_size or spec.input_size)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=options["batch_size"], num_workers=options["workers"]
    )
    started = time.perf_counter()
    with torch.no_grad():
        for batch in loader:
            model(batch.to(device)).cpu()
    return len(dataset) / (time.perf_counter() - started), len(dataset)


def _timed(call, *args) -> tuple[object, float]:
    """call(*args) and the seconds it took."""
    started = time.perf_counter()
    result = call(*args)
    return result, time.perf_counter() - started


def bounds(options: dict, backbone: BackboneConfig, grid: GridConfig) -> dict:
    """Seconds of crop cutting, trunk and head on the real images' patches, and the grid's
    conv sharing factor: trunk pixels of crop mode over those of shared mode."""
    net = FrozenBackbone(
        BackboneConfig(backbone.name, backbone.weights, None, "shared"),
        resolve_device(options["device"]),
    )
    year_dir, size = Path(options["voc_root"]), net.input_size
    ids = read_split(year_dir, options["split"])[: options["images"]]
    seconds = dict.fromkeys(("crop", "trunk", "head"), 0.0)
    crop_pixels = shared_pixels = 0.0
    for record in load_records(year_dir, ids):
        image = decode_rgb(record.image_path)
        boxes = torch.from_numpy(patch_grid(record.width, record.height, grid))
        sides = (boxes[:, 2] - boxes[:, 0]).round(decimals=3).unique()  # as shared mode groups
        crop_pixels += len(boxes) * size**2
        shared_pixels += sum(record.width * record.height * (size / s) ** 2 for s in sides.tolist())
        for start in range(0, len(boxes), options["batch_size"]):
            crops, cut = _timed(net.crop, image, boxes[start : start + options["batch_size"]])
            seconds["crop"] += cut
            with torch.inference_mode():
                x = net._normalise(crops)
                fmap, trunk = _timed(net.parts.trunk, x)
                cells = torch.nn.functional.adaptive_avg_pool2d(fmap, net.parts.pool)
                _, head = _timed(net.parts.head, cells)
                seconds["trunk"] += trunk
                seconds["head"] += head
    return {**seconds, "sharing": crop_pixels / shared_pixels}


def print_bounds(results: dict) -> None:
    b = results["bounds"]
    forward = b["trunk"] + b["head"]
    trunk, head = b["trunk"] / forward, b["head"] / forward
    shared_limit = 1 / (trunk / b["sharing"] + head)
    crop = results["crop"]["rate"] / results["limit"]["rate"]
    naive = results["naive"]["rate"] / results["limit"]["rate"]
    print("what bounds the ratios (same images; work ratios, at equal speed per pixel):")
    print(f"  crop cutting = {b['crop'] / forward:.1%} of a forward pass -> crop/limit about {1 / (1 + b['crop'] / forward):.2f}")  # fmt: skip
    print(f"  trunk {trunk:.1%} + head {head:.1%} of a forward, grid sharing {b['sharing']:.2f}x "
          f"-> shared/limit about {shared_limit:.2f}, shared/crop about {shared_limit / crop:.2f} at this crop")  # fmt: skip
    print(f"  naive/limit = {naive:.2f} -> crop/naive about {1 / naive:.2f}")


def measure(method: str, options: dict) -> dict:
    """patches/s of one method, in this process."""
    backbone = BackboneConfig(options["backbone"], options["weights"], None, "crop")
    grid = GridConfig(scales=options["scales"], min_scale=options["min_scale"])
    if method == "bounds":
        return bounds(options, backbone, grid)
    if method == "naive":
        rate, patches = naive(options, backbone, grid)
    elif method == "limit":
        net = FrozenBackbone(backbone, resolve_device(options["device"]))
        rate, patches = backbone_only(net, 1024, options["batch_size"]), 1024
    else:
        with tempfile.TemporaryDirectory() as cache:
            config = ExtractConfig(
                data=f"voc:{options['voc_root']}",
                split=options["split"],
                cache_dir=cache,
                backbone=BackboneConfig(backbone.name, backbone.weights, None, method),
                grid=grid,
                device=options["device"],
                batch_size=options["batch_size"],
                workers=options["workers"],
                limit=options["images"],
            )
            summary = extract_split(config)
        rate, patches = summary.patches / summary.seconds, summary.patches
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    return {"rate": rate, "patches": patches, "rss_mib": rss}


@click.command()
@click.option("--voc-root", default=str(DEFAULT_VOC), show_default=True, help="VOC year dir.")
@click.option("--split", default="test", show_default=True, help="Split (test keeps every patch).")
@click.option("--images", type=int, default=8, show_default=True, help="Images to extract.")
@click.option("--backbone", default="efficientnet_lite0", show_default=True)
@click.option(
    "--weights",
    default=None,
    help="'random' for speed-only figures of nets whose weights are not here.",
)
@click.option("--scales", type=int, default=GridConfig.scales, show_default=True)
@click.option("--min-scale", type=float, default=GridConfig.min_scale, show_default=True)
@click.option("--batch-size", type=int, default=ExtractConfig.batch_size, show_default=True)
@click.option("--workers", type=int, default=ExtractConfig.workers, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--method", type=click.Choice(METHODS), default=None, hidden=True)
def main(method, **options) -> None:
    if method:  # a child: one measurement, as JSON
        print(json.dumps(measure(method, options)))
        return
    argv = [a for a in sys.argv[1:]]
    results = {}
    for name in METHODS:
        done = subprocess.run(
            [sys.executable, __file__, *argv, "--method", name], capture_output=True, text=True
        )
        if done.returncode:
            sys.exit(f"{name}: failed\n{done.stderr[-2000:]}")
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    device = resolve_device(options["device"])
    label = options["backbone"] + (
        " (untrained weights: speed only)" if options["weights"] == "random" else ""
    )
    print(f"device {device}, {torch.get_num_threads()} threads, {label}, {options['images']} images of {options['split']}, "
          f"{options['scales']} scales min {options['min_scale']}, batch {options['batch_size']}")  # fmt: skip
    print(f"{'':<22}{'patches/s':>10}{'peak RSS MiB':>14}  ratio")
    ratios = {
        "limit": "",
        "crop": f"crop/limit {results['crop']['rate'] / results['limit']['rate']:.2f} (target >= 0.9)",
        "shared": f"shared/crop {results['shared']['rate'] / results['crop']['rate']:.2f} (target AlexNet >= 6, Lite ~4)",
        "naive": f"crop/naive {results['crop']['rate'] / results['naive']['rate']:.2f} (target >= 1.5 CPU, 3 GPU)",
    }
    for name, ratio in ratios.items():
        value = results[name]
        print(f"{name:<22}{value['rate']:>10.1f}{value['rss_mib']:>14.0f}  {ratio}")
    print_bounds(results)


if __name__ == "__main__":
    main()
