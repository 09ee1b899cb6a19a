"""`pipeline predict`: a fitted head on new photos, into predictions.csv (and maps)."""

from __future__ import annotations

from pipeline.config import PredictConfig
from pipeline.predict import PredictSummary, predict_files


def run(config: PredictConfig) -> PredictSummary:
    return predict_files(config)
