"""Sweep speed: a 16-setting `pipeline sweep` in parallel against the same sweep run serially,
and against the extraction of the cache it reuses.

Prints wall seconds of the sweep with --jobs N and with --jobs 1 (same settings, same cache,
separate output files so nothing is resumed), their ratio, and both against the compute
seconds recorded in the cache manifest when it was extracted. Extract the training split
first with the same feature options, e.g.

    F="--voc-root ../shared/voc2007-subset/VOC2007 --scales 4 --min-scale 0.3"
    pipeline extract --split trainval $F
    python bench/sweep_speed.py $F --classes bus,car,cat,person,train
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

# 2 x 2 x 2 x 2 = 16 settings of the MLP head and the pooling exponent.
GRID = ["hidden=256,1024", "dropout=0.3,0.5", "weight_decay=0.0001,0.001", "k=3,5"]


def timed_sweep(options: list[str], jobs: int, output: Path) -> float:
    command = [sys.executable, "-m", "pipeline", "sweep", *options, "--jobs", str(jobs),
               "--output", str(output)]  # fmt: skip
    for param in GRID:
        command += ["--param", param]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--jobs", default=2, show_default=True, help="Processes of the parallel sweep.")
@click.option("--folds", default=3, show_default=True, help="Cross-validation folds.")
@click.option("--epochs", default=5, show_default=True, help="MLP epochs per fit.")
@click.pass_context
def main(ctx: click.Context, jobs: int, folds: int, epochs: int) -> None:
    """Other options go to `pipeline sweep` (feature options, --voc-root, --cache-dir, --classes)."""
    options = [*ctx.args, "--folds", str(folds), "--epochs", str(epochs)]
    with tempfile.TemporaryDirectory() as tmp:
        parallel = timed_sweep(options, jobs, Path(tmp) / "parallel.csv")
        serial = timed_sweep(options, 1, Path(tmp) / "serial.csv")
        sidecar = json.loads((Path(tmp) / "parallel.json").read_text())
    cache_root = Path(sidecar["config"]["base"]["cache_dir"])
    manifest = json.loads(
        (
            cache_root
            / f"{sidecar['config']['base']['split']}-{sidecar['digest']}"
            / "manifest.json"
        ).read_text()
    )
    extract = sum(s.get("seconds", 0.0) for s in manifest["shards"].values())
    n = len(sidecar["config"]["settings"])
    print(f"sweep of {n} settings x {folds} folds, MLP {epochs} epochs, cache {sidecar['digest']}")
    print(f"{'':<28}{'seconds':>10}{'ratio':>10}")
    print(f"{'serial (--jobs 1)':<28}{serial:>10.1f}{1.0:>10.2f}")
    print(f"{f'parallel (--jobs {jobs})':<28}{parallel:>10.1f}{serial / parallel:>10.2f}  speed-up")
    if extract:
        print(f"{'extraction of the cache':<28}{extract:>10.1f}")
        print(
            f"parallel sweep / extraction: {parallel / extract:.2f}; serial: {serial / extract:.2f}"
        )


if __name__ == "__main__":
    main()
