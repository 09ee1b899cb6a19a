"""kill -9 at many points of `pipeline extract`: a rerun completes the cache bit-identical to an
uninterrupted run, and no finished shard is ever lost or redone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from cli_helpers import SMALL, assert_same_shards

from pipeline.shards import read_shard

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same float sums in every process


def command(voc: Path, cache: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline", "extract", "--split", "test", "--voc-root", str(voc),
            "--cache-dir", str(cache), "--workers", "0", "--images-per-shard", "1", *SMALL]  # fmt: skip


def finished(cache: Path) -> dict:
    paths = list(cache.glob("test-*/manifest.json"))
    return json.loads(paths[0].read_text())["shards"] if paths else {}


def test_kill_9_at_ten_points_then_resume_is_bit_identical(shapes_voc, tmp_path):
    done = subprocess.run(
        command(shapes_voc, tmp_path / "ref"), env=ENV, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    killed = tmp_path / "killed"
    before: dict = {}
    kills, progress = 0, []
    rng = np.random.default_rng(0)
    for _ in range(10):
        process = subprocess.Popen(
            command(shapes_voc, killed),
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # wait for one more finished shard whatever the machine's speed, then kill somewhere
        # in the next one: in the forward pass, the HDF5 write or the manifest update
        start, deadline = len(finished(killed)), time.monotonic() + 300
        while process.poll() is None and len(finished(killed)) <= start:
            assert time.monotonic() < deadline, "no shard finished in 300 s"
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
        now = finished(killed)
        assert before.items() <= now.items()  # a finished shard is never lost nor rewritten
        for name in now:  # what the manifest lists is whole and readable
            read_shard(next(killed.glob("test-*")) / name)
        before = now
        progress.append(len(now))
    assert kills == 10, progress
    assert len(set(progress)) >= 3, progress  # the kills landed at several points of the run
    done = subprocess.run(command(shapes_voc, killed), env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    (ref,) = (tmp_path / "ref").glob("test-*")
    (out,) = killed.glob("test-*")
    assert not list(out.glob("*.tmp-*"))  # the shard in flight at a kill was cleaned up, redone
    assert_same_shards(ref, out)
