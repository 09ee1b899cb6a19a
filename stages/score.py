"""`pipeline score`: a fitted head's pooled image scores over a split, and AP where labelled."""

from __future__ import annotations

from pipeline.config import ScoreConfig
from pipeline.evaluation.scoring import ScoreResult, score_split


def run(config: ScoreConfig) -> ScoreResult:
    return score_split(config)
