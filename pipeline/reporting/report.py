"""Reports from scored runs: PR curves, AP bars, contact sheets and results.md, from what
score wrote alone (never the cache), so runs of other machines or tools compare too."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import ReportConfig, TaskConfig
from pipeline.datasets import open_dataset
from pipeline.errors import DataError
from pipeline.reporting.plots import contact_sheet, plot_ap_bars, plot_pr_curves, union_classes
from pipeline.reporting.provenance import write_sidecar
from pipeline.reporting.runs import Run, load_run, unique_names
from pipeline.reporting.tables import results_markdown


@dataclass(frozen=True)
class Report:
    output: str
    runs: tuple[str, ...]
    classes: int
    files: tuple[str, ...]  # written into `output`, in the order they were made
    notes: tuple[str, ...]  # what was skipped and why


def build_report(config: ReportConfig) -> Report:
    """pr-curves.png, ap-bars.png, a contact sheet per run and results.md in config.output."""
    if not config.runs:
        raise DataError("no run to report; pass the ap.csv files that pipeline score wrote")
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
    return Report(
        output=str(output),
        runs=tuple(r.name for r in runs),
        classes=len(union_classes(runs)),
        files=tuple(files),
        notes=tuple(notes),
    )


def _image_paths(run: Run, data: str | None) -> tuple[dict | None, str]:
    """image id -> file of a run's images (from its dataset: `data`, else the one its sidecar
    recorded), or None and the reason there is none."""
    config = run.sidecar.get("config") or {}
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
