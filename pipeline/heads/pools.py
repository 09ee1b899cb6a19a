"""The weak head's poolings by name, and the check of a name (torch-free: a `--pool` is
checked before a net is built). The ranges of their settings are declared with the
settings, in pipeline/config.py (WeakConfig)."""

from __future__ import annotations

from pipeline.errors import ConfigError

POOLS = ("max", "lse", "topk", "mean-pk")


def check_pooling(pool: str) -> None:
    """Refuse a pooling the weak head does not have."""
    if pool not in POOLS:
        raise ConfigError("pool", pool, f"choose one of {', '.join(POOLS)}")
