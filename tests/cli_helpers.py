"""Running the CLI in-process, on settings small enough for a CPU test."""

from __future__ import annotations

import csv
from pathlib import Path

from click.testing import CliRunner

from pipeline.cli import cli

# A real torchvision ResNet-18 with untrained weights (`--weights random`, loudly labelled as
# such) at 64 px: small enough for CPU, and coloured shapes are separable even by random
# convolutional features.
SMALL = ["--backbone", "resnet18", "--weights", "random", "--input-size", "64",
         "--scales", "3", "--min-scale", "0.4"]  # fmt: skip


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def read_ap(path: Path) -> dict[str, float]:
    with open(path) as handle:
        return {row["class"]: float(row["ap_voc07"]) for row in csv.DictReader(handle)}


def extract_splits(voc: Path, cache: Path, *extra: str) -> list[str]:
    """Extract trainval and test of `voc` into `cache`; returns the common options."""
    common = ["--voc-root", str(voc), "--cache-dir", str(cache), *SMALL, *extra]
    for split in ("trainval", "test"):
        code, out = invoke("extract", "--split", split, "--workers", "0", *common)
        assert code == 0, out
    return common
