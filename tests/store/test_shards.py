import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest

from pipeline import __version__
from pipeline.config import CacheSettings
from pipeline.errors import CacheError
from pipeline.store.cache import SplitCache, WriterLock
from pipeline.store.keys import CacheKey, cache_path
from pipeline.store.shards import (
    FEATURE_CHUNK_BYTES,
    Shard,
    read_shard,
    shard_problem,
    write_shard,
)

KEY = CacheKey({"backbone": {"name": "b"}})
DIGEST = KEY.digest
CLASSES = [f"class{c}" for c in range(20)]


def make_shard(n=40, dim=24, n_images=3, seed=0) -> Shard:
    rng = np.random.default_rng(seed)
    features = rng.normal(0, 10, (n, dim)).astype(np.float16)
    # values a careless float cast would change: nan, infinities, -0, subnormal, max
    features.flat[:6] = np.array([np.nan, np.inf, -np.inf, -0.0, 6e-8, 65504], np.float16)
    return Shard(
        features=features,
        boxes=rng.uniform(0, 500, (n, 4)).astype(np.float32),
        labels=rng.integers(-1, 21, n).astype(np.int16),
        sampled=rng.random(n) < 0.5,
        image_index=np.sort(rng.integers(0, n_images, n)).astype(np.int32),
        image_ids=[f"{i:06d}" for i in range(1, n_images + 1)],
        sizes=rng.integers(100, 500, (n_images, 2)).astype(np.int32),
        image_labels=rng.integers(-1, 2, (n_images, 20)).astype(np.int8),
    )


def test_write_read_bit_identical(tmp_path):
    shard = make_shard()
    path = tmp_path / "shard-00000.h5"
    size = write_shard(path, shard, {"digest": DIGEST})
    assert size == path.stat().st_size > 0
    back = read_shard(path)
    np.testing.assert_array_equal(back.features.view(np.uint16), shard.features.view(np.uint16))
    np.testing.assert_array_equal(back.boxes, shard.boxes)
    np.testing.assert_array_equal(back.labels, shard.labels)
    np.testing.assert_array_equal(back.image_index, shard.image_index)
    np.testing.assert_array_equal(back.sizes, shard.sizes)
    np.testing.assert_array_equal(back.sampled, shard.sampled)
    np.testing.assert_array_equal(back.image_labels, shard.image_labels)
    assert back.image_ids == shard.image_ids
    assert back.sampled.dtype == bool and back.image_labels.dtype == np.int8
    assert back.features.dtype == np.float16 and back.labels.dtype == np.int16


def test_write_casts_to_the_stored_dtypes(tmp_path):
    shard = make_shard()
    wide = Shard(
        features=shard.features.astype(np.float32),
        boxes=shard.boxes.astype(np.float64),
        labels=shard.labels.astype(np.int64),
        sampled=shard.sampled.astype(np.uint8),
        image_index=shard.image_index.astype(np.int64),
        image_ids=shard.image_ids,
        sizes=shard.sizes.astype(np.int64).ravel(),  # reshaped to [M, 2]
        image_labels=shard.image_labels.astype(np.int64),
    )
    write_shard(tmp_path / "s.h5", wide, {"digest": DIGEST})
    back = read_shard(tmp_path / "s.h5")
    np.testing.assert_array_equal(back.features.view(np.uint16), shard.features.view(np.uint16))
    np.testing.assert_array_equal(back.sizes, shard.sizes)


def test_read_without_features(tmp_path):
    shard = make_shard()
    write_shard(tmp_path / "s.h5", shard, {"digest": DIGEST})
    back = read_shard(tmp_path / "s.h5", features=False)
    assert back.features.size == 0
    np.testing.assert_array_equal(back.labels, shard.labels)


@pytest.mark.parametrize(("n", "dim"), [(40, 24), (1000, 1280), (3, 2048)])
def test_hdf5_layout(tmp_path, n, dim):
    path = tmp_path / "shard-00000.h5"
    attrs = {
        "digest": DIGEST,
        "split": "trainval",
        "class_names": CLASSES,  # the 20 columns of make_shard's image labels
        "background_label": 20,
    }
    write_shard(path, make_shard(n=n, dim=dim), attrs)
    with h5py.File(path, "r") as h5:
        assert set(h5) == {
            "features",
            "boxes",
            "labels",
            "sampled",
            "image_index",
            "image_ids",
            "sizes",
            "image_labels",
        }
        dtypes = {name: h5[name].dtype for name in h5}
        assert dtypes["features"] == np.float16
        assert dtypes["boxes"] == np.float32
        assert dtypes["labels"] == np.int16
        assert dtypes["image_index"] == np.int32
        assert dtypes["sizes"] == np.int32
        assert dtypes["image_ids"].kind == "S"
        assert h5["features"].shape == (n, dim)
        assert h5["features"].chunks == (min(n, FEATURE_CHUNK_BYTES // (2 * dim)), dim)
        assert h5["sizes"].shape == (3, 2)
        assert h5.attrs["digest"] == DIGEST
        assert h5.attrs["code_version"] == __version__
        assert h5.attrs["background_label"] == 20
        assert json.loads(h5.attrs["class_names"]) == CLASSES
    assert shard_problem(path, DIGEST) is None


def test_write_leaves_no_temp_file(tmp_path):
    write_shard(tmp_path / "shard-00000.h5", make_shard(), {"digest": DIGEST})
    assert [p.name for p in tmp_path.iterdir()] == ["shard-00000.h5"]


def test_interrupted_write_leaves_no_shard_nor_temp_file(tmp_path, monkeypatch):
    """Ctrl-C between the write and the rename: neither a shard nor its temporary file stays."""

    def interrupt(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr("pipeline.io.os.replace", interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_shard(tmp_path / "shard-00000.h5", make_shard(), {"digest": DIGEST})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("code", "fix"),
    [
        (errno.ENOSPC, "free space on "),
        (errno.EFBIG, "raise the file size limit (ulimit -f) or lower --images-per-shard "),
        (errno.EIO, "check the disk at "),
    ],
)
def test_failed_write_is_one_line_naming_the_shard(tmp_path, monkeypatch, code, fix):
    """An OS error while writing says which file, why, and what to do, and leaves nothing."""

    def fail(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr("pipeline.io.os.fsync", fail)
    path = tmp_path / "shard-00000.h5"
    with pytest.raises(CacheError) as exc:
        write_shard(path, make_shard(), {"digest": DIGEST})
    message = str(exc.value)
    assert message.startswith(f"{path}: cannot write it ({os.strerror(code)}); {fix}")
    assert message.endswith("rerun the same command: finished shards are kept")
    assert "\n" not in message
    assert list(tmp_path.iterdir()) == []


def test_write_empty_shard(tmp_path):
    # a shard whose images kept no patch (e.g. one image covered by a difficult object)
    empty = Shard(
        features=np.zeros((0, 8), np.float16),
        boxes=np.zeros((0, 4), np.float32),
        labels=np.zeros(0, np.int16),
        sampled=np.zeros(0, bool),
        image_index=np.zeros(0, np.int32),
        image_ids=["000001"],
        sizes=np.array([[50, 40]], np.int32),
        image_labels=np.zeros((1, 20), np.int8),
    )
    write_shard(tmp_path / "s.h5", empty, {"digest": DIGEST})
    assert read_shard(tmp_path / "s.h5").features.shape == (0, 8)


def test_read_corrupt_shard(tmp_path):
    path = tmp_path / "shard-00000.h5"
    path.write_bytes(b"not hdf5")
    with pytest.raises(CacheError, match="unreadable shard") as exc:
        read_shard(path)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)
    assert shard_problem(path, DIGEST) == "truncated or unreadable HDF5"
    assert shard_problem(tmp_path / "absent.h5", DIGEST) == "file missing"


def rewrite(path, edit) -> None:
    with h5py.File(path, "r+") as h5:
        edit(h5)


def resize(name, rows):
    def edit(h5):
        data = h5[name][...]
        del h5[name]
        h5[name] = np.resize(data, (rows, *data.shape[1:]))

    return edit


FINGERPRINT = {"backbone": {"name": "b", "input_size": 64}, "grid": {"scales": 3}}


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda h5: h5.attrs.__setitem__("digest", "otherdigest0"), f"digest otherdigest0, not {DIGEST}"),
        (lambda h5: h5.attrs.__delitem__("digest"), f"digest None, not {DIGEST}"),
        (lambda h5: h5.attrs.__setitem__("fingerprint", json.dumps({"backbone": {"name": "b"}})),
         "fingerprint attribute differs from these settings"),
        (lambda h5: h5.attrs.__setitem__("fingerprint", "{not json"),
         "fingerprint attribute differs from these settings"),
        (lambda h5: h5.__delitem__("labels"), "dataset 'labels' missing"),
        (lambda h5: h5.__delitem__("image_labels"), "dataset 'image_labels' missing"),
        (resize("labels", 12), "features has 40 rows but labels 12"),
        (resize("image_index", 41), "features has 40 rows but image_index 41"),
        (resize("sizes", 2), "image_ids has 3 rows but sizes 2"),
    ],
)  # fmt: skip
def test_shard_problem_names_what_is_wrong(tmp_path, edit, problem):
    path = tmp_path / "shard-00000.h5"
    write_shard(path, make_shard(), {"digest": DIGEST, "fingerprint": FINGERPRINT})
    assert shard_problem(path, DIGEST, FINGERPRINT) is None
    rewrite(path, edit)
    assert shard_problem(path, DIGEST, FINGERPRINT) == problem


def test_shard_problem_truncated(tmp_path):
    path = tmp_path / "shard-00000.h5"
    write_shard(path, make_shard(), {"digest": DIGEST})
    os.truncate(path, path.stat().st_size - 1)
    assert shard_problem(path, DIGEST) == "truncated or unreadable HDF5"


def test_shard_problem_without_fingerprint_attribute(tmp_path):
    """Shards written before the fingerprint attribute existed are checked by digest alone."""
    path = tmp_path / "shard-00000.h5"
    write_shard(path, make_shard(), {"digest": DIGEST})
    assert shard_problem(path, DIGEST, FINGERPRINT) is None


# --- SplitCache -------------------------------------------------------------------------


def new_cache(tmp_path) -> SplitCache:
    return SplitCache(tmp_path / f"trainval-{DIGEST}", KEY)


def finish(cache: SplitCache, index: int, n_shards: int, digest=DIGEST) -> None:
    write_shard(cache.shard_path(index), make_shard(seed=index), {"digest": digest})
    cache.record(index, images=3, patches=40, seconds=1.5, n_shards=n_shards)


def test_prepare_writes_fingerprint_and_manifest(tmp_path):
    cache = new_cache(tmp_path)
    cache.prepare(n_images=6, images_per_shard=3, overwrite=False)
    fingerprint = json.loads((cache.directory / "fingerprint.json").read_text())
    assert fingerprint == {"digest": DIGEST, "backbone": {"name": "b"}}
    assert cache.manifest() == {
        "n_images": 6,
        "images_per_shard": 3,
        "limit": None,
        "shards": {},
        "complete": False,
    }
    assert cache.shard_path(2).name == "shard-00002.h5"


def done(cache: SplitCache, index: int) -> bool:
    """Recorded and whole: what extract does not redo."""
    return index not in cache.pending(index + 1, cache.bad_shards(), retry_skipped=False)


def test_record_is_done_and_shard_paths(tmp_path):
    cache = new_cache(tmp_path)
    cache.prepare(n_images=6, images_per_shard=3, overwrite=False)
    finish(cache, 1, n_shards=2)
    assert done(cache, 1) and not done(cache, 0)
    assert cache.manifest()["shards"] == {
        "shard-00001.h5": {
            "images": 3,
            "patches": 40,
            "seconds": 1.5,
            "rank": 0,
            "skipped": 0,
            "data": "",
        }
    }
    assert cache.extract_seconds() == 1.5
    with pytest.raises(CacheError, match="extraction not finished"):
        cache.shard_paths()
    finish(cache, 0, n_shards=2)
    assert cache.manifest()["complete"] is True
    assert cache.shard_paths() == [cache.shard_path(0), cache.shard_path(1)]
    labels = [s.labels for s in cache.iter_shards(features=False)]
    np.testing.assert_array_equal(labels[1], make_shard(seed=1).labels)


def test_shard_on_disk_but_not_recorded_is_not_done(tmp_path):
    cache = new_cache(tmp_path)
    cache.prepare(n_images=3, images_per_shard=3, overwrite=False)
    write_shard(cache.shard_path(0), make_shard(), {"digest": DIGEST})
    assert not done(cache, 0)


def test_shard_with_other_digest(tmp_path):
    cache = new_cache(tmp_path)
    cache.prepare(n_images=6, images_per_shard=3, overwrite=False)
    finish(cache, 0, n_shards=2)
    finish(cache, 1, n_shards=2, digest="otherdigest0")
    assert not done(cache, 1)
    assert cache.bad_shards() == {"shard-00001.h5": f"digest otherdigest0, not {DIGEST}"}
    with pytest.raises(CacheError) as exc:
        cache.shard_paths()
    assert str(exc.value) == (
        f"{cache.shard_path(1)}: digest otherdigest0, not {DIGEST}; "
        "rerun pipeline extract with the same options to rebuild it"
    )


def test_recorded_shard_missing(tmp_path):
    cache = new_cache(tmp_path)
    cache.prepare(n_images=3, images_per_shard=3, overwrite=False)
    finish(cache, 0, n_shards=1)
    cache.shard_path(0).unlink()
    assert not done(cache, 0)
    with pytest.raises(CacheError, match="file missing; rerun pipeline extract"):
        cache.shard_paths()


def test_prepare_resumes_without_overwrite(tmp_path):
    cache = new_cache(tmp_path)
    cache.prepare(n_images=6, images_per_shard=3, overwrite=False)
    finish(cache, 0, n_shards=2)
    cache.prepare(n_images=6, images_per_shard=3, overwrite=False)
    assert done(cache, 0)
    assert list(cache.manifest()["shards"]) == ["shard-00000.h5"]


def test_prepare_overwrite_empties(tmp_path):
    cache = new_cache(tmp_path)
    cache.prepare(n_images=6, images_per_shard=3, overwrite=False)
    finish(cache, 0, n_shards=2)
    finish(cache, 1, n_shards=2)
    cache.prepare(n_images=6, images_per_shard=3, overwrite=True)
    assert not list(cache.directory.glob("shard-*"))
    assert cache.manifest()["shards"] == {} and cache.manifest()["complete"] is False
    assert not done(cache, 0)


def test_prepare_removes_stale_temp_files(tmp_path):
    cache = new_cache(tmp_path)
    cache.prepare(n_images=6, images_per_shard=3, overwrite=False)
    finish(cache, 0, n_shards=2)
    stale = cache.directory / "shard-00001.h5.tmp-99999"
    stale.write_bytes(b"half a shard")
    (cache.directory / "manifest.json.tmp-99999").write_text("{")
    cache.prepare(n_images=6, images_per_shard=3, overwrite=False)
    assert not list(cache.directory.glob("*.tmp-*"))
    assert cache.shard_path(0).exists() and done(cache, 0)


def test_prepare_refuses_another_shard_size(tmp_path):
    cache = new_cache(tmp_path)
    cache.prepare(n_images=6, images_per_shard=3, overwrite=False)
    finish(cache, 0, n_shards=2)
    with pytest.raises(CacheError, match="3 images per shard") as exc:
        cache.prepare(n_images=6, images_per_shard=2, overwrite=False)
    assert str(cache.directory) in str(exc.value)
    assert done(cache, 0)  # nothing was removed
    cache.prepare(n_images=6, images_per_shard=2, overwrite=True)
    assert cache.manifest()["images_per_shard"] == 2


def test_prepare_follows_a_split_that_shrinks_or_grows(tmp_path):
    """Images removed: the shards past the new end go; images added: the finished shards
    stay (extract then redoes those whose data digests changed)."""
    cache = new_cache(tmp_path)
    cache.prepare(n_images=9, images_per_shard=3, overwrite=False)
    for k in range(3):
        finish(cache, k, n_shards=3)
    assert cache.prepare(n_images=5, images_per_shard=3, overwrite=False) == 9
    assert sorted(cache.manifest()["shards"]) == ["shard-00000.h5", "shard-00001.h5"]
    assert not cache.shard_path(2).exists() and cache.manifest()["complete"] is True
    assert cache.prepare(n_images=7, images_per_shard=3, overwrite=False) == 5
    assert cache.manifest()["complete"] is False and done(cache, 1)
    assert cache.prepare(n_images=7, images_per_shard=3, overwrite=False) is None


# --- SplitCache.open (which cache serves a split, given no dataset) ---------------------------------------------------------------------------


def settings(name: str) -> CacheKey:
    return CacheKey({"format": 2, "backbone": {"name": name, "weights": None, "input_size": 224}})


def open_cache(root, split: str, key: CacheKey) -> SplitCache:
    return SplitCache.open(CacheSettings(cache_dir=str(root)), split, key, None)


def test_split_cache_missing(tmp_path):
    s = settings("resnet50")
    with pytest.raises(CacheError, match="run pipeline extract --split trainval first"):
        open_cache(tmp_path, "trainval", s)


def test_split_cache_other_settings_named(tmp_path):
    made, asked = settings("resnet50"), settings("efficientnet_lite0")
    cache = SplitCache(cache_path(tmp_path, "trainval", made.digest), made)
    cache.prepare(n_images=1, images_per_shard=1, overwrite=False)
    with pytest.raises(CacheError) as exc:
        open_cache(tmp_path, "trainval", asked)
    message = str(exc.value)
    assert "backbone=resnet50" in message and "backbone=efficientnet_lite0" in message
    assert f"trainval-{made.digest}" in message


def test_split_cache_ignores_other_splits(tmp_path):
    made = settings("resnet50")
    cache = SplitCache(cache_path(tmp_path, "trainval", made.digest), made)
    cache.prepare(n_images=1, images_per_shard=1, overwrite=False)
    with pytest.raises(CacheError, match="run pipeline extract --split train first"):
        open_cache(tmp_path, "train", made)


def test_split_cache_found(tmp_path):
    s = settings("resnet50")
    assert settings("resnet50").digest == s.digest != settings("vgg16").digest
    made = SplitCache(cache_path(tmp_path, "test", s.digest), s)
    made.prepare(n_images=3, images_per_shard=3, overwrite=False)
    finish(made, 0, n_shards=1, digest=s.digest)
    cache = open_cache(tmp_path, "test", s)
    assert cache.directory == tmp_path / f"test-{s.digest}"
    assert cache.shard_paths() == [cache.shard_path(0)]


# --- WriterLock ---------------------------------------------------------------------------


def test_lock_refuses_second_writer_in_process(tmp_path):
    with WriterLock(tmp_path / "c"):
        assert f"pid {os.getpid()}" in (tmp_path / "c" / ".lock").read_text()
        with pytest.raises(CacheError, match=f"being written by pid {os.getpid()} ") as exc:
            WriterLock(tmp_path / "c").__enter__()
        assert str(tmp_path / "c") in str(exc.value)
    with WriterLock(tmp_path / "c"):
        pass


def test_lock_of_killed_process_is_released(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from pipeline.store.cache import WriterLock
        lock = WriterLock(Path({str(tmp_path / "c")!r})).__enter__()
        print("locked", flush=True)
        time.sleep(120)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(CacheError, match=f"pid {child.pid} "):
            WriterLock(tmp_path / "c").__enter__()
    finally:
        child.kill()  # SIGKILL: no cleanup in the child
        child.wait(timeout=30)
        child.stdout.close()
    with WriterLock(tmp_path / "c"):
        assert f"pid {os.getpid()}" in (tmp_path / "c" / ".lock").read_text()


def test_lock_held_by_child_of_exited_writer_says_so(tmp_path):
    """kill -9 of extract leaves its forked DataLoader workers holding the flock for seconds:
    the refusal names the exited writer's pid and says that a process it started holds it."""
    script = textwrap.dedent(
        f"""
        import os, time
        from pathlib import Path
        from pipeline.store.cache import WriterLock
        lock = WriterLock(Path({str(tmp_path / "c")!r})).__enter__()
        child = os.fork()
        if child:
            print(child, flush=True)
            os._exit(0)
        time.sleep(120)
        """
    )
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(writer.stdout.readline())
    writer.stdout.close()
    writer.wait(timeout=30)
    try:
        with pytest.raises(CacheError) as exc:
            WriterLock(tmp_path / "c").__enter__()
        assert f"being written by pid {writer.pid} on " in str(exc.value)
        assert "(exited; a process it started still holds the lock)" in str(exc.value)
    finally:
        os.kill(child, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:  # the kernel drops the flock once the child is gone
        try:
            with WriterLock(tmp_path / "c"):
                break
        except CacheError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
