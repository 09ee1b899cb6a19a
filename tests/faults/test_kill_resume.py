"""kill -9 at ten chosen points of `pipeline extract`: a rerun completes the cache bit-identical
to an uninterrupted run, and no finished shard is ever lost or rewritten.

Each extract stops itself at its kill point (tests/faults/stop_at.py: in the forward pass, mid-write,
before the rename, before the manifest update, mid-manifest write) and is killed while stopped,
so every kill lands where it was meant to, on a fast machine or a slow one."""

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
from stop_at import EVENTS

from pipeline.store.shards import read_shard

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same float sums in every process
STOP_AT = Path(__file__).with_name("stop_at.py")


def command(voc: Path, cache: Path) -> list[str]:
    return ["extract", "--split", "test", "--voc-root", str(voc), "--cache-dir", str(cache),
            "--workers", "0", "--images-per-shard", "1", *SMALL]  # fmt: skip


def finished(cache: Path) -> dict:
    paths = list(cache.glob("test-*/manifest.json"))
    return json.loads(paths[0].read_text())["shards"] if paths else {}


def kill_points(n_shards: int, n_kills: int, seed: int = 0) -> list[tuple[int, str]]:
    """`n_kills` (shard, event) pairs in increasing shard order, every event used."""
    rng = np.random.default_rng(seed)
    shards = np.sort(rng.choice(n_shards, n_kills, replace=False))
    events = [EVENTS[i % len(EVENTS)] for i in rng.permutation(n_kills)]
    return list(zip(shards.tolist(), events, strict=True))


def stopped(pid: int) -> bool:
    """Whether the process is stopped by a signal (state T in /proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] == "T"


def run_until_stopped(args: list[str], where: tuple[int, str]) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, str(STOP_AT), f"{where[0]}:{where[1]}", *args],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 300
    try:
        while not stopped(process.pid):
            if process.poll() is not None:
                raise AssertionError(f"ended before {where}: {process.stderr.read()[-2000:]}")
            assert time.monotonic() < deadline, f"not stopped at {where} in 300 s"
            time.sleep(0.01)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process


def test_kill_9_at_ten_points_then_resume_is_bit_identical(shapes_voc, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", *command(shapes_voc, tmp_path / "ref")],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (ref,) = (tmp_path / "ref").glob("test-*")
    n_shards = len(list(ref.glob("shard-*.h5")))
    killed = tmp_path / "killed"
    before: dict = {}
    mtimes: dict = {}
    points = kill_points(n_shards, 10)
    assert len(points) == 10 and set(e for _, e in points) == set(EVENTS)
    for shard, event in points:
        process = run_until_stopped(command(shapes_voc, killed), (shard, event))
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert process.returncode == -signal.SIGKILL
        now = finished(killed)
        assert before.items() <= now.items()  # a finished shard is never lost nor rewritten
        (out,) = killed.glob("test-*")
        assert {n: (out / n).stat().st_mtime_ns for n in mtimes} == mtimes
        for name in now:  # what the manifest lists is whole and readable
            read_shard(out / name)
        # shards before the kill point are finished, the one it hit is not
        names = {f"shard-{k:05d}.h5" for k in range(shard)}
        assert names <= now.keys() and f"shard-{shard:05d}.h5" not in now, (shard, event)
        before, mtimes = now, {n: (out / n).stat().st_mtime_ns for n in now}
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", *command(shapes_voc, killed)],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (out,) = killed.glob("test-*")
    assert not list(out.glob("*.tmp-*"))  # the shard in flight at a kill was cleaned up, redone
    assert_same_shards(ref, out)
