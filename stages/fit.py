"""`pipeline fit`: stage two, a head trained from the cached features of a split."""

from __future__ import annotations

from pipeline.config import FitConfig
from pipeline.training.fit import FitSummary, fit_head


def run(config: FitConfig, *, progress=None) -> FitSummary:
    return fit_head(config, progress=progress)
