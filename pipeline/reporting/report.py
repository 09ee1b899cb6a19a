"""Reports: figures and a paper-ready results table from one or more scored runs.

Reads only what `pipeline score` wrote (ap.csv, its per-image scores and its sidecar),
never the feature cache, so runs scored on other machines or by other tools can be
compared. Each run's settings come from its sidecar, so that every number in the table
can be traced to the backbone, grid and head that produced it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import ReportConfig, TaskConfig
from pipeline.datasets import open_dataset
from pipeline.errors import DataError
from pipeline.reporting.plots import contact_sheet, plot_ap_bars, plot_pr_curves, union_classes
from pipeline.reporting.provenance import write_sidecar
from pipeline.reporting.runs import MEAN, Run, load_run, unique_names

UNKNOWN = "unknown"


@dataclass(frozen=True)
class ReportSummary:
    output: str
    runs: tuple[str, ...]
    classes: int
    files: tuple[str, ...]  # written into `output`, in the order they were made
    notes: tuple[str, ...]  # what was skipped and why

    def line(self) -> str:
        text = (
            f"report: {len(self.runs)} runs, {self.classes} classes -> "
            f"{self.output.rstrip('/')}/ ({', '.join(self.files)})"
        )
        return "; ".join([text, *self.notes])


def build_report(config: ReportConfig) -> ReportSummary:
    """pr-curves.png, ap-bars.png, a contact sheet per run and results.md in config.output."""
    if not config.runs:
        raise DataError("no run to report; pass the ap.csv files that pipeline score wrote")
    if config.names is not None and len(config.names) != len(config.runs):
        raise DataError(
            f"--names: {len(config.names)} names for {len(config.runs)} runs; give one name per run"
        )
    names = config.names or (None,) * len(config.runs)
    runs = unique_names(
        [load_run(path, name) for path, name in zip(config.runs, names, strict=True)]
    )
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    files = [plot_pr_curves(runs, output / "pr-curves.png").name]
    files.append(plot_ap_bars(runs, output / "ap-bars.png").name)
    notes = []
    for scored in runs:
        paths, why = _image_paths(scored, config.data)
        if paths is None:
            notes.append(f"contact sheet of {scored.name} skipped: {why}")
            continue
        sheet = output / f"contact-{_file_safe(scored.name)}.png"
        files.append(contact_sheet(scored, paths, sheet, top=config.top).name)
    results = output / "results.md"
    results.write_text(results_markdown(runs))
    files.append(results.name)
    write_sidecar(
        results,
        "report",
        config,
        runs=[{"name": r.name, "ap_csv": str(r.ap_csv), "digest": r.digest} for r in runs],
    )
    return ReportSummary(
        output=str(output),
        runs=tuple(r.name for r in runs),
        classes=len(union_classes(runs)),
        files=tuple(files),
        notes=tuple(notes),
    )


def _image_paths(run: Run, data: str | None) -> tuple[dict | None, str]:
    """image id -> file of a run's images (from its dataset: `data`, else the one its sidecar
    recorded), or None and the reason there is none."""
    config = run.sidecar.get("config", {})
    spec = data or config.get("data") or config.get("voc_root")
    if not spec:
        return None, "no dataset known (pass --data)"
    try:
        dataset = open_dataset(spec, image_dir=config.get("image_dir"))
        task = TaskConfig(**config["task"]) if config.get("task") else TaskConfig()
        split = dataset.load(config.get("split", "test"), task=task, skip_bad=True)
    except DataError as exc:
        return None, str(exc)
    return {s.sample_id: s.image_path for s in split.samples}, ""


def _file_safe(name: str) -> str:
    """A run name as part of a file name: user-given names may hold spaces or slashes."""
    return re.sub(r"[^\w.-]+", "_", name)


def results_markdown(runs: list[Run]) -> str:
    """results.md: VOC07 and area AP tables (classes x runs, best in bold), then settings."""
    lines = [
        "# Results",
        "",
        "## VOC07 AP",
        "",
        "VOC 2007 11-point AP (%); best per row in bold.",
        "",
        *_ap_table(runs, "ap_voc07", "mean_voc07"),
        "",
        "## Area AP",
        "",
        "VOC 2010+ area under the precision/recall curve (%); best per row in bold.",
        "",
        *_ap_table(runs, "ap_area", "mean_area"),
        "",
        "## Settings",
    ]
    for run in runs:
        lines += ["", f"### {run.name}", "", *_settings(run)]
    return "\n".join(lines) + "\n"


def _ap_table(runs: list[Run], per_class: str, mean: str) -> list[str]:
    rows = [
        (c, [getattr(r, per_class).get(c, math.nan) for r in runs]) for c in union_classes(runs)
    ]
    rows.append((f"**{MEAN}**", [getattr(r, mean) for r in runs]))
    lines = [
        "| class | " + " | ".join(r.name for r in runs) + " |",
        "|---|" + "---:|" * len(runs),
    ]
    for label, values in rows:
        lines.append(f"| {label} | " + " | ".join(_cells(values)) + " |")
    return lines


def _cells(values: list[float]) -> list[str]:
    """Percent with 1 decimal; the best in bold (all of them on a tie as printed), but only
    when there is something to beat: one run alone would be bold everywhere."""
    shown = [None if math.isnan(v) else f"{v:.1f}" for v in values]
    present = [float(s) for s in shown if s is not None]
    best = max(present) if len(present) > 1 else None
    return ["–" if s is None else f"**{s}**" if float(s) == best else s for s in shown]


def _pooling(params: dict, k) -> str:
    """The weak head's own pooling, or the paper's mean of p^k."""
    pool = params.get("pool")
    if pool is None or pool == "mean-pk":
        return f"mean of p^k, k = {k}"
    return f"{pool} (the weak head's; k unused)"


def _settings(run: Run) -> list[str]:
    """Bullet list of what produced the run; `unknown` where the sidecar is silent."""
    side = run.sidecar
    if not side:
        return [f"- source: `{run.ap_csv}`", "- settings: unknown (no provenance sidecar)"]
    config = side.get("config") or {}
    backbone, grid = config.get("backbone") or {}, config.get("grid") or {}
    head = side.get("head") or {}
    weights = backbone.get("weights", UNKNOWN)
    if grid.get("kind") == "whole":
        grid_text = "whole image (one feature per image)"
    else:
        grid_text = (
            f"{grid.get('kind', UNKNOWN)}, {grid.get('scales', UNKNOWN)} scales, "
            f"min_scale {grid.get('min_scale', UNKNOWN)}, overlap {grid.get('overlap', UNKNOWN)}"
        )
    params = head.get("params") or {}
    params_text = ", ".join(f"{k}={v}" for k, v in params.items()) or UNKNOWN
    return [
        f"- source: `{run.ap_csv}`",
        f"- backbone: {backbone.get('name', UNKNOWN)}, weights "
        f"{'ImageNet' if weights is None else weights}",
        f"- grid: {grid_text}",
        f"- head: {head.get('head', config.get('head', UNKNOWN))} ({params_text})",
        f"- pooling: {_pooling(params, config.get('k', UNKNOWN))}",
        f"- splits: {config.get('train_split', UNKNOWN)} -> {config.get('split', UNKNOWN)}",
        f"- cache digest: `{side.get('digest', UNKNOWN)}`",
        f"- code version: {side.get('code_version', UNKNOWN)}",
        f"- created: {side.get('created', UNKNOWN)}",
    ]
