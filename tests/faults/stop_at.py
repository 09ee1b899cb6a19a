"""Run `pipeline` in this process and stop it (SIGSTOP) at one chosen point of one shard.

    python tests/faults/stop_at.py SHARD:EVENT extract ...

The kill test uses it to place each SIGKILL at an exact point of the extract, whatever the
speed of the machine: it waits for this process to be stopped, then kills it. EVENT is where,
in the life of shard SHARD (with one image per shard, the index of its image):

- forward:  before the features of the shard's image are computed (the net is running);
- fsync:    the shard's bytes written under its temporary name, not yet on disk;
- rename:   the temporary file on disk, not yet renamed to its shard name;
- record:   the shard renamed, not yet recorded in the manifest;
- manifest: the manifest with the shard written under its temporary name, not yet renamed.

Nothing of the pipeline is replaced: each hook stops the process, then calls the real code.
"""

from __future__ import annotations

import os
import signal
import sys

EVENTS = ("forward", "fsync", "rename", "record", "manifest")


def stop() -> None:
    os.kill(os.getpid(), signal.SIGSTOP)


def install(shard: int, event: str) -> None:
    import pipeline.features.engine as extraction
    from pipeline.store.cache import SplitCache
    from pipeline.store.shards import SHARD_NAME

    name = SHARD_NAME.format(shard)
    recording = {"now": False}
    real_fsync, real_replace = os.fsync, os.replace
    real_features, real_record = extraction.image_features, SplitCache.record

    def image_features(backbone, item):
        if event == "forward" and item["index"] == shard:
            stop()
        return real_features(backbone, item)

    def fsync(fd: int) -> None:
        if event == "fsync" and os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(
            f"{name}.tmp-"
        ):
            stop()
        real_fsync(fd)

    def replace(src, dst) -> None:
        target = os.path.basename(str(dst))
        if (event == "rename" and target == name) or (
            event == "manifest" and target == "manifest.json" and recording["now"]
        ):
            stop()
        real_replace(src, dst)

    def record(self, index: int, **kwargs) -> None:
        if index == shard:
            if event == "record":
                stop()
            recording["now"] = True
        real_record(self, index, **kwargs)
        recording["now"] = False

    extraction.image_features = image_features
    os.fsync, os.replace = fsync, replace
    SplitCache.record = record


if __name__ == "__main__":
    where, *args = sys.argv[1:]
    shard, event = where.split(":")
    if event not in EVENTS:
        raise SystemExit(f"stop_at.py: event {event!r}; choose one of {', '.join(EVENTS)}")
    install(int(shard), event)
    from pipeline.cli import main

    sys.argv = ["pipeline", *args]
    main()
