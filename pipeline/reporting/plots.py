"""Figures that compare scored runs: PR curves, AP bars, and contact sheets of the rankings.

Headless (Agg backend), so a report can be made on a server with no display. Every
figure's size grows with the number of classes, so that 20 VOC classes stay legible.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from pipeline.datasets.pixels import ImageFileError, read_rgb  # noqa: E402
from pipeline.errors import DataError  # noqa: E402
from pipeline.evaluation.metrics import precision_recall  # noqa: E402
from pipeline.reporting.runs import MEAN, Run  # noqa: E402

COLUMNS = 4  # PR-curve subplots per row
SHEET_COLUMNS = 5  # suggested images per row of their contact sheet
CELL_INCHES = 3.2  # side of one PR-curve subplot
THUMB = 128  # contact sheet thumbnail side, pixels
BORDER = 6  # contact sheet border width, pixels: wide enough to read the colour at a glance
TRUTH_COLOURS = {1: (0, 170, 0), -1: (210, 0, 0), 0: (150, 150, 150)}  # present/absent/difficult
LABEL_INCHES, HEADER_INCHES = 1.3, 0.5  # contact sheet margins: class names, block titles
DPI = 100


def union_classes(runs: list[Run]) -> list[str]:
    """Classes of all runs in first-seen order, so runs on different classes still compare."""
    return list(dict.fromkeys(c for run in runs for c in run.classes))


def plot_pr_curves(runs: list[Run], path: str | Path) -> Path:
    """One PNG: a subplot per class, a step precision/recall curve per run, AP in the legend."""
    classes = union_classes(runs)
    cols = min(COLUMNS, len(classes))
    rows = math.ceil(len(classes) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(CELL_INCHES * cols, CELL_INCHES * rows), squeeze=False
    )
    for ax, name in zip(axes.flat, classes, strict=False):
        for run in runs:
            if name not in run.classes:
                continue
            c = run.classes.index(name)
            scored = ~np.isnan(run.scores[:, c])  # no sampled patch: out of the ranking, as in AP
            pr = precision_recall(run.scores[scored, c], run.truth[scored, c])
            if pr is None:  # no positive: AP and the curve are undefined
                continue
            prec, rec = pr
            # where="pre": precision at rank i holds over the recall step that rank i takes,
            # as in the area AP (metrics.area_ap), so the curve's area is what AP sums.
            ax.step(
                np.r_[0.0, rec],
                np.r_[prec[0], prec],
                where="pre",
                label=f"{run.name} (AP {run.ap_voc07[name]:.1f})",
            )
        ax.set(title=name, xlim=(0, 1), ylim=(0, 1.05), xlabel="recall", ylabel="precision")
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7, loc="lower left")
    for ax in axes.flat[len(classes) :]:
        ax.set_visible(False)
    return save_figure(fig, path)


def plot_ap_bars(runs: list[Run], path: str | Path) -> Path:
    """Grouped bars: per class (then the mean) one bar per run, VOC07 AP in percent."""
    groups = [*union_classes(runs), MEAN]
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(2.0 + len(groups) * (0.3 + 0.25 * len(runs)), 4.5))
    x = np.arange(len(groups))
    for k, run in enumerate(runs):
        values = [run.ap_voc07.get(g, np.nan) for g in groups[:-1]] + [run.mean_voc07]
        bars = ax.bar(x + (k - (len(runs) - 1) / 2) * width, values, width, label=run.name)
        labels = ["" if np.isnan(v) else f"{v:.1f}" for v in values]
        ax.bar_label(bars, labels=labels, fontsize=6, rotation=90, padding=2)
    ax.set_xticks(x, groups, rotation=45, ha="right")
    ax.set(ylabel="VOC07 AP (%)", ylim=(0, 110), xlim=(-0.6, len(groups) - 0.4))
    ax.grid(axis="y", alpha=0.3)
    # Above the axes, where it cannot hide a bar near 100%.
    ax.legend(
        fontsize=8, ncols=min(len(runs), 4), loc="lower left", bbox_to_anchor=(0, 1), frameon=False
    )
    return save_figure(fig, path)


def contact_sheet(
    run: Run, image_paths: Mapping[str, Path], path: str | Path, top: int = 6
) -> Path:
    """Per class (a row), the `top` highest- then the `top` lowest-scoring images, framed
    green (present), red (absent) or grey (difficult): shows at a glance what a head
    confuses with the class and which positives it misses. Images without a score (nan)
    are left out; a split under 2 * top images is halved, so none is shown twice.
    `image_paths` maps the run's image ids to their files."""
    cell = THUMB + 2 * BORDER
    gap = cell // 2  # between the highest and the lowest block
    height, width = len(run.classes) * cell, 2 * top * cell + gap
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    thumbs: dict[str, np.ndarray] = {}
    for c in range(len(run.classes)):
        scores = run.scores[:, c]
        ranked = [i for i in np.argsort(-scores, kind="stable") if not np.isnan(scores[i])]
        n_high = min(top, (len(ranked) + 1) // 2)
        highest, lowest = ranked[:n_high], ranked[max(n_high, len(ranked) - top) :]
        slots = [(i, k * cell) for k, i in enumerate(highest)]
        slots += [(i, top * cell + gap + k * cell) for k, i in enumerate(lowest)]
        for i, x0 in slots:
            image_id = run.image_ids[i]
            if image_id not in thumbs:
                if image_id not in image_paths:
                    raise DataError(
                        f"{run.ap_csv}: image {image_id!r} is not in the dataset given; pass "
                        "--data with the dataset that was scored"
                    )
                thumbs[image_id] = thumbnail(image_paths[image_id])
            y0 = c * cell
            canvas[y0 : y0 + cell, x0 : x0 + cell] = TRUTH_COLOURS[int(run.truth[i, c])]
            inner = np.full((THUMB, THUMB, 3), 255, dtype=np.uint8)
            thumb = thumbs[image_id]
            ty, tx = (THUMB - thumb.shape[0]) // 2, (THUMB - thumb.shape[1]) // 2
            inner[ty : ty + thumb.shape[0], tx : tx + thumb.shape[1]] = thumb
            canvas[y0 + BORDER : y0 + BORDER + THUMB, x0 + BORDER : x0 + BORDER + THUMB] = inner
    # The canvas fills an axes of exactly its pixel size: one image pixel per PNG pixel.
    fig_w, fig_h = width / DPI + LABEL_INCHES, height / DPI + HEADER_INCHES
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=DPI)
    ax = fig.add_axes((LABEL_INCHES / fig_w, 0, width / DPI / fig_w, height / DPI / fig_h))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks(np.arange(len(run.classes)) * cell + cell / 2, run.classes)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.text(top * cell / 2, -10, f"{run.name}: highest scores", ha="center", va="bottom")
    ax.text(top * cell * 1.5 + gap, -10, "lowest scores", ha="center", va="bottom")
    return save_figure(fig, path, tight=False)


def thumbnail(path: Path) -> np.ndarray:
    """[h, w, 3] uint8 of what the image shows (upright, 8-bit), shrunk to fit THUMB x THUMB."""
    try:
        image = Image.fromarray(read_rgb(path))
    except ImageFileError as exc:
        raise exc.redone("pass --data with the dataset that was scored") from None
    image.thumbnail((THUMB, THUMB))
    return np.asarray(image)


def save_figure(fig, path: str | Path, tight: bool = True) -> Path:
    """Write the PNG and close the figure, so that reports of many runs do not pile up memory."""
    path = Path(path)
    try:
        if tight:
            fig.tight_layout()
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)
    return path


def suggestion_sheet(rows: list[dict], image_paths: Mapping[str, Path], path: str | Path) -> Path:
    """The suggested images in rank order, SHEET_COLUMNS a row, each titled with its rank,
    id and the head's top class: what a labeller opens before labelling them."""
    columns = min(SHEET_COLUMNS, len(rows))
    lines = math.ceil(len(rows) / columns)
    fig, axes = plt.subplots(lines, columns, figsize=(2.4 * columns, 2.6 * lines), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, rows, strict=False):
        ax.imshow(thumbnail(image_paths[row["image"]]))
        top = row["top_classes"].split("; ")[0] if row["top_classes"] else ""
        ax.set_title(f"{row['rank']}. {row['image']}\n{top}", fontsize=8)
    return save_figure(fig, path)
