"""Running the CLI in-process, on settings small enough for a CPU test."""

from __future__ import annotations

import contextlib
import csv
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.store.shards import read_shard

# A real torchvision ResNet-18 with untrained weights (`--weights random`, loudly labelled as
# such) at 64 px: small enough for CPU, and coloured shapes are separable even by random
# convolutional features.
SMALL = ["--backbone", "resnet18", "--weights", "random", "--input-size", "64",
         "--scales", "3", "--min-scale", "0.4"]  # fmt: skip


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def extract_args(voc: Path, cache: Path, *extra: str) -> list[str]:
    """Extract the test split of `voc` (16 images in the shapes tree) in shards of 4 images."""
    return ["extract", "--split", "test", "--voc-root", str(voc), "--cache-dir", str(cache),
            "--images-per-shard", "4", *SMALL, *extra]  # fmt: skip


@contextlib.contextmanager
def held_port() -> Iterator[str]:
    """A port of 127.0.0.1 this test listens on: `pipeline serve` given it runs every check
    and stops at the bind, in one line, so it can run in this process without serving."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield str(held.getsockname()[1])


def error_lines(output: str) -> list[str]:
    """The "error:" lines of a command's output: a refusal is exactly one."""
    return [line for line in output.splitlines() if line.startswith("error:")]


def assert_same_shards(expected: Path, actual: Path) -> None:
    """Two cache directories hold the same shards, bit for bit in every array."""
    names = sorted(p.name for p in expected.glob("shard-*.h5"))
    assert sorted(p.name for p in actual.glob("shard-*.h5")) == names
    for name in names:
        a, b = read_shard(expected / name), read_shard(actual / name)
        assert a.image_ids == b.image_ids, name
        np.testing.assert_array_equal(a.features.view(np.uint16), b.features.view(np.uint16))
        for field in ("boxes", "labels", "sampled", "image_index", "sizes", "image_labels"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=name)


def write_rows(path: Path, rows: list[dict]) -> None:
    """A table of dict rows, as the verbs write theirs (to tamper with a finished one)."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


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
