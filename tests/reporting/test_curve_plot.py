"""The label-curve plot read at a glance (issue 27): a row per simulated head, its strategies
in their own colours beside their gain over random seed by seed; no panel without a curve."""

from __future__ import annotations

import pytest
from PIL import Image

from pipeline.reporting.curves import aggregate, gain_over_random, plot_label_curve
from pipeline.reporting.plots import DPI


def rows(methods=("patches-mlp", "patches-weak"), shots=(1,)) -> list[dict]:
    out = []
    for method in methods:
        out += [
            {"method": method, "arm": "budget", "budget": f"shots={k}", "seed": 0, "round": "",
             "images": 3 * k, "map": 40 + k}
            for k in shots
        ]  # fmt: skip
        for arm, gain in (("random", 0.0), ("typical", 5.0), ("diversity", 2.0)):
            for seed in range(3):
                for r in range(4):
                    out.append({
                        "method": method, "arm": arm, "budget": f"images={10 * (r + 1)}",
                        "seed": seed, "round": r, "images": 10 * (r + 1),
                        "map": 50 + 10 * r + gain + seed,
                    })  # fmt: skip
    return out


def size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def test_a_row_per_simulated_head_and_no_panel_for_a_single_budget(tmp_path):
    one = size(plot_label_curve(aggregate(rows()), tmp_path / "a.png"))
    assert one == (round(14 * DPI), round(2 * 4.6 * DPI))  # two heads, two panels each
    curve = size(plot_label_curve(aggregate(rows(shots=(1, 2, 4))), tmp_path / "b.png"))
    assert curve == (round(14 * DPI), round(3 * 4.6 * DPI))  # the budget curve on top
    plain = [r for r in rows(shots=(1, 2)) if r["arm"] == "budget"]
    assert size(plot_label_curve(aggregate(plain), tmp_path / "c.png")) == (
        round(7 * DPI), round(4.6 * DPI)
    )  # fmt: skip


def test_the_gain_over_random_pairs_seeds():
    points = aggregate(rows())
    at = {(p.method, p.arm, p.budget): p for p in points}
    random = at[("patches-mlp", "random", "round 2")]
    gain = gain_over_random(at[("patches-mlp", "typical", "round 2")], random)
    assert gain.maps == (5.0, 5.0, 5.0) and gain.std == 0  # the seeds' own offsets cancel
    lone = aggregate([r for r in rows() if not (r["arm"] == "random" and r["seed"] == 1)])
    at = {(p.method, p.arm, p.budget): p for p in lone}
    paired = gain_over_random(
        at[("patches-mlp", "typical", "round 0")], at[("patches-mlp", "random", "round 0")]
    )
    assert paired.seed_ids == (0, 2) and paired.mean == pytest.approx(5.0)
