"""A simulation's verdict: per head, strategy and round, mAP over seeds, the gain over random
seed by seed with a paired test (is random ahead?), and how many positives of each class the
picks hold: what tells a user whether following a strategy helps at their budget."""

from __future__ import annotations

import numpy as np
from scipy import stats

from pipeline.reporting.curves import BUDGET_ARM
from pipeline.words import plural

AHEAD = 0.1  # a strategy loses at a budget where random is ahead with p below this


def simulation_table(rows: list[dict], classes: tuple[str, ...]) -> list[dict]:
    """One row per head, strategy and round: images, mAP mean and std over seeds, the gain
    over random's mAP at the same round and seed (mean, std, seeds paired), the one-sided
    paired t-test's p that random is ahead, and the mean positives of each class held."""
    arms: dict[tuple, dict[int, dict]] = {}
    for row in rows:
        if row["arm"] != BUDGET_ARM and str(row["map"]) != "":
            arms.setdefault((row["method"], row["arm"], int(row["round"])), {})[
                int(row["seed"])
            ] = row
    table = []
    for (method, arm, round_), seeds in sorted(
        arms.items(), key=lambda kv: (kv[0][0], kv[0][1] != "random", kv[0][1], kv[0][2])
    ):
        maps = np.array([float(r["map"]) for r in seeds.values()])
        random = arms.get((method, "random", round_), {})
        paired = sorted(set(seeds) & set(random))
        gains = np.array([float(seeds[s]["map"]) - float(random[s]["map"]) for s in paired])
        table.append({
            "method": method, "arm": arm, "round": round_,
            "images": round(float(np.mean([float(r["images"]) for r in seeds.values()])), 1),
            "seeds": len(seeds), "map_mean": round(float(maps.mean()), 2),
            "map_std": round(float(maps.std()), 2),
            **_versus_random(arm, gains),
            **{f"positives_{c}": round(float(np.mean([float(r[f"positives_{c}"]) for r in seeds.values()])), 1) for c in classes},
        })  # fmt: skip
    return table


def _versus_random(arm: str, gains: np.ndarray) -> dict:
    if arm == "random" or not len(gains):
        return {
            "gain_mean": "",
            "gain_std": "",
            "paired": len(gains) if arm != "random" else "",
            "p_random_ahead": "",
        }
    p = round(_p_random_ahead(gains), 4) if len(gains) > 1 else ""
    return {
        "gain_mean": round(float(gains.mean()), 2), "gain_std": round(float(gains.std()), 2),
        "paired": len(gains), "p_random_ahead": p,
    }  # fmt: skip


def _p_random_ahead(gains: np.ndarray) -> float:
    """One-sided paired t-test that the mean gain is below 0, by hand: scipy's own warns of
    precision loss on near-equal gains. Equal gains give the limit: 0 below 0, 1 above."""
    spread = gains.std(ddof=1)
    if spread == 0:
        return 0.5 if gains.mean() == 0 else float(gains.mean() > 0)
    t = gains.mean() / (spread / np.sqrt(len(gains)))
    return float(stats.t.cdf(t, len(gains) - 1))


def verdict(table: list[dict]) -> list[str]:
    """A line per head and strategy: the budgets where it is ahead of random, and those where
    random is ahead with p < AHEAD."""
    lines = []
    keys = dict.fromkeys((r["method"], r["arm"]) for r in table if r["arm"] != "random")
    for method, arm in keys:
        mine = [
            r for r in table if (r["method"], r["arm"]) == (method, arm) and r["gain_mean"] != ""
        ]
        if not mine:
            continue
        most = max(r["paired"] for r in mine)
        losing = [r for r in mine if r["p_random_ahead"] != "" and r["p_random_ahead"] < AHEAD]
        untested = [f"{r['images']:g}" for r in mine if r["p_random_ahead"] == ""]
        gains = ", ".join(
            f"{r['images']:g}: {r['gain_mean']:+.1f}"
            + (f" ({plural(r['paired'], 'seed')})" if r["paired"] < most else "")
            for r in mine
        )
        lost = ", ".join(f"{r['images']:g} (p {r['p_random_ahead']:.3f})" for r in losing)
        if len(untested) == len(mine):
            said = "too few seeds paired to test"
        else:
            said = f"random ahead at {lost}" if losing else f"random never ahead with p < {AHEAD:g}"
            if untested:
                said += f" (untested at {', '.join(untested)}: one seed paired)"
        lines.append(
            f"{method} {arm} minus random by images ({plural(most, 'seed')}): {gains}; {said}"
        )
    return lines
