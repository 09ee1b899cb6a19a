import warnings

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from pipeline.evaluation.metrics import area_ap, mean_ap, pool_patch_log_scores, voc07_ap


def ranked(labels: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Scores that rank the given truth labels in the order written, best first."""
    truth = np.array(labels)
    return np.arange(len(truth), 0, -1, dtype=np.float64), truth


def precision_at_positives(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    hits = truth[np.argsort(-scores)] > 0
    return (np.cumsum(hits) / np.arange(1, len(hits) + 1))[hits]


# Ranking [+, -, +, -]: precision 1, 1/2, 2/3, 1/2 at recall 1/2, 1/2, 1, 1.
# 11-point: t = 0 .. 0.5 (6 levels) reach precision 1; t = 0.6 .. 1 (5 levels) only 2/3,
# so AP = (6 + 5 * 2/3) / 11 = 28/33. Area: 1/2 * 1 + 1/2 * 2/3 = 5/6.
def test_hand_worked_alternating():
    scores, truth = ranked([1, -1, 1, -1])
    assert voc07_ap(scores, truth) == pytest.approx(28 / 33)
    assert area_ap(scores, truth) == pytest.approx(5 / 6)


def test_perfect_ranking_is_one():
    scores, truth = ranked([1, 1, 1, -1, -1])
    assert voc07_ap(scores, truth) == pytest.approx(1.0)
    assert area_ap(scores, truth) == pytest.approx(1.0)


# Ranking [-, -, -, +, +]: precision 1/4 at recall 1/2, 2/5 at recall 1. Both rules take the
# best precision to the right, 2/5, everywhere: AP = 0.4. sklearn, uninterpolated, gives
# 1/2 * 1/4 + 1/2 * 2/5 = 0.325.
def test_all_wrong_ranking():
    scores, truth = ranked([-1, -1, -1, 1, 1])
    assert voc07_ap(scores, truth) == pytest.approx(0.4)
    assert area_ap(scores, truth) == pytest.approx(0.4)
    assert average_precision_score(truth > 0, scores) == pytest.approx(0.325)


# 10 positives: 3 first, then 7 negatives, then 7 positives. Recall is exactly 0.3 at rank 3
# with precision 1, so t = 0, 0.1, 0.2, 0.3 reach 1; later precision (3 + j) / (10 + j) peaks
# at 10/17, so AP = (4 + 7 * 10/17) / 11 = 138/187. Comparing recall 0.3 with t = 0.1 * 3 in
# floats without a tolerance would drop the t = 0.3 level to 10/17.
def test_recall_level_exactly_on_a_tenth():
    scores, truth = ranked([1] * 3 + [-1] * 7 + [1] * 7)
    assert voc07_ap(scores, truth) == pytest.approx(138 / 187)


def test_difficult_images_are_dropped():
    scores, truth = ranked([1, -1, 1, -1])  # scores 4, 3, 2, 1
    for difficult_score in (100.0, 2.5, -100.0):  # top, middle, bottom
        s, t = np.append(scores, difficult_score), np.append(truth, 0)
        assert voc07_ap(s, t) == pytest.approx(28 / 33)
        assert area_ap(s, t) == pytest.approx(5 / 6)


def test_no_positive_gives_nan():
    scores, truth = ranked([-1, 0, -1])
    assert np.isnan(voc07_ap(scores, truth))
    assert np.isnan(area_ap(scores, truth))


def test_bad_truth_or_shapes_raise():
    with pytest.raises(ValueError, match="truth must hold"):
        voc07_ap(np.zeros(3), np.array([1, 2, -1]))
    with pytest.raises(ValueError, match="equal 1-D"):
        area_ap(np.zeros(3), np.array([1, -1]))


def test_area_equals_sklearn_when_precision_never_rises():
    # Positives at ranks 1, 3, 6, 10: precision 1, 2/3, 1/2, 2/5, non-increasing.
    labels = [-1] * 12
    for rank in (1, 3, 6, 10):
        labels[rank - 1] = 1
    scores, truth = ranked(labels)
    assert np.all(np.diff(precision_at_positives(scores, truth)) <= 0)
    assert area_ap(scores, truth) == pytest.approx(average_precision_score(truth > 0, scores))


def test_area_at_least_sklearn_on_random_cases():
    rng = np.random.default_rng(0)
    seen_equal = seen_greater = 0
    for _ in range(200):
        truth = rng.choice([-1, 1], size=12)
        truth[0] = 1
        scores = rng.random(12)
        ours, theirs = area_ap(scores, truth), average_precision_score(truth > 0, scores)
        if np.all(np.diff(precision_at_positives(scores, truth)) <= 0):
            assert ours == pytest.approx(theirs)
            seen_equal += 1
        else:
            assert ours > theirs
            seen_greater += 1
    assert seen_equal > 0 and seen_greater > 0


def test_eleven_point_close_to_area_on_large_cases():
    rng = np.random.default_rng(1)
    for separation in (0.5, 1.0, 2.0):
        truth = rng.choice([-1, 0, 1], size=5000, p=[0.8, 0.05, 0.15])
        scores = separation * (truth > 0) + rng.normal(size=truth.size)
        assert abs(voc07_ap(scores, truth) - area_ap(scores, truth)) < 0.05


def pool_patch_scores(probs, image_index, n_images, k=5.0):
    """The paper's mean of p^k, read back from the library's log-space pooling."""
    with np.errstate(divide="ignore"):
        log_probs = np.log(np.asarray(probs, dtype=np.float64))
    return np.exp(pool_patch_log_scores(log_probs, image_index, n_images, k))


def test_pool_hand_worked_powers():
    probs = np.array([[0.5, 1.0], [1.0, 0.0], [0.2, 0.4]], dtype=np.float32)
    pooled = pool_patch_scores(probs, np.array([0, 0, 1]), n_images=3, k=2)
    assert pooled.dtype == np.float64 and pooled.shape == (3, 2)
    np.testing.assert_allclose(pooled[:2], [[0.625, 0.5], [0.04, 0.16]], rtol=1e-6)
    assert np.isnan(pooled[2]).all()


def test_pool_k1_is_plain_mean():
    rng = np.random.default_rng(2)
    probs, index = rng.random((40, 3)), rng.integers(0, 5, size=40)
    pooled = pool_patch_scores(probs, index, n_images=5, k=1)
    expected = np.stack([probs[index == i].mean(axis=0) for i in range(5)])
    np.testing.assert_allclose(pooled, expected)


def test_pool_k5_favours_one_confident_patch():
    # Image 0: one patch at 0.9 among nine at 0; image 1: ten lukewarm patches at 0.3.
    probs = np.array([0.9] + [0.0] * 9 + [0.3] * 10)[:, None]
    index = np.repeat([0, 1], 10)
    mean = pool_patch_scores(probs, index, n_images=2, k=1)[:, 0]
    power = pool_patch_scores(probs, index, n_images=2, k=5)[:, 0]
    np.testing.assert_allclose(mean, [0.09, 0.3])
    np.testing.assert_allclose(power, [0.9**5 / 10, 0.3**5])
    assert mean[1] > mean[0] and power[0] > power[1]


@pytest.mark.parametrize(
    ("probs", "index", "k", "match"),
    [
        (np.zeros(4), np.zeros(4, dtype=int), 5.0, "must be"),
        (np.zeros((4, 2)), np.zeros(3, dtype=int), 5.0, "must be"),
        (np.zeros((4, 2)), np.zeros(4), 5.0, "integers"),
        (np.zeros((4, 2)), np.zeros(4, dtype=int), 0.0, "k must be > 0"),
        (np.zeros((4, 2)), np.zeros(4, dtype=int), -1.0, "k must be > 0"),
        (np.zeros((4, 2)), np.array([0, 1, 2, 3]), 5.0, r"\[0, 3\)"),
        (np.zeros((4, 2)), np.array([0, -1, 1, 2]), 5.0, r"\[0, 3\)"),
    ],
)
def test_pool_rejects_bad_input(probs, index, k, match):
    with pytest.raises(ValueError, match=match):
        pool_patch_scores(probs, index, n_images=3, k=k)


def test_mean_ap_skips_nan():
    assert mean_ap([0.5, float("nan"), 1.0]) == pytest.approx(0.75)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(mean_ap([float("nan"), float("nan")]))


def test_ties_keep_input_order_like_the_devkit():
    # MATLAB's sort is stable: equal scores rank in file order, so positives listed first win.
    truth = np.array([1] * 50 + [-1] * 150)
    scores = np.zeros(truth.size)
    assert voc07_ap(scores, truth) == pytest.approx(1.0)
    assert area_ap(scores, truth) == pytest.approx(1.0)
    # Reversed, positives fill ranks 151..200; precision rises to 50/200, the envelope everywhere.
    assert area_ap(scores, truth[::-1]) == pytest.approx(0.25)


def test_ties_within_score_groups_keep_input_order():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 3, size=200).astype(np.float64)
    truth = rng.choice([-1, 1], size=200)
    in_file_order = truth[np.lexsort((np.arange(200), -scores))]
    assert area_ap(scores, truth) == pytest.approx(area_ap(*ranked(list(in_file_order))))
    assert voc07_ap(scores, truth) == pytest.approx(voc07_ap(*ranked(list(in_file_order))))


def test_log_pooling_matches_and_survives_underflow():
    rng = np.random.default_rng(3)
    probs = rng.uniform(0.01, 1.0, size=(30, 2))
    index = rng.integers(0, 5, size=30)
    direct = np.stack([(probs[index == i] ** 5).mean(axis=0) for i in range(5)])
    logged = pool_patch_log_scores(np.log(probs), index, 5, k=5)
    np.testing.assert_allclose(np.exp(logged), direct, rtol=1e-12)
    # Two images whose patches all sit far from the margin: p^5 is 0 for both in float64,
    # the log scores still rank them.
    tiny = np.array([[-400.0], [-500.0]])
    assert (np.exp(tiny) ** 5 == 0).all()
    logs = pool_patch_log_scores(tiny, np.array([0, 1]), 2)
    np.testing.assert_allclose(logs[:, 0], [-2000.0, -2500.0])
    assert np.isnan(pool_patch_log_scores(tiny, np.array([0, 0]), 2)[1, 0])
