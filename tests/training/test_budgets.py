"""Label budgets: which images a budget buys, per seed, for every head alike."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import CurveConfig, FitConfig
from pipeline.errors import ConfigError, MidlevelError
from pipeline.training.budgets import (
    Budget,
    Draw,
    SplitTruth,
    budgets_of,
    draw,
    image_order,
    parse_counts,
)

CLASSES = ("bus", "car", "cat", "rare")


def make_truth(seed: int = 0, n: int = 80) -> SplitTruth:
    """n images, labels 1 / -1 / 0 with co-occurrence; "rare" has exactly 3 positives."""
    rng = np.random.default_rng(seed)
    labels = np.where(rng.random((n, 4)) < 0.3, 1, -1).astype(np.int8)
    labels[rng.random((n, 4)) < 0.05] = 0  # difficult
    labels[:, 3] = -1
    labels[[5, 17, 40], 3] = 1
    ids = [f"{i:06d}" for i in range(n)]
    return SplitTruth.of(ids, labels, CLASSES)


@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_each_class_gets_k_positives_where_it_has_them(k):
    truth = make_truth()
    drawn = draw(truth, Budget("shots", k), seed=3)
    available = (truth.labels == 1).sum(axis=0)
    positives = drawn.positives(truth)
    for c, name in enumerate(CLASSES):
        assert positives[name] >= min(k, available[c]), name
    assert positives["rare"] == min(k, 3)  # co-occurrence cannot add a positive it lacks
    # the union of k positives per class: no more images than classes x k
    assert len(drawn.images) <= k * len(CLASSES)
    rows = np.isin(truth.image_ids, list(drawn.images))
    assert drawn.positives(truth) == dict(
        zip(CLASSES, map(int, (truth.labels[rows] == 1).sum(axis=0)), strict=True)
    )


def test_draws_are_seeded_nested_and_blind_to_the_order_of_the_split():
    truth = make_truth()
    small, large = (draw(truth, Budget("shots", k), seed=1).images for k in (2, 8))
    assert small < large  # nested: a larger budget keeps the smaller one's images
    assert draw(truth, Budget("shots", 2), seed=1).images == small
    assert draw(truth, Budget("shots", 2), seed=2).images != small
    shuffled = np.random.default_rng(9).permutation(len(truth.image_ids))
    again = SplitTruth.of(np.array(truth.image_ids)[shuffled], truth.labels[shuffled], CLASSES)
    assert again.image_ids == truth.image_ids and np.array_equal(again.labels, truth.labels)
    assert draw(again, Budget("shots", 2), seed=1).images == small


def test_images_budgets_begin_with_one_positive_of_every_class():
    truth = make_truth()
    first = draw(truth, Budget("shots", 1), seed=4).images
    order = image_order(truth, seed=4)
    assert set(order[: len(first)]) == first and len(set(order)) == len(order) == 80
    for n in (len(first), 10, 25):
        drawn = draw(truth, Budget("images", n), seed=4)
        assert len(drawn.images) == n and first <= drawn.images
        assert drawn.images == frozenset(order[:n])
    assert draw(truth, Budget("all"), seed=4).images == frozenset(truth.image_ids)


def test_vissl_draws_k_positives_and_c_minus_one_k_negatives_per_class():
    truth = make_truth()
    k, n_classes = 2, len(CLASSES)
    drawn = draw(truth, Budget("shots", k), seed=0, protocol="vissl")
    mask = drawn.mask(truth.image_ids, CLASSES)
    for c in range(n_classes):
        seen = truth.labels[mask[:, c], c]
        assert (seen == 1).sum() == k
        assert (seen == -1).sum() == (n_classes - 1) * k
        assert (seen == 0).sum() == 0  # difficult images are never drawn
    assert drawn.images == frozenset().union(*drawn.class_images.values())


def test_budget_options_parse_and_refuse_in_one_line():
    assert parse_counts("1,2, 4,all", "--shots") == ((1, 2, 4), True)
    assert parse_counts("", "--images") == ((), False)
    with pytest.raises(MidlevelError, match=r"--shots '1,x': give positive whole numbers"):
        parse_counts("1,x", "--shots")
    with pytest.raises(MidlevelError, match="--images '0'"):
        parse_counts("0", "--images")
    labels = [b.label for b in budgets_of(CurveConfig(FitConfig(), shots=(1, 4), images=(10,)))]
    assert labels == ["shots=1", "shots=4", "images=10", "all"]
    with pytest.raises(ConfigError, match="only --heads whole-svm"):
        CurveConfig(FitConfig(), protocol="vissl")
    with pytest.raises(ConfigError, match="use --shots, not --images"):
        CurveConfig(FitConfig(), methods=("whole-svm",), protocol="vissl", images=(10,))


def test_the_steps_schedule_gives_a_small_budget_the_whole_splits_sgd_steps():
    from dataclasses import replace

    from pipeline.training.crossval import SplitLabels
    from pipeline.training.curve import STEPS_CAP, CurveMethod, scheduled

    ids = [f"{i:06d}" for i in range(60)]
    labels = SplitLabels(
        ids, np.zeros((60, 1)), None, np.zeros((60, 1), bool), np.ones(60, bool), None
    )
    base = FitConfig(seed=7)
    method = CurveMethod("patches-mlp", base, None, None, labels, schedule="steps")

    def epochs(n: int, seed: int = 0, kind: str = "patches") -> tuple[int, int, int]:
        grid = replace(base.grid, kind=kind)
        config = scheduled(
            replace(
                method, config=replace(base, grid=grid, head="svm" if kind == "whole" else "mlp")
            ),
            Draw(Budget("images", n), seed, frozenset(ids[:n])),
        )
        return config.mlp.epochs, config.svm.epochs, config.seed

    assert epochs(60) == (20, 10, 7)  # the whole split: fit's own epochs
    assert epochs(15, seed=2) == (80, 40, 9)  # a quarter of the images: 4x the epochs
    assert epochs(1) == (20 * STEPS_CAP, 10 * STEPS_CAP, 7)  # capped
    assert epochs(15, kind="whole")[:2] == (20, 10)  # liblinear converges: no epochs
    assert (
        scheduled(
            replace(method, schedule="epochs"), Draw(Budget("images", 15), 0, frozenset(ids[:15]))
        ).mlp.epochs
        == 20
    )
