"""`pipeline export`: a fitted head and its frozen net into a model folder that predicts
without torch (pipeline/deploy/runtime.py; docs/deploy.md)."""

from __future__ import annotations

from pipeline.config import ExportConfig
from pipeline.deploy.export import ExportSummary, export_head


def run(config: ExportConfig) -> ExportSummary:
    return export_head(config)
