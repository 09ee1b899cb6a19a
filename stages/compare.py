"""`pipeline compare`: the paper's comparison in one command: the four methods fitted and
scored from their caches (extract both grids first), each run's files and one report in the
output directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.config import CompareConfig, ReportConfig, ScoreConfig, same_cache
from pipeline.evaluation.scoring import score_split
from pipeline.reporting.report import Report, build_report
from pipeline.reporting.runs import write_run
from pipeline.store.cache import head_path
from pipeline.training.fit import fit_head
from pipeline.training.methods import METHODS, method_config


@dataclass(frozen=True)
class CompareSummary:
    means: dict[str, float]  # method -> mAP (VOC07 11-point, percent)
    report: Report

    def line(self) -> str:
        table = ", ".join(f"{name} {value:.2f}" for name, value in self.means.items())
        files = ", ".join(self.report.files)
        return "; ".join(
            [
                f"compare: mAP {table} -> {self.report.output.rstrip('/')}/ ({files})",
                *self.report.notes,
            ]
        )


def run(config: CompareConfig, *, progress=None) -> CompareSummary:
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    means, runs = {}, []
    for name in METHODS:
        fit_config = method_config(config.base, name, config.method_settings.get(name))
        head_file = head_path(output, name)  # never a head the user fitted
        fit_head(fit_config, progress=progress, path=head_file)
        score_config = ScoreConfig(
            **same_cache(fit_config),
            split=config.test_split,
            train_split=config.base.split,
            head=str(head_file),
            classes=config.base.classes,
            k=fit_config.k,
            output=str(output / f"{name}.csv"),
        )
        result = score_split(score_config)
        write_run(result)
        means[name] = float(result.table()[-1]["ap_voc07"])
        runs.append(score_config.output)
    report = build_report(
        ReportConfig(
            runs=tuple(runs), output=str(output), names=tuple(METHODS), data=config.base.data
        )
    )
    return CompareSummary(means, report)
