"""A smaller --limit on a finished cache, and a cache of no image (issue 26, defect 8): no
finished shard is deleted unless --overwrite says so, and an empty cache is never complete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import error_lines, extract_args, invoke

from pipeline.errors import CacheError
from pipeline.store.cache import SplitCache
from pipeline.store.keys import CacheKey


@pytest.fixture(scope="module")
def finished(shapes_voc, tmp_path_factory) -> Path:
    """A finished cache of the 16 test images, in 4 shards."""
    cache = tmp_path_factory.mktemp("limits")
    code, out = invoke(*extract_args(shapes_voc, cache, "--workers", "0"))
    assert code == 0 and "4 shards new" in out, out
    return cache


def shard_times(split_dir: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(split_dir.glob("shard-*.h5"))}


@pytest.mark.parametrize("limit", ["6", "0"])
def test_a_smaller_limit_keeps_every_finished_shard_and_says_how(finished, shapes_voc, limit):
    """`extract --limit 0` on a finished cache deleted its shards and said "nothing to do,
    all 0 shards already complete"; score then died with IndexError. A smaller --limit is
    refused in one line (by its range, or by the cache naming what it holds and the fix), and
    every shard stays as it was."""
    (split_dir,) = finished.glob("test-*")
    before = shard_times(split_dir)
    manifest = (split_dir / "manifest.json").read_text()
    code, out = invoke(*extract_args(shapes_voc, finished, "--workers", "0", "--limit", limit))
    assert code == 2 and len(error_lines(out)) == 1, out
    if limit == "6":
        assert error_lines(out) == [
            f"error: {split_dir}: holds all 16 images of the split, --limit 6 would drop 10 "
            "of them (shards shard-00001.h5 to shard-00003.h5); rerun without --limit to keep "
            "them, or with --overwrite to start again from the first 6"
        ], out
    assert shard_times(split_dir) == before
    assert (split_dir / "manifest.json").read_text() == manifest
    code, out = invoke(*extract_args(shapes_voc, finished, "--workers", "0"))
    assert code == 0 and "nothing to do, all 4 shards already complete" in out, out


def test_a_smaller_limit_with_overwrite_starts_again(shapes_voc, tmp_path):
    """--overwrite says the shards may go: the cache then holds the first images only."""
    code, out = invoke(*extract_args(shapes_voc, tmp_path, "--workers", "0", "--limit", "8"))
    assert code == 0 and "2 shards new" in out, out
    code, out = invoke(
        *extract_args(shapes_voc, tmp_path, "--workers", "0", "--limit", "4", "--overwrite")
    )
    assert code == 0 and "1 shards new" in out, out
    (split_dir,) = tmp_path.glob("test-*")
    assert json.loads((split_dir / "manifest.json").read_text())["n_images"] == 4
    code, out = invoke(*extract_args(shapes_voc, tmp_path, "--workers", "0", "--limit", "12"))
    assert code == 0 and "2 shards new, 1 reused" in out, out  # a larger limit adds shards


def test_a_cache_of_no_image_is_never_complete(tmp_path):
    """Asked to hold no image (a --limit 0 from Python, an empty split), the cache refuses;
    it is never marked complete, so no reader reaches an IndexError."""
    key = CacheKey({"format": 2})
    cache = SplitCache(tmp_path / f"test-{key.digest}", key)
    with pytest.raises(CacheError, match="no image to extract"):
        cache.prepare(n_images=0, images_per_shard=4, overwrite=False)
    assert not cache.manifest().get("complete")
    with pytest.raises(CacheError, match="extraction not finished"):
        cache.attrs()
