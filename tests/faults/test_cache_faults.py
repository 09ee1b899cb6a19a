"""Faults around the feature cache (issue 6): a bad shard, a full disk, a second writer, a
kill or a Ctrl-C never mix features silently nor cost the finished shards; every refusal is
one line naming the file and the fix, and a rerun of the same command ends bit-identical to an
uninterrupted run. Real HDF5 files, real processes and signals, real OS write failures."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
from cli_helpers import SMALL, assert_same_shards, error_lines, extract_args, invoke

from pipeline.store.shards import shard_problem

REBUILD = "rerun pipeline extract with the same options to rebuild it"
KEPT = "and rerun the same command: finished shards are kept"


def pipeline_process(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", *args]


def recorded(split_dir: Path) -> dict:
    path = split_dir / "manifest.json"
    return json.loads(path.read_text())["shards"] if path.is_file() else {}


def wait_for(condition, process: subprocess.Popen, what: str) -> None:
    """Poll until `condition()` holds while `process` still runs (the test needs it mid-run)."""
    deadline = time.monotonic() + 300
    while not condition():
        assert process.poll() is None, f"the process ended before {what}"
        assert time.monotonic() < deadline, f"no {what} in 300 s"
        time.sleep(0.01)


# --- a bad shard: refused by name, rebuilt by a rerun -------------------------------------


def truncate_half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def edit(change):
    def apply(path: Path) -> None:
        with h5py.File(path, "r+") as h5:
            change(h5)

    return apply


FAULTS = {
    "truncated": (truncate_half, "truncated or unreadable HDF5"),
    "fingerprint": (
        edit(lambda h5: h5.attrs.__setitem__("fingerprint", json.dumps({"backbone": {}}))),
        "fingerprint attribute differs from these settings",
    ),
    "digest": (edit(lambda h5: h5.attrs.__setitem__("digest", "0123456789ab")), "digest 0123456789ab, not "),
    "dataset": (edit(lambda h5: h5.__delitem__("labels")), "dataset 'labels' missing"),
}  # fmt: skip


@pytest.mark.parametrize("fault", FAULTS)
def test_bad_shard_is_refused_by_name_then_rebuilt_alone(finished_split, copied, shapes_voc, fault):
    """fit and score refuse a damaged shard in one line naming it, before reading any
    features; a rerun of the same extract rewrites that shard only, back to the original."""
    common = ["--split", "test", "--voc-root", str(shapes_voc), "--cache-dir", str(copied.parent),
              "--head", "svm", *SMALL]  # fmt: skip
    code, out = invoke("fit", *common)
    assert code == 0, out
    damage, reason = FAULTS[fault]
    bad = copied / "shard-00002.h5"
    damage(bad)
    score = ["score", "--train-split", "test", "--output", str(copied.parent / "ap.csv"), *common]
    for command in (["fit", *common], score):
        code, out = invoke(*command)
        assert code == 2, out
        (line,) = error_lines(out)
        assert line.startswith(f"error: {bad}: {reason}") and line.endswith(REBUILD), line
    untouched = {p.name: p.stat().st_mtime_ns for p in copied.glob("shard-*.h5") if p != bad}
    code, out = invoke(*extract_args(shapes_voc, copied.parent, "--workers", "0"))
    assert code == 0 and f"1 shards new, 3 reused, rebuilt shard-00002.h5 ({reason}" in out, out
    assert {n: (copied / n).stat().st_mtime_ns for n in untouched} == untouched
    assert_same_shards(finished_split, copied)


def test_unfinished_cache_is_never_read(finished_split, copied, shapes_voc):
    """A run that died writing shard 1 left its partial temporary file and a manifest not
    marked complete: fit refuses the split, and the rerun completes it."""
    manifest = json.loads((copied / "manifest.json").read_text())
    manifest["shards"] = {"shard-00000.h5": manifest["shards"]["shard-00000.h5"]}
    manifest["complete"] = False
    (copied / "manifest.json").write_text(json.dumps(manifest))
    partial = copied / "shard-00001.h5.tmp-1234"
    (copied / "shard-00001.h5").rename(partial)
    truncate_half(partial)
    for name in ("shard-00002.h5", "shard-00003.h5"):
        (copied / name).unlink()
    code, out = invoke(
        "fit", "--split", "test", "--head", "svm", "--cache-dir", str(copied.parent), *SMALL
    )
    assert code == 2, out
    assert error_lines(out) == [
        f"error: {copied}: extraction not finished; run pipeline extract again to complete it"
    ]
    code, out = invoke(*extract_args(shapes_voc, copied.parent, "--workers", "0"))
    assert code == 0 and "3 shards new, 1 reused" in out, out
    assert not list(copied.glob("*.tmp-*"))
    assert_same_shards(finished_split, copied)


# --- a full disk: one line, finished shards kept, the rerun completes -----------------------


def test_file_size_limit_stops_in_one_line_then_rerun_completes(
    finished_split, shapes_voc, tmp_path
):
    """A real failing write: RLIMIT_FSIZE below a shard's size (above the JSON files') makes
    the kernel refuse it with EFBIG. The extract stops with one line, without a traceback,
    leaving no temporary file and a valid manifest; the same command without the limit ends
    bit-identical to an uninterrupted run."""
    limit = (finished_split / "shard-00000.h5").stat().st_size // 2
    args = extract_args(shapes_voc, tmp_path, "--workers", "0")
    process = subprocess.Popen(
        pipeline_process(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    # set from here, not in a preexec_fn (unsafe in a process with threads): the child spends
    # its first seconds importing, long before it writes anything
    resource.prlimit(process.pid, resource.RLIMIT_FSIZE, (limit, limit))
    _, err = process.communicate(timeout=300)
    split_dir = tmp_path / finished_split.name
    assert process.returncode == 2, err[-2000:]
    assert "Traceback" not in err and "Exception ignored" not in err
    assert error_lines(err) == [
        f"error: {split_dir / 'shard-00000.h5'}: cannot write it (File too large); raise the "
        f"file size limit (ulimit -f) or lower --images-per-shard {KEPT}"
    ]
    assert sorted(p.name for p in split_dir.iterdir() if not p.name.startswith(".")) == [
        "fingerprint.json",
        "images.json",
        "manifest.json",
    ]
    assert json.loads((split_dir / "manifest.json").read_text())["shards"] == {}
    code, out = invoke(*args)
    assert code == 0 and "4 shards new, 0 reused" in out, out
    assert_same_shards(finished_split, split_dir)


def test_full_disk_keeps_finished_shards_then_rerun_writes_the_rest(
    finished_split, shapes_voc, tmp_path, monkeypatch
):
    """ENOSPC on the third shard's write: the first two shards stay recorded and whole, the
    message says why and where to free space, and the rerun writes only the last two."""
    fsync = os.fsync

    def disk_full_on_third_shard(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(f"shard-00002.h5.tmp-{os.getpid()}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fsync(fd)

    monkeypatch.setattr("pipeline.io.os.fsync", disk_full_on_third_shard)
    args = extract_args(shapes_voc, tmp_path, "--workers", "0")
    code, out = invoke(*args)
    split_dir = tmp_path / finished_split.name
    assert code == 2, out
    (line,) = error_lines(out)
    assert line.startswith(
        f"error: {split_dir / 'shard-00002.h5'}: cannot write it (No space left on device); "
        "free space on "
    ) and line.endswith(KEPT), line
    assert sorted(recorded(split_dir)) == ["shard-00000.h5", "shard-00001.h5"]
    assert sorted(p.name for p in split_dir.glob("shard-*")) == sorted(recorded(split_dir))
    monkeypatch.undo()
    code, out = invoke(*args)
    assert code == 0 and "2 shards new, 2 reused" in out, out
    assert_same_shards(finished_split, split_dir)


@pytest.fixture
def small_disk(finished_split, tmp_path):
    """A real filesystem that fills up: a tmpfs room for two and a half shards (mounting
    needs root with CAP_SYS_ADMIN; skipped elsewhere, the injected ENOSPC above still runs)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    size = int(2.5 * (finished_split / "shard-00000.h5").stat().st_size)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_real_full_disk_then_rerun_after_freeing_space(finished_split, shapes_voc, small_disk):
    """The kernel's own ENOSPC on the third shard: one line naming the shard and the
    filesystem to free space on, two shards kept; after growing the filesystem the same
    command writes the other two, bit-identical to an uninterrupted run."""
    args = extract_args(shapes_voc, small_disk, "--workers", "0")
    code, out = invoke(*args)
    split_dir = small_disk / finished_split.name
    assert code == 2, out
    assert error_lines(out) == [
        f"error: {split_dir / 'shard-00002.h5'}: cannot write it (No space left on device); "
        f"free space on {small_disk} {KEPT}"
    ]
    assert sorted(recorded(split_dir)) == ["shard-00000.h5", "shard-00001.h5"]
    assert sorted(p.name for p in split_dir.glob("shard-*")) == sorted(recorded(split_dir))
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    code, out = invoke(*args)
    assert code == 0 and "2 shards new, 2 reused" in out, out
    assert_same_shards(finished_split, split_dir)


# --- two writers ------------------------------------------------------------------------------


def test_second_writer_process_is_refused_naming_the_first(finished_split, shapes_voc, tmp_path):
    """While one extract process holds the cache, another exits at once with one line naming
    the directory and the holder's pid; once the holder is killed (-9), extract takes the lock
    and completes. The holder is stopped (SIGSTOP) while locked, so no machine is too fast."""
    args = extract_args(shapes_voc, tmp_path, "--workers", "0")
    first = subprocess.Popen(
        pipeline_process(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    split_dir, holder = tmp_path / finished_split.name, f"pid {first.pid} on {socket.gethostname()}"
    lock = split_dir / ".lock"
    try:
        wait_for(lambda: lock.is_file() and lock.read_text() == holder, first, "lock taken")
        first.send_signal(signal.SIGSTOP)
        second = subprocess.run(
            pipeline_process(*args), capture_output=True, text=True, timeout=120
        )
        assert second.returncode == 2, second.stderr[-2000:]
        assert "Traceback" not in second.stderr
        assert error_lines(second.stderr) == [
            f"error: {split_dir}: being written by {holder}; wait for it to finish, "
            "or use another --cache-dir"
        ]
    finally:
        first.kill()
        first.wait()
    code, out = invoke(*args)
    assert code == 0, out
    assert lock.read_text() == f"pid {os.getpid()} on {socket.gethostname()}"
    assert_same_shards(finished_split, split_dir)


def test_lock_file_of_a_dead_process_does_not_block(finished_split, shapes_voc, tmp_path):
    """The pid in .lock is only shown to users: the flock, which the kernel drops when its
    process dies, is what excludes, so a leftover lock file never blocks a run."""
    split_dir = tmp_path / finished_split.name
    split_dir.mkdir()
    (split_dir / ".lock").write_text(f"pid 999999 on {socket.gethostname()}")
    code, out = invoke(*extract_args(shapes_voc, tmp_path, "--workers", "0"))
    assert code == 0 and "4 shards new" in out, out
    assert_same_shards(finished_split, split_dir)


# --- Ctrl-C ---------------------------------------------------------------------------------


def worker_pids(pid: int) -> list[int]:
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()]  # fmt: skip


def reading_a_socket(pid: int) -> bool:
    """Whether the main thread of `pid` waits in a system call on a socket."""
    try:
        call = Path(f"/proc/{pid}/syscall").read_text().split()
        return os.readlink(f"/proc/{pid}/fd/{int(call[1], 16)}").startswith("socket:")
    except (OSError, ValueError, IndexError):
        return False


def stop_mid_transfer(pid: int, workers: list[int]) -> bool:
    """Stop the DataLoader workers when the main process waits on a socket for one of their
    items: torch passes a tensor's shared memory as a file descriptor, over a socket to the
    worker. False if that never happens (items then come through the pipe, pickled); the
    workers are left stopped either way."""
    for attempt in range(3):
        if attempt:
            for worker in workers:
                os.kill(worker, signal.SIGCONT)
            time.sleep(0.05)  # let the worker queue more items
        for worker in workers:
            os.kill(worker, signal.SIGSTOP)
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            if reading_a_socket(pid):
                return True
            time.sleep(0.005)
    return False


@contextlib.contextmanager
def sigint_not_ignored():
    """A child inherits an ignored SIGINT (a test run started with `&` by a script ignores it,
    as POSIX shells do for background jobs), and Ctrl-C would then never reach it: have the
    default handler while the child starts, so that it gets the default disposition."""
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize(
    ("workers", "how"),
    [
        ("0", "main-pid"),
        ("1", "process-group"),
        ("1", "main-pid-mid-transfer"),
    ],
)
def test_ctrl_c_keeps_finished_shards_and_says_how_to_resume(
    finished_split, shapes_voc, tmp_path, workers, how
):
    """SIGINT after the first shard: exit 130 with one "interrupted:" line and no traceback,
    no temporary file, the finished shards kept; the same command then completes the cache.
    A terminal's Ctrl-C signals the whole process group, DataLoader worker included; a
    `kill -INT PID` the main process alone: timed here to land while it receives an item
    from the worker, as an untimed signal sometimes does."""
    args = extract_args(shapes_voc, tmp_path, "--workers", workers)
    with sigint_not_ignored():
        process = subprocess.Popen(
            pipeline_process(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=how == "process-group",
        )
    split_dir = tmp_path / finished_split.name
    wait_for(lambda: recorded(split_dir), process, "shard finished")
    stopped = worker_pids(process.pid) if how == "main-pid-mid-transfer" else []
    try:
        on_socket = stopped and stop_mid_transfer(process.pid, stopped)
        if how == "process-group":
            os.killpg(process.pid, signal.SIGINT)
        else:
            process.send_signal(signal.SIGINT)
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert "Traceback" not in err, err[-3000:]
    assert not on_socket, "items from workers pass through a socket handshake a signal can break"
    interrupted = [line for line in err.splitlines() if line.startswith("interrupted:")]
    assert len(interrupted) == 1 and "rerun" in interrupted[0], err[-2000:]
    kept = recorded(split_dir)
    assert kept and not list(split_dir.glob("*.tmp-*"))
    assert sorted(p.name for p in split_dir.glob("shard-*")) == sorted(kept)
    for name in kept:
        assert shard_problem(split_dir / name, finished_split.name.split("-")[1]) is None
    code, out = invoke(*args)
    assert code == 0 and f"{4 - len(kept)} shards new, {len(kept)} reused" in out, out
    assert_same_shards(finished_split, split_dir)


# --- a head from other features -------------------------------------------------------------


def test_head_copied_from_other_settings_is_refused_naming_both(copied, shapes_voc):
    """A heads/ folder copied into the cache of other settings (here: 96 px patches instead
    of 64) is refused, and the line says what the head was trained on and what these are."""
    cache = str(copied.parent)
    code, out = invoke("fit", "--split", "test", "--head", "svm", "--cache-dir", cache, *SMALL)
    assert code == 0, out
    other = [*SMALL, "--input-size", "96"]  # the last --input-size wins
    code, out = invoke("extract", "--split", "test", "--voc-root", str(shapes_voc),
                       "--cache-dir", cache, "--workers", "0", "--limit", "4", *other)  # fmt: skip
    assert code == 0, out
    (other_dir,) = set(copied.parent.glob("test-*")) - {copied}
    shutil.copytree(copied / "heads", other_dir / "heads")
    code, out = invoke("score", "--split", "test", "--train-split", "test", "--head", "svm",
                       "--cache-dir", cache, "--output", f"{cache}/ap.csv", *other)  # fmt: skip
    assert code == 2, out
    (line,) = error_lines(out)
    trained, _, these = line.partition("; these features are ")
    assert trained.startswith(f"error: {other_dir / 'heads' / 'svm.safetensors'}: head trained on ")
    assert "backbone=resnet18" in trained and "input=64" in trained and "input=96" not in trained
    assert "backbone=resnet18" in these and "input=96" in these and "input=64" not in these
    assert line.endswith("fit it again for these settings (pipeline fit --head svm)")
