"""results.md: per-class AP tables of runs side by side (the best of a row in bold), then
each run's settings, as its provenance sidecar records them."""

from __future__ import annotations

import math

from pipeline.reporting.plots import union_classes
from pipeline.reporting.runs import MEAN, Run

UNKNOWN = "unknown"


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
