"""`pipeline extract`: stage one, the frozen backbone over every patch of a split, into shards."""

from __future__ import annotations

from pipeline.config import ExtractConfig
from pipeline.features.engine import ExtractSummary, extract_split


def run(config: ExtractConfig) -> ExtractSummary:
    return extract_split(config)
