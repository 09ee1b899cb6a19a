"""A label curve read at a glance (issue 27): the plot (a row per simulated head, strategies in
their own colours beside their gain over random seed by seed; no panel without a curve), and
the simulation's table and verdict (paired gains, the test of random ahead, class balance)."""

from __future__ import annotations

import pytest
from PIL import Image

from pipeline.reporting.curves import aggregate, gain_over_random, plot_label_curve
from pipeline.reporting.plots import DPI
from pipeline.reporting.simulation import simulation_table, verdict


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
                        "map": 50 + 10 * r + gain + seed + (0.5 * seed * (arm == "diversity")),
                        "positives_cat": r + (arm == "typical"),
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


def test_the_simulation_table_pairs_seeds_and_says_where_random_is_ahead():
    data = rows(methods=("patches-mlp",))
    for row in data:  # diversity falls behind random at round 3, more for some seeds
        if row["arm"] == "diversity" and row["round"] == 3:
            row["map"] = 80 - 2 - row["seed"] * 0.5
    table = {(r["arm"], r["round"]): r for r in simulation_table(data, ("cat",))}
    typical = table[("typical", 1)]
    assert (typical["gain_mean"], typical["gain_std"], typical["paired"]) == (5.0, 0.0, 3)
    assert typical["p_random_ahead"] == 1.0 and typical["positives_cat"] == 2.0  # t = +inf
    behind = table[("diversity", 3)]
    assert behind["gain_mean"] == pytest.approx(-(2 + 0.5) - 1, abs=0.01)
    assert 0 < behind["p_random_ahead"] < 0.1
    assert table[("random", 0)]["gain_mean"] == "" and table[("random", 0)]["map_mean"] == 51.0
    lines = verdict(simulation_table(data, ("cat",)))
    (diversity,) = [line for line in lines if " diversity " in line]
    assert "random ahead at 40 (p 0." in diversity, diversity
    (typical_line,) = [line for line in lines if " typical " in line]
    assert typical_line.endswith("random never ahead with p < 0.1"), typical_line
    assert "by images (3 seeds): 10: +5.0, " in typical_line, typical_line


def test_the_verdict_names_budgets_it_could_not_test_and_equal_losses():
    data = rows(methods=("patches-mlp",))
    for row in data:
        if row["arm"] == "typical" and row["round"] == 1:
            row["map"] -= 10  # behind random by 5 at every seed: t is -inf
    data = [r for r in data if not (r["arm"] == "diversity" and r["round"] == 2 and r["seed"])]
    table = simulation_table(data, ("cat",))
    at = {(r["arm"], r["round"]): r for r in table}
    assert at[("typical", 1)]["p_random_ahead"] == 0.0
    assert (at[("diversity", 2)]["p_random_ahead"], at[("diversity", 2)]["paired"]) == ("", 1)
    lines = {line.split()[1]: line for line in verdict(table)}
    assert "random ahead at 20 (p 0.000)" in lines["typical"], lines
    assert "30: +2.0 (1 seed), " in lines["diversity"], lines
    assert lines["diversity"].endswith("(untested at 30: one seed paired)"), lines
