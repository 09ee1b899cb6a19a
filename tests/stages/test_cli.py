"""End to end through the CLI on a synthetic VOC tree: extract -> fit (mlp, svm) -> score.

The backbone is a real torchvision ResNet-18 with untrained weights (`--weights random`,
loudly labelled as such) at 64 px: small enough for CPU, and coloured shapes are separable
even by random convolutional features.
"""

from __future__ import annotations

import csv
import re
import shutil

import h5py
import numpy as np
import pytest
from cli_helpers import SMALL, error_lines, invoke, read_ap


@pytest.fixture(scope="module")
def run(shapes_voc, tmp_path_factory):
    """One full run shared by the tests below: caches, both heads, both AP tables."""
    cache = tmp_path_factory.mktemp("cache")
    common = ["--voc-root", str(shapes_voc), "--cache-dir", str(cache), *SMALL]
    outputs = {"cache": cache, "common": common}
    for split in ("trainval", "test"):
        code, out = invoke("extract", "--split", split, "--workers", "0", *common)
        assert code == 0, out
        outputs[f"extract_{split}"] = out
    outputs["voc"] = shapes_voc
    for head in ("mlp", "svm"):
        code, out = invoke("fit", "--head", head, "--epochs", "15", "--hidden", "256", *common)
        assert code == 0, out
        ap_csv = cache / f"ap-{head}.csv"
        code, out = invoke("score", "--head", head, "--output", str(ap_csv), *common)
        assert code == 0, out
        outputs[f"score_{head}"] = out
        outputs[f"ap_{head}"] = read_ap(ap_csv)
    return outputs


@pytest.mark.parametrize("head", ["mlp", "svm"])
def test_map_far_above_chance(run, head):
    ap = run[f"ap_{head}"]
    assert set(ap) == {"bus", "car", "cat", "mean"}
    # Each class is in about half of the test images: chance AP is about 50.
    assert ap["mean"] > 90, ap
    assert min(ap[c] for c in ("bus", "car", "cat")) > 80, ap


def test_score_writes_per_image_scores_and_table(run):
    scores = run["cache"] / "ap-mlp-scores.csv"
    with open(scores) as handle:
        rows = list(csv.DictReader(handle))
    classes = ("bus", "car", "cat")
    assert len(rows) == 16
    assert set(rows[0]) == {"image_id", *classes, *(f"truth_{c}" for c in classes)}
    assert all(float(r["car"]) <= 0.0 for r in rows)  # log of a mean of p^k
    main = run["voc"] / "ImageSets" / "Main"
    for name in classes:  # the truth columns are the official per-class files
        lines = (main / f"{name}_test.txt").read_text().splitlines()
        official = dict(line.split() for line in lines)
        assert {r["image_id"]: r[f"truth_{name}"] for r in rows} == official
    assert "mean" in run["score_mlp"] and "mAP" in run["score_mlp"]


def test_cache_layout_and_summary(run):
    assert "patches/s" in run["extract_test"] and "GB written" in run["extract_test"]
    # per-stage seconds: compute dominates on CPU, and the three add up to at most the total
    timing = re.search(
        r"in ([\d.]+) s .*read ([\d.]+) s, compute ([\d.]+) s, write ([\d.]+) s",
        run["extract_test"],
    )
    total, read, compute, write = (float(v) for v in timing.groups())
    assert compute > write and read + compute + write <= total + 0.2
    (test_dir,) = run["cache"].glob("test-*")
    with h5py.File(test_dir / "shard-00000.h5", "r") as h5:
        assert h5["features"].dtype == np.float16 and h5["features"].shape[1] == 512
        assert h5["features"].chunks[1] == 512
        assert len(h5["image_ids"]) == 16
        # test keeps every patch: 3 scales on 128x96 -> 1 + 2x1... counted from the grid itself
        from pipeline.config import GridConfig
        from pipeline.features.patches import patch_grid

        per_image = len(patch_grid(128, 96, GridConfig(scales=3, min_scale=0.4)))
        assert len(h5["labels"]) == 16 * per_image


def test_second_extract_does_no_work(run):
    code, out = invoke("extract", "--split", "test", *run["common"])
    assert code == 0
    assert "nothing to do" in out


def test_fit_refuses_other_settings(run):
    common = [a if a != "0.4" else "0.5" for a in run["common"]]
    code, out = invoke("fit", "--head", "mlp", *common)
    assert code == 2
    assert "min_scale=0.5" in out and "min_scale=0.4" in out
    assert "Traceback" not in out


def test_score_refuses_missing_head(run, tmp_path):
    other = [a if a != str(run["cache"]) else str(tmp_path) for a in run["common"]]
    shutil.copytree(
        next(run["cache"].glob("test-*")), tmp_path / next(run["cache"].glob("test-*")).name
    )
    code, out = invoke("score", "--head", "mlp", *other)
    assert code == 2 and "run pipeline fit --head mlp first" in out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["extract", "--voc-root", "/nonexistent/voc"], "VOC root not found"),
        (["extract", "--split", "nosuch"], "unknown split 'nosuch'"),
        (["fit", "--classes", "car,unicorn"], "unknown unicorn"),
        (
            ["extract", "--backbone", "alexnet", "--weights", "/nonexistent.pth"],
            "weights file not found",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2(shapes_voc, tmp_path, args, expected):
    full = [*args]
    if "--voc-root" not in full:
        full += ["--voc-root", str(shapes_voc)]
    code, out = invoke(*full, "--cache-dir", str(tmp_path))
    assert code == 2, out
    lines = error_lines(out)
    assert len(lines) == 1 and expected in lines[0], out


def test_corrupt_jpeg_names_file_and_keeps_finished_shards(shapes_voc, tmp_path):
    voc = tmp_path / "VOC2007"
    shutil.copytree(shapes_voc, voc)
    ids = (voc / "ImageSets" / "Main" / "test.txt").read_text().split()
    bad = voc / "JPEGImages" / f"{ids[-1]}.jpg"
    bad.write_bytes(bad.read_bytes()[:200])
    args = ["extract", "--split", "test", "--voc-root", str(voc), "--cache-dir", str(tmp_path / "c"),
            "--images-per-shard", "4", "--workers", "0", *SMALL]  # fmt: skip
    code, out = invoke(*args)
    assert code == 2 and str(bad) in out and "cannot decode" in out
    (cache,) = (tmp_path / "c").glob("test-*")
    assert len(list(cache.glob("shard-*.h5"))) == len(ids) // 4 - 1 + (len(ids) % 4 > 0)
    # Replace the file: the rerun redoes only the last shard.
    shutil.copy(shapes_voc / "JPEGImages" / f"{ids[-1]}.jpg", bad)
    code, out = invoke(*args)
    assert code == 0 and "1 shards new" in out, out


def test_nan_features_are_refused_at_write_time(shapes_voc, tmp_path):
    """A broken weights file (one NaN weight) must not leave a poisoned shard behind."""
    import torch
    import torchvision

    state = torchvision.models.resnet18(weights=None).state_dict()
    state["layer4.1.conv2.weight"][0, 0, 0, 0] = float("nan")
    weights = tmp_path / "broken.pth"
    torch.save(state, weights)
    small = [a if a != "random" else str(weights) for a in SMALL]
    args = ["extract", "--split", "test", "--voc-root", str(shapes_voc), "--cache-dir",
            str(tmp_path / "c"), "--workers", "0", *small]  # fmt: skip
    code, out = invoke(*args)
    assert code == 2 and "NaN or Inf" in out and str(weights) in out, out
    assert not list((tmp_path / "c").glob("*/shard-*.h5"))


def test_full_disk_outside_the_shards_is_one_line(shapes_cache, tmp_path, monkeypatch):
    """A full disk while saving a head (or any result file) ends in one line, not a traceback,
    and leaves neither a head nor a temporary file."""
    import errno
    import os

    fsync = os.fsync

    def full(fd: int) -> None:
        if ".safetensors.tmp-" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fsync(fd)

    monkeypatch.setattr("pipeline.io.os.fsync", full)
    cache, common = shapes_cache
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    common = [a if a != str(cache) else str(copy) for a in common]

    def heads() -> list[str]:  # other tests' heads are there too, if they ran first
        return sorted(str(p.relative_to(copy)) for p in copy.glob("trainval-*/heads/*"))

    before = heads()
    code, out = invoke("fit", "--head", "svm", *common)
    assert code == 2 and "Traceback" not in out, out
    (line,) = error_lines(out)
    assert "svm.safetensors: cannot write it (No space left on device); free space on" in line, line
    assert heads() == before


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["fit", "--lse-r", "0"], "error: --lse-r 0.0: give a finite number in (0, 100]"),
        (["fit", "--grid", "whole", "--head", "mlp"], "error: --head 'mlp': whole-image features"),
        (
            ["localize", "--voc-root", ".", "--top", "0"],
            "error: --top 0: give a whole number from 1",
        ),
        (["score", "-k", "-1"], "error: --k -1.0: give a finite number in (0, 100]"),
    ],
)
def test_a_setting_out_of_range_is_one_line_naming_its_flag(args, line):
    """The library names the setting (lse_r, grid_kind); the command line says its flag."""
    code, out = invoke(*args)
    assert code == 2 and "Traceback" not in out, out
    (error,) = error_lines(out)
    assert error.startswith(line), error
    assert "use --head svm with --grid whole" in out or args[1] != "--grid"


def test_the_main_job_runs_on_the_voc_root_it_is_given(shapes_voc, tmp_path):
    """Issue 19, item 14: `.ci/main --voc-root DIR` exported MIDLEVEL_VOC_ROOT, which an
    exported MIDLEVEL_DATA beat: the job ran on another dataset. It now passes --data."""
    import json
    import os
    import subprocess
    from pathlib import Path

    other = tmp_path / "other"
    shutil.copytree(shapes_voc, other)
    job = Path(__file__).resolve().parents[2] / ".ci" / "job"
    env = {**os.environ, "MIDLEVEL_DATA": f"voc:{other}"}
    done = subprocess.run(["bash", str(job), "--voc-root", str(shapes_voc), *SMALL],
                          cwd=tmp_path, env=env, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "ap.json").read_text())["config"]["data"] == f"voc:{shapes_voc}"
    assert (tmp_path / "report" / "results.md").is_file()
