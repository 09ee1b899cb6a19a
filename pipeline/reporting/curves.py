"""A label-budget curve read at a glance: curve.csv's rows averaged over seeds, as a plot of mean
AP against labelled images (log axis) with its spread, and as a table for the terminal."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.ticker import NullFormatter, ScalarFormatter

from pipeline.reporting.plots import plt, save_figure

BUDGET_ARM = "budget"  # a plain curve's rows; a simulation's rows name their strategy
CLOSE = 2.0  # points of mAP: "within CLOSE of its own all-data AP"


@dataclass(frozen=True)
class Point:
    """One method, arm and budget (a simulation: round) over its seeds."""

    method: str
    arm: str
    budget: str
    images: float  # mean labelled images over the seeds
    maps: tuple[float, ...]  # mAP (percent) of each seed whose fit the budget supported
    seeds: int  # seeds run, supported or not
    seed_ids: tuple[int, ...] = ()  # the seed of each of maps: a simulation pairs them

    @property
    def mean(self) -> float:
        return float(np.mean(self.maps)) if self.maps else float("nan")

    @property
    def std(self) -> float:
        return float(np.std(self.maps)) if self.maps else float("nan")

    def cell(self) -> str:
        if not self.maps:
            return f"- ({self.images:.0f} img)"
        lacking = f" [{self.seeds - len(self.maps)} unfit]" if len(self.maps) < self.seeds else ""
        return f"{self.mean:.1f}±{self.std:.1f} ({self.images:.0f} img){lacking}"


def aggregate(rows: list[dict]) -> list[Point]:
    """Points in the rows' order of first appearance; a simulation's by round."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        budget = row["budget"] if row["arm"] == BUDGET_ARM else f"round {row['round']}"
        groups.setdefault((row["method"], row["arm"], budget), []).append(row)
    points = [
        Point(
            method,
            arm,
            budget,
            float(np.mean([float(r["images"]) for r in group])),
            tuple(float(r["map"]) for r in group if str(r["map"]) != ""),
            len(group),
            tuple(int(r["seed"]) for r in group if str(r["map"]) != ""),
        )  # fmt: skip
        for (method, arm, budget), group in groups.items()
    ]
    return sorted(
        points, key=lambda p: (p.method, p.arm != BUDGET_ARM, p.arm, p.budget == "all", p.images)
    )


def all_data(points: list[Point], method: str) -> Point | None:
    return next((p for p in points if p.method == method and p.budget == "all"), None)


def images_to_come_close(points: list[Point], method: str) -> Point | None:
    """The smallest budget whose mean mAP is within CLOSE points of the method's all-data one."""
    full = all_data(points, method)
    if full is None or not full.maps:
        return None
    return next(
        (
            p for p in points
            if p.method == method and p.arm == BUDGET_ARM and p.budget != "all"
            and p.maps and p.mean >= full.mean - CLOSE
        ),
        None,
    )  # fmt: skip


def curve_table(points: list[Point]) -> str:
    """A text table: a line per method (and simulation arm), a column per budget."""
    lines = []
    for arm_kind in (BUDGET_ARM, "simulation"):
        chosen = [p for p in points if (p.arm == BUDGET_ARM) == (arm_kind == BUDGET_ARM)]
        if not chosen:
            continue
        budgets = list(dict.fromkeys(p.budget for p in chosen))
        rows = list(dict.fromkeys((p.method, p.arm) for p in chosen))
        name = max(len(f"{m} {a}") for m, a in rows)
        cells = {(p.method, p.arm, p.budget): p.cell() for p in chosen}
        width = max(len(c) for c in [*cells.values(), *budgets]) + 2
        lines.append(" " * (name + 2) + "".join(b.rjust(width) for b in budgets))
        for method, arm in rows:
            label = method if arm == BUDGET_ARM else f"{method} {arm}"
            lines.append(
                label.ljust(name + 2)
                + "".join(cells.get((method, arm, b), "").rjust(width) for b in budgets)
            )
        lines.append("")
    for method in dict.fromkeys(p.method for p in points):
        full, close = all_data(points, method), images_to_come_close(points, method)
        if full is not None and full.maps:
            reach = (
                f"{close.budget} ({close.images:.0f} images) comes within {CLOSE:g} points"
                if close else f"no budget comes within {CLOSE:g} points"
            )  # fmt: skip
            lines.append(f"{method}: all {full.images:.0f} images give {full.mean:.2f}; {reach}")
    return "\n".join(lines).rstrip()


def plot_label_curve(points: list[Point], path: str | Path, *, title: str = "") -> Path:
    """Mean AP against labelled images on a log axis, a line per method with its spread over
    seeds (± one std) and its all-data AP dashed; then per simulated method a row of two
    panels: each strategy's mean AP in its own colour (random grey), and its difference to
    random, seed by seed. A panel with no curve (one budget) is left out."""
    simulated = [p for p in points if p.arm != BUDGET_ARM]
    budgets = [p for p in points if p.arm == BUDGET_ARM and p.maps]
    curves = any(
        len([p for p in budgets if p.method == m and p.budget != "all"]) > 1
        for m in dict.fromkeys(p.method for p in budgets)
    )
    sim_methods = list(dict.fromkeys(p.method for p in simulated))
    rows = int(curves or not simulated) + len(sim_methods)
    columns = 2 if simulated else 1
    fig, axes = plt.subplots(rows, columns, figsize=(7 * columns, 4.6 * rows), squeeze=False)
    if curves or not simulated:
        _budget_panel(axes[0, 0], points, title)
        if columns == 2:
            axes[0, 1].axis("off")
    arms = sorted(dict.fromkeys(p.arm for p in simulated), key=lambda a: a != "random")
    palette = plt.get_cmap("tab10")
    colours = {a: "0.45" if a == "random" else palette(i % 10) for i, a in enumerate(arms)}
    crowded = len(arms) > 4  # bands of many strategies hide each other: random's band only
    for row, method in enumerate(sim_methods, int(curves)):
        mine = [p for p in simulated if p.method == method]
        for arm in arms:
            _line(
                axes[row, 0], [p for p in mine if p.arm == arm and p.maps], colours[arm], "-", arm,
                band=arm == "random" or not crowded,
            )  # fmt: skip
        _axes(axes[row, 0], f"{method}: active labelling", title)
        random = {p.budget: p for p in mine if p.arm == "random"}
        for arm in arms[1:] if random else ():
            gains = [gain_over_random(p, random.get(p.budget)) for p in mine if p.arm == arm]
            _line(
                axes[row, 1], [g for g in gains if g is not None], colours[arm], "-", arm,
                band=not crowded,
            )  # fmt: skip
        axes[row, 1].axhline(0, color="0.45", lw=1.2)
        _axes(axes[row, 1], f"{method}: minus random, seed by seed (colours as left)", "",
              legend=False)  # fmt: skip
        axes[row, 1].set_ylabel("mean AP - random's (points)")
        budgets = sorted({p.images for p in mine})
        for ax in axes[row]:
            _budget_ticks(ax, budgets)
    return save_figure(fig, path)


def gain_over_random(point: Point, random: Point | None) -> Point | None:
    """`point` less random's mAP at the same round, over the seeds both have."""
    if random is None:
        return None
    theirs = dict(zip(random.seed_ids, random.maps, strict=True))
    pairs = [
        (s, m - theirs[s]) for s, m in zip(point.seed_ids, point.maps, strict=True) if s in theirs
    ]
    if not pairs:
        return None
    return Point(point.method, point.arm, point.budget, point.images,
                 tuple(d for _, d in pairs), len(pairs), tuple(s for s, _ in pairs))  # fmt: skip


def _budget_panel(ax, points: list[Point], title: str) -> None:
    methods = list(dict.fromkeys(p.method for p in points))
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    for method in methods:
        for kind, style, words in (("shots", "-", "k per class"), ("images", ":", "images")):
            line = [
                p for p in points
                if p.method == method and p.arm == BUDGET_ARM and p.maps
                and p.budget.startswith(f"{kind}=")
            ]  # fmt: skip
            _line(ax, line, colours[method], style, f"{method}, {words}")
        full = all_data(points, method)
        if full is not None and full.maps:
            ax.axhline(
                full.mean, color=colours[method], ls="--", lw=1,
                label=f"{method}, all {full.images:.0f} images",
            )  # fmt: skip
    _axes(ax, "label budget", title)


def _line(ax, points: list[Point], colour, style: str, label: str, band: bool = True) -> None:
    if not points:
        return
    x = np.array([p.images for p in points])
    mean, std = np.array([p.mean for p in points]), np.array([p.std for p in points])
    ax.plot(x, mean, style, color=colour, marker="o", ms=3, label=label)
    if band:
        ax.fill_between(x, mean - std, mean + std, color=colour, alpha=0.15, lw=0)


def _budget_ticks(ax, images: list[float]) -> None:
    """Each simulated budget labelled on the log axis, when they are few enough to read."""
    if 1 < len(images) <= 12:
        ax.set_xticks(images, [f"{i:g}" for i in images])


def _axes(ax, name: str, title: str, legend: bool = True) -> None:
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("labelled training images (log scale)")
    ax.set_ylabel("mean AP on the evaluation split (%)")
    ax.set_title(f"{name}: {title}" if title else name, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower right")
