"""The VOC and the COCO reader on the same real photos: per-class AP from each, side by side.

A slice of ../shared/voc2007-subset (the first --trainval and --test images) is written as a
VOC tree without per-class files (truth from the XML, as a COCO file has it) and converted
to COCO JSON; each is extracted, fitted and scored with the same settings, and the two AP
tables are printed with whether they are identical.

    .venv/bin/python bench/readers_agree.py --trainval 120 --test 80
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from synthetic_datasets import voc_and_coco_slice  # noqa: E402

from pipeline.config import (  # noqa: E402
    BackboneConfig,
    ExtractConfig,
    FitConfig,
    GridConfig,
    ScoreConfig,
)
from pipeline.evaluation.scoring import score_split  # noqa: E402
from pipeline.features.engine import extract_split  # noqa: E402
from pipeline.training.fit import fit_head  # noqa: E402

DEFAULT_VOC = Path(__file__).resolve().parents[2] / "shared" / "voc2007-subset" / "VOC2007"
BOXED = ("bus", "car", "cat", "person", "train")


@click.command()
@click.option("--voc-root", default=str(DEFAULT_VOC), show_default=True)
@click.option("--trainval", type=int, default=120, show_default=True)
@click.option("--test", type=int, default=80, show_default=True)
@click.option("--mode", type=click.Choice(["crop", "shared"]), default="shared", show_default=True)
@click.option("--scales", type=int, default=4, show_default=True)
@click.option("--min-scale", type=float, default=0.3, show_default=True)
def main(voc_root, trainval, test, mode, scales, min_scale) -> None:
    backbone = BackboneConfig(mode=mode)
    grid = GridConfig(scales=scales, min_scale=min_scale)
    with tempfile.TemporaryDirectory() as root:
        sizes = {"trainval": trainval, "test": test}
        specs = voc_and_coco_slice(Path(voc_root), Path(root), sizes)
        tables = {}
        for spec in specs:
            cache = str(Path(root) / f"cache-{spec.split(':')[0]}")
            base = ExtractConfig(data=spec, cache_dir=cache, backbone=backbone, grid=grid)
            for split in ("trainval", "test"):
                extract_split(replace(base, split=split))
            fit_head(FitConfig(data=spec, cache_dir=cache, backbone=backbone, grid=grid,
                               classes=BOXED))  # fmt: skip
            output = str(Path(root) / f"ap-{spec.split(':')[0]}.csv")
            result = score_split(ScoreConfig(data=spec, cache_dir=cache, backbone=backbone,
                                             grid=grid, output=output))  # fmt: skip
            tables[spec.split(":")[0]] = result.table()
    print(f"{'class':<10}{'voc reader':>12}{'coco reader':>13}")
    for voc, coco in zip(tables["voc"], tables["coco"], strict=True):
        print(f"{voc['class']:<10}{voc['ap_voc07']:>12.2f}{coco['ap_voc07']:>13.2f}")
    same = tables["voc"] == tables["coco"]
    print(f"{trainval} trainval -> {test} test images, {mode} mode, {scales} scales: "
          f"the two AP tables are {'identical' if same else 'DIFFERENT'}")  # fmt: skip


if __name__ == "__main__":
    main()
