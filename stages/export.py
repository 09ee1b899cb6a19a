"""`pipeline export`: a fitted head and its frozen net into a model folder that predicts
without torch (pipeline/deploy/runtime.py; docs/deploy.md); what only the verb does: time
the export and say what it wrote, file by file."""

from __future__ import annotations

import time
from dataclasses import dataclass

from pipeline.config import ExportConfig
from pipeline.deploy.bundle import MANIFEST
from pipeline.deploy.export import Exported, export_head


@dataclass(frozen=True)
class ExportSummary:
    exported: Exported
    seconds: float

    def line(self) -> str:
        e = self.exported
        sizes = ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in e.files.items())
        return (
            f"export: {e.head} ({e.mode} mode, {e.precision}, {e.classes} classes) in "
            f"{self.seconds:.1f} s -> {e.output}/ ({sizes}, {MANIFEST})"
        )


def run(config: ExportConfig) -> ExportSummary:
    started = time.perf_counter()
    exported = export_head(config)
    return ExportSummary(exported, time.perf_counter() - started)
