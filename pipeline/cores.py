"""How many cores this process may use: one answer for extract, the runtime and the server,
torch-free so that the exported model's runtime can ask it too."""

from __future__ import annotations

import os


def cpu_threads() -> int:
    """The cores this process may use (a container's or taskset's share, not the host's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
