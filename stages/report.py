"""`pipeline report`: figures and a paper-ready table from scored runs (their ap.csv files)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import ReportConfig
from pipeline.reporting.report import Report, build_report


@dataclass(frozen=True)
class ReportSummary:
    report: Report

    def line(self) -> str:
        report = self.report
        text = (
            f"report: {len(report.runs)} runs, {report.classes} classes -> "
            f"{report.output.rstrip('/')}/ ({', '.join(report.files)})"
        )
        return "; ".join([text, *report.notes])


def run(config: ReportConfig) -> ReportSummary:
    return ReportSummary(build_report(config))
