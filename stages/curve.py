"""`pipeline curve`: AP against labelled training images, each head fitted from the cache on the
images each budget buys (the same draws for every head), and with --simulate, rounds of
active labelling beside random. Rows are written as fits finish and keyed by the heads'
settings, both caches' data, the budget and the seed, so that a rerun keeps finished rows."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from pipeline.config import CurveConfig
from pipeline.errors import CacheError
from pipeline.evaluation.metrics import mean_ap
from pipeline.io import read_csv, write_csv
from pipeline.reporting.curves import BUDGET_ARM, Point, aggregate, plot_label_curve
from pipeline.reporting.provenance import beside, write_sidecar
from pipeline.reporting.simulation import simulation_table, verdict
from pipeline.training.budgets import Budget, SplitTruth, budgets_of, draw
from pipeline.training.curve import (
    CurveMethod,
    Measured,
    fit_draw,
    open_method,
    simulate,
    split_truth,
)
from pipeline.training.keyed_rows import measure_rows, resume
from pipeline.training.methods import method_config
from pipeline.training.settings import fit_options
from pipeline.words import plural


@dataclass(frozen=True)
class Task:
    """One fit on a budget's draw, or one simulation arm (a strategy's rounds)."""

    method: str
    arm: str  # BUDGET_ARM, or a strategy
    seed: int
    budget: Budget | None = None


@dataclass(frozen=True)
class CurveSummary:
    rows: list[dict]
    points: list[Point]
    fits: int
    new: int
    seconds: float
    jobs: int
    peak_bytes: int
    output: str
    plot: str
    others: int
    left_out: str = ""  # methods left out for want of their features, and what to extract
    verdict: tuple[str, ...] = ()  # a simulation's strategies against random, a line each
    simulation: str = ""  # the simulation's table (CSV), where there is one

    def line(self) -> str:
        run_rate = f" ({self.new / self.seconds:.2f} fits/s)" if self.new and self.seconds else ""
        small = sum(1 for r in self.rows if r["note"])
        notes = f"; {small} fits the budget could not support (see their note)" if small else ""
        kept = (
            f"; {self.others} rows of other settings or data kept, not plotted"
            if self.others
            else ""
        )
        return (
            f"curve: {self.fits} fits ({self.new} run, {self.fits - self.new} kept) in "
            f"{self.seconds:.1f} s on {plural(self.jobs, 'job')}{run_rate}, peak memory "
            f"{self.peak_bytes / 2**30:.2f} GiB a process{notes}{kept}{self.left_out} -> "
            f"{self.output}, {self.plot}" + (f", {self.simulation}" if self.simulation else "")
        )


def plot_path(config: CurveConfig) -> Path:
    return beside(config.output, config.plot, ".png")


def _key(method: CurveMethod, config: CurveConfig, task: Task, **more) -> str:
    """What a row measured: the head's settings, both caches' contents, budget or arm, seed."""
    return json.dumps(
        {
            "method": method.name, "fit": fit_options(method.config),
            "train": method.train.contents(), "test": method.test.contents(),
            "arm": task.arm, "seed": task.seed, "protocol": config.protocol,
            **({"schedule": config.schedule} if config.schedule != "epochs" else {}),
            "budget": task.budget.label if task.budget else None, **more,
        },
        sort_keys=True,
    )  # fmt: skip


def _arm_key(method, config, task) -> str:
    return _key(method, config, task, **_arm_settings(config))


def _arm_settings(config: CurveConfig) -> dict:
    """What a simulation arm's key adds; an arm from one positive a class keeps the key it had
    before simulations could start from no label."""
    start = {"start": config.start} if config.start != "one-per-class" else {}
    return {"batch": config.batch, "up_to": config.up_to, **start}


def _task_key(row: dict) -> str:
    """The key of the task that made a row: a simulation's rounds share their arm's."""
    try:
        found = json.loads(row.get("key") or "")
    except (TypeError, ValueError):
        return ""  # not a row of this tool: kept, never matched
    if not isinstance(found, dict) or found.get("round") is None:
        return row["key"]
    return json.dumps({k: v for k, v in found.items() if k != "round"}, sort_keys=True)


def _measure(
    truth: SplitTruth, config: CurveConfig, job: tuple[CurveMethod, Task]
) -> list[Measured]:
    """A task's fits (an arm: one a round); runs in a job's process."""
    method, task = job
    if task.arm == BUDGET_ARM:
        return [fit_draw(method, draw(truth, task.budget, task.seed, config.protocol))[1]]
    return list(simulate(method, truth, task.arm, task.seed, config.batch, config.up_to,
                         start=config.start))  # fmt: skip


def _rows(config, truth, job: tuple[CurveMethod, Task], measured: list[Measured]) -> list[dict]:
    """A task's rows, a fit each (an arm's numbered by round)."""
    method, task = job
    arm = task.arm != BUDGET_ARM
    return [
        _row(method, config, task, truth, m, r if arm else None) for r, m in enumerate(measured)
    ]


def _row(method, config, task, truth, measured: Measured, fit_round: int | None) -> dict:
    drawn, classes = measured.drawn, method.classes
    positives = drawn.positives(truth)
    aps = measured.aps
    cells = [""] * len(classes) if aps is None else [round(100 * float(a), 2) for a in aps]
    row = {
        "method": method.name,
        "arm": task.arm,
        "budget": drawn.budget.label,
        "seed": task.seed,
        "round": "" if fit_round is None else fit_round,
        "images": len(drawn.images),
        **{f"positives_{c}": positives[c] for c in classes},
        **{f"ap_{c}": cell for c, cell in zip(classes, cells, strict=True)},
        "map": "" if aps is None else round(100 * mean_ap(aps), 2),
        "note": measured.note,
        "fit_seconds": round(measured.seconds, 2),
    }
    more = {} if fit_round is None else {**_arm_settings(config), "round": fit_round}
    return row | {"key": _key(method, config, task, **more)}


def _measured(row: dict) -> bool:
    """Whether a finished row holds what curve writes: each AP and the mAP in [0, 100] (the
    mAP blank only with a note saying why), whole counts; an edited or damaged row is
    fitted again, not reused."""
    percents = [v for k, v in row.items() if k.startswith("ap_") or k == "map"]
    counts = [v for k, v in row.items() if k.startswith("positives_") or k in ("images", "seed")]
    return (
        all(v == "" or 0 <= _number(v) <= 100 for v in percents)
        and (row.get("map") != "" or bool(row.get("note")))
        and all(str(v).isdigit() for v in counts)
    )


def _number(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _shared_truth(methods: list[CurveMethod]) -> SplitTruth:
    """The image labels every head's draws come from; refuses heads whose training caches
    hold different images (their draws would differ)."""
    first = methods[0]
    truth = split_truth(first.train, first.classes)
    for other in methods[1:]:
        ids = tuple(sorted(other.labels.image_ids))
        if ids != truth.image_ids:
            raise CacheError(
                f"{other.train.directory}: holds {len(ids)} training images, the cache of "
                f"{first.name} {len(truth.image_ids)}, so their draws would differ; extract both "
                "grids of the split with the same --limit and --on-error"
            )
    return truth


def _tasks(config: CurveConfig) -> list[Task]:
    """Arms first, then budgets largest first: the long tasks start early."""
    simulated = config.simulate_methods or config.methods
    arms = [
        Task(m, s, seed)
        for seed in range(config.seeds)  # seed by seed: an interrupted run has whole seeds
        for m in config.methods if m in simulated
        for s in (("random", *config.simulate) if config.simulate else ())
    ]  # fmt: skip
    budgets = sorted(budgets_of(config), key=lambda b: (b.kind != "all", -(b.size or 0)))
    fits = [
        Task(m, BUDGET_ARM, seed, b)
        for b in budgets
        for m in config.methods
        for seed in range(config.seeds)
    ]
    return arms + fits


def _fits_of(task: Task, config: CurveConfig, first_round: dict[int, int]) -> int:
    """How many fits a task runs (an arm: one a round), for the progress bar."""
    if task.arm == BUDGET_ARM:
        return 1
    start = first_round[task.seed]  # 0 from no label: its first fit is after a batch
    return (start > 0) + max(0, -(-(config.up_to - start) // config.batch))


def run(config: CurveConfig) -> CurveSummary:
    started = time.perf_counter()
    methods, left_out = _open_methods(config)
    if left_out:  # the rows and the simulation of the methods that run
        simulated = config.simulate_methods and tuple(
            m for m in config.simulate_methods if m in methods
        )
        config = replace(config, methods=tuple(methods), simulate_methods=simulated or None)
    truth = _shared_truth(list(methods.values()))
    output = Path(config.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    earlier = read_csv(output)
    tasks = [(methods[t.method], t) for t in _tasks(config)]
    keys = [_key(m, config, t) if t.arm == BUDGET_ARM else _arm_key(m, config, t) for m, t in tasks]
    first_round = {
        s: 0 if config.start == "cold" else len(draw(truth, Budget("shots", 1), s).images)
        for s in range(config.seeds)
    }
    finished = measure_rows(
        resume(earlier, tasks, keys, _measured, task_key=_task_key),  # a damaged arm: all again
        partial(_measure, truth, config),
        partial(_rows, config, truth),
        lambda table: write_csv(output, _with_columns(table)),
        jobs=config.jobs,
        label="curve",
        unit="fit",
        size=lambda task: _fits_of(task[1], config, first_round),
    )
    rows, others = finished.rows, finished.others
    if not rows:
        raise CacheError(f"{output}: no fit to write; give budgets and seeds")
    points = aggregate(rows)
    plot = plot_label_curve(points, plot_path(config), title=_title(config, methods))
    table = simulation_table(rows, truth.classes)
    simulation = ""
    if table:
        simulation = str(beside(output, None, "-simulation.csv"))
        write_csv(simulation, table)
    write_sidecar(
        output, "curve", config,
        caches={n: {"train": m.train.contents(), "test": m.test.contents(), "fingerprint": m.train.key.settings} for n, m in methods.items()},
    )  # fmt: skip
    return CurveSummary(
        rows, points, len(rows), finished.new, time.perf_counter() - started, finished.jobs,
        finished.peak_bytes, str(output), str(plot), len(others), left_out,
        tuple(verdict(table)), simulation,
    )  # fmt: skip


def _open_methods(config: CurveConfig) -> tuple[dict[str, CurveMethod], str]:
    """The caches of each method; with `skip_unextracted` (the default heads), a method whose
    feature grid no split was extracted on is left out: (methods, what to extract for it)."""
    methods, missing = {}, {}
    for name in config.methods:
        fit = method_config(config.base, name, config.method_settings.get(name))
        try:
            methods[name] = open_method(name, fit, config.test_split, config.schedule)
        except CacheError:
            named = name in (config.simulate_methods or ())  # --simulate-heads asked for it
            if not config.skip_unextracted or named or fit.grid.kind == config.base.grid.kind:
                raise
            missing.setdefault(fit.grid.kind, []).append(name)
    if not methods:
        raise CacheError(
            f"{config.base.cache_dir}: no method's features are extracted; run pipeline extract first"
        )
    splits = f"--split {config.base.split} and --split {config.test_split}"
    left_out = "".join(
        f"; {', '.join(names)} left out: no --grid {kind} features (pipeline extract {splits} "
        f"--grid {kind}, a minute or less, then run curve again)"
        for kind, names in missing.items()
    )
    return methods, left_out


def _with_columns(rows: list[dict]) -> list[dict]:
    """Every row with every column any row has (rows of other classes leave theirs blank)."""
    columns = list(dict.fromkeys(c for r in rows for c in r))
    columns = [c for c in columns if c != "key"] + ["key"]
    return [{c: r.get(c, "") for c in columns} for r in rows]


def _title(config: CurveConfig, methods: dict[str, CurveMethod]) -> str:
    first = next(iter(methods.values()))
    return (
        f"{first.config.split} -> {config.test_split}, {len(first.classes)} classes, "
        f"{config.seeds} seeds, protocol {config.protocol}"
    )
