"""`torchrun --nproc-per-node 2 -m pipeline extract`: two processes, one cache (gloo, CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from cli_helpers import SMALL, invoke

from pipeline.store.shards import read_shard


def test_two_processes_fill_one_cache_like_one_process(shapes_voc, tmp_path):
    args = ["extract", "--split", "test", "--voc-root", str(shapes_voc), "--workers", "0",
            "--images-per-shard", "3", *SMALL]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "pipeline", *args, "--cache-dir", str(tmp_path / "two")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("extract test:") == 1, done.stdout  # one summary for the run
    assert "16 images" in done.stdout and "6 shards new" in done.stdout
    code, out = invoke(*args, "--cache-dir", str(tmp_path / "one"))
    assert code == 0, out
    (two,) = (tmp_path / "two").glob("test-*")
    (one,) = (tmp_path / "one").glob("test-*")
    assert two.name == one.name
    manifest = json.loads((two / "manifest.json").read_text())
    assert manifest["complete"] and len(manifest["shards"]) == 6
    assert {s["rank"] for s in manifest["shards"].values()} == {0, 1}  # both wrote shards
    for path in sorted(one.glob("shard-*.h5")):
        a, b = read_shard(path), read_shard(two / path.name)
        assert a.image_ids == b.image_ids
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_allclose(
            a.features.astype(np.float32), b.features.astype(np.float32), atol=2e-2
        )
    # a rerun with another process count finds nothing to do
    code, out = invoke(*args, "--cache-dir", str(tmp_path / "two"))
    assert code == 0 and "nothing to do" in out
