"""The paper's full 8-scale grid against the coarse 4-scale one, on the real VOC 2007 subset.

For each grid: extract all of trainval and test (shared mode, the default runtime), fit the
MLP and the SVM on the five boxed classes, score both on every test image. Prints one
markdown table (AP per class, mean, extract wall times) and keeps each run's ap.csv:

    python bench/paper_grid.py --voc-root ../shared/voc2007-subset/VOC2007 --output runs/grid
    python bench/paper_grid.py --voc-root ... --grids 8 --precision int8   # the paper's, int8

Each step is a `pipeline` command (printed before it runs), so the table is what a user gets;
a rerun reuses the extracted caches and fitted heads it finds.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from pathlib import Path

import click

CLASSES = "bus,car,cat,person,train"
GRIDS = {"4": ("4 scales", ["--scales", "4", "--min-scale", "0.3"]), "8": ("8 scales (paper)", [])}
HEADS = ("mlp", "svm")


def pipeline(*args: str) -> float:
    """Run one pipeline command, its output passed through; its wall seconds."""
    command = [str(Path(sys.executable).with_name("pipeline")), *args]
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - started


def read_ap(path: Path) -> dict[str, float]:
    with open(path) as handle:
        return {row["class"]: float(row["ap_voc07"]) for row in csv.DictReader(handle)}


@click.command()
@click.option("--voc-root", required=True, help="VOC 2007 year directory.")
@click.option("--output", default="runs/grid", show_default=True, help="Directory of the runs.")
@click.option("--mode", default="shared", show_default=True)
@click.option("--precision", default="fp32", show_default=True, help="fp32 or int8.")
@click.option("--grids", default="4,8", show_default=True, help="Scales of the grids to run.")
def main(voc_root: str, output: str, mode: str, precision: str, grids: str) -> None:
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    rows, times = {}, {}
    for name, grid in (GRIDS[g] for g in grids.split(",")):
        common = ["--voc-root", voc_root, "--cache-dir", str(out / "cache"), "--mode", mode,
                  "--precision", precision, *grid]  # fmt: skip
        for split in ("trainval", "test"):
            times[(name, split)] = pipeline("extract", "--split", split, *common)
        for head in HEADS:
            pipeline("fit", "--head", head, "--classes", CLASSES, *common)
            ap = out / f"ap-{name.split()[0]}-{head}-{precision}.csv"
            pipeline("score", "--head", head, "--output", str(ap), *common)
            rows[(name, head)] = read_ap(ap)
    classes = CLASSES.split(",")
    print(f"\n{mode} mode, {precision}")
    print("\n| grid | head | " + " | ".join(classes) + " | mean | extract trainval / test |")
    print("|---|---|" + "---:|" * (len(classes) + 2))
    for (name, head), ap in rows.items():
        cells = " | ".join(f"{ap[c]:.2f}" for c in classes)
        trainval, test = times[(name, "trainval")], times[(name, "test")]
        wall = f"{trainval / 60:.1f} / {test / 60:.1f} min ({trainval + test:.0f} s)"
        print(f"| {name} | {head.upper()} | {cells} | **{ap['mean']:.2f}** | {wall} |")


if __name__ == "__main__":
    main()
