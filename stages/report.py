"""`pipeline report`: figures and a results table from scored runs (their ap.csv files)."""

from __future__ import annotations

from pipeline.config import ReportConfig
from pipeline.reporting.report import ReportSummary, build_report


def run(config: ReportConfig) -> ReportSummary:
    return build_report(config)
