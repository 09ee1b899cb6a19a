"""Seconds per photo of `pipeline predict`, in crop and shared mode, on real VOC photos.

For each mode: a head is fitted on the patches of a few trainval images (its accuracy does
not matter here, only that its settings are the mode's), then `pipeline predict`'s stage runs in memory
over `--images` test photos, as `pipeline predict photo.jpg ...` does, at the paper's grid by
default. Printed per mode: seconds per photo and patches/s of the prediction alone, and the
first-call cost (building the net) apart, so that a few photos and many compare.

    .venv/bin/python bench/predict_speed.py --images 8
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click

from pipeline.config import BackboneConfig, ExtractConfig, FitConfig, GridConfig, PredictConfig
from pipeline.datasets.voc import read_split, resolve_year_dir
from pipeline.features.engine import extract_split
from pipeline.features.patches import patch_grid
from pipeline.predict import load_head
from pipeline.training.fit import fit_head
from stages import predict

DEFAULT_VOC = Path(__file__).resolve().parents[2] / "shared" / "voc2007-subset" / "VOC2007"


def measure(mode: str, options: dict, photos: list[Path], cache: str) -> dict:
    backbone = BackboneConfig(options["backbone"], options["weights"], None, mode)
    grid = GridConfig(scales=options["scales"], min_scale=options["min_scale"])
    data = f"voc:{options['voc_root']}"
    extract_split(
        ExtractConfig(data=data, cache_dir=cache, backbone=backbone, grid=grid,
                      split="trainval", limit=options["train_images"], workers=0)
    )  # fmt: skip
    summary = fit_head(
        FitConfig(data=data, cache_dir=cache, backbone=backbone, grid=grid, head="svm")
    )
    started = time.perf_counter()
    load_head(summary.head_path).backbone  # noqa: B018 (builds the net: the first-call cost)
    setup = time.perf_counter() - started
    config = PredictConfig(
        head=summary.head_path, sources=tuple(map(str, photos)), cache_dir=cache,
        output=str(Path(cache) / f"predictions-{mode}.csv"), cached=False,
        workers=options["workers"],
    )  # fmt: skip
    result = predict.run(config)
    return {"seconds": result.seconds, "images": result.images, "setup": setup}


@click.command()
@click.option("--voc-root", default=str(DEFAULT_VOC), show_default=True, help="VOC year dir.")
@click.option("--images", type=int, default=8, show_default=True, help="Test photos to predict.")
@click.option("--train-images", type=int, default=12, show_default=True,
              help="Trainval images the head is fitted on.")  # fmt: skip
@click.option("--backbone", default="efficientnet_lite0", show_default=True)
@click.option("--weights", default=None, help="Weights FILE or 'random' [default: ImageNet].")
@click.option("--scales", type=int, default=GridConfig.scales, show_default=True)
@click.option("--min-scale", type=float, default=GridConfig.min_scale, show_default=True)
@click.option("--workers", type=int, default=1, show_default=True)
def main(**options) -> None:
    year_dir = resolve_year_dir(options["voc_root"])
    photos = [year_dir / "JPEGImages" / f"{i}.jpg" for i in read_split(year_dir, "test")]
    photos = photos[: options["images"]]
    grid = GridConfig(scales=options["scales"], min_scale=options["min_scale"])
    from PIL import Image

    patches = 0
    for photo in photos:
        with Image.open(photo) as image:
            patches += len(patch_grid(*image.size, grid))
    print(f"{len(photos)} photos, {patches} patches ({patches / len(photos):.0f} per photo), "
          f"{options['backbone']} {grid.scales} scales, min_scale {grid.min_scale}")  # fmt: skip
    with tempfile.TemporaryDirectory() as cache:
        for mode in ("crop", "shared"):
            m = measure(mode, options, photos, cache)
            per = m["seconds"] / m["images"]
            print(
                f"{mode:>6}: {per:.2f} s per photo ({m['images'] / m['seconds']:.2f} photos/s, "
                f"{patches / m['seconds']:.1f} patches/s); building the net once {m['setup']:.1f} s"
            )


if __name__ == "__main__":
    main()
