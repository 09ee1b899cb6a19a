"""The weak head's poolings by name, and the check of their settings (torch-free: the
settings are checked before a net is built)."""

from __future__ import annotations

from pipeline.errors import ConfigError

POOLS = ("max", "lse", "topk", "mean-pk")


def check_pooling(pool: str, *, r: float, top_fraction: float, bottom_fraction: float) -> None:
    """Refuse a pooling the weak head does not have, or settings outside their range."""
    if pool not in POOLS:
        raise ConfigError("pool", pool, f"choose one of {', '.join(POOLS)}")
    if not 0 < top_fraction <= 1:
        raise ConfigError(
            "top_fraction", top_fraction, "give a share of an image's patches in (0, 1]"
        )
    if not 0 <= bottom_fraction <= 1:
        raise ConfigError(
            "bottom_fraction", bottom_fraction, "give a share of an image's patches in [0, 1]"
        )
    if r <= 0:
        raise ConfigError("lse_r", r, "must be > 0")
