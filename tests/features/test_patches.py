import numpy as np
import pytest

from pipeline.config import GridConfig, LabelRule
from pipeline.features.patches import (
    IGNORED,
    keep_mask,
    label_patches,
    patch_grid,
    sample_mask,
    scale_factors,
)

BG = 20  # background index, as in stages/extract.py (len(VOC_CLASSES))
RULE = LabelRule()


# --- patch_grid ---------------------------------------------------------------------------


def test_square_image_one_scale_is_one_patch():
    patches = patch_grid(100, 100, GridConfig(scales=1))
    np.testing.assert_array_equal(patches, [[0, 0, 100, 100]])


def test_wide_image_one_scale_half_overlap():
    patches = patch_grid(200, 100, GridConfig(scales=1, overlap=0.5))
    np.testing.assert_array_equal(
        patches, [[0, 0, 100, 100], [50, 0, 150, 100], [100, 0, 200, 100]]
    )


def test_tall_image_positions_run_along_y():
    patches = patch_grid(100, 200, GridConfig(scales=1, overlap=0.5))
    np.testing.assert_array_equal(patches[:, 1], [0, 50, 100])
    np.testing.assert_array_equal(patches[:, 0], [0, 0, 0])


def test_zero_overlap_tiles_without_gaps():
    patches = patch_grid(300, 100, GridConfig(scales=1, overlap=0.0))
    np.testing.assert_array_equal(patches[:, 0], [0, 100, 200])


def test_positions_spread_evenly_when_stride_does_not_divide():
    # span 120, stride 50 -> ceil(2.4) + 1 = 4 positions, spaced 40 (overlap 60% >= 50%)
    patches = patch_grid(220, 100, GridConfig(scales=1, overlap=0.5))
    np.testing.assert_allclose(patches[:, 0], [0, 40, 80, 120])


def test_two_scales_count_and_order():
    # s = 1, 0.5 on 100x100: 1 patch of 100, then sides 50 stride 25 -> 3 x 3
    patches = patch_grid(100, 100, GridConfig(scales=2, min_scale=0.5, overlap=0.5))
    assert len(patches) == 1 + 9
    np.testing.assert_array_equal(patches[0], [0, 0, 100, 100])
    np.testing.assert_allclose(patches[1:, 2] - patches[1:, 0], 50)
    np.testing.assert_allclose(sorted(set(patches[1:, 0])), [0, 25, 50])


def test_paper_count_on_a_voc_image():
    assert patch_grid(500, 375, GridConfig()).shape == (500, 4)
    assert patch_grid(375, 500, GridConfig()).shape == (500, 4)


def test_dtype_float32():
    assert patch_grid(500, 375, GridConfig()).dtype == np.float32


@pytest.mark.parametrize("size", [(500, 375), (333, 500), (100, 100), (640, 97), (37, 211)])
def test_grid_geometry(size):
    width, height = size
    grid = GridConfig()
    patches = patch_grid(width, height, grid).astype(np.float64)
    sides = patches[:, 2] - patches[:, 0]
    np.testing.assert_allclose(sides, patches[:, 3] - patches[:, 1], atol=1e-3)  # square
    assert (patches[:, :2] >= 0).all()
    assert (patches[:, 2] <= width).all() and (patches[:, 3] <= height).all()
    expected_sides = min(width, height) * scale_factors(grid)
    for side in expected_sides:
        at_scale = patches[np.isclose(sides, side, rtol=1e-5)]
        assert len(at_scale) > 0
        # the union at every scale reaches all four borders
        assert at_scale[:, 0].min() == pytest.approx(0)
        assert at_scale[:, 1].min() == pytest.approx(0)
        assert at_scale[:, 2].max() == pytest.approx(width, abs=1e-3)
        assert at_scale[:, 3].max() == pytest.approx(height, abs=1e-3)
        # neighbours along each axis overlap at least as much as asked
        for axis in (0, 1):
            starts = np.unique(np.round(at_scale[:, axis], 3))
            if len(starts) > 1:
                assert np.diff(starts).max() <= side * (1 - grid.overlap) + 1e-3


def test_every_pixel_covered_at_every_scale():
    width, height = 131, 97
    grid = GridConfig(scales=4, min_scale=0.2, overlap=0.3)
    patches = patch_grid(width, height, grid)
    sides = np.round(patches[:, 2] - patches[:, 0], 3)
    for side in np.unique(sides):
        covered = np.zeros((height, width), bool)
        for x0, y0, x1, y1 in patches[sides == side]:
            covered[int(np.floor(y0)) : int(np.ceil(y1)), int(np.floor(x0)) : int(np.ceil(x1))] = 1
        assert covered.all()


def test_scale_factors_geometric():
    factors = scale_factors(GridConfig(scales=8, min_scale=0.15))
    assert factors[0] == pytest.approx(1.0)
    assert factors[-1] == pytest.approx(0.15)
    ratios = factors[1:] / factors[:-1]
    np.testing.assert_allclose(ratios, 0.15 ** (1 / 7))
    np.testing.assert_array_equal(scale_factors(GridConfig(scales=1, min_scale=0.3)), [1.0])


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("scales", 0),
        ("scales", -1),
        ("min_scale", 0.0),
        ("min_scale", -0.1),
        ("min_scale", 1.5),
        ("overlap", 1.0),
        ("overlap", -0.1),
    ],
)
def test_invalid_grid_raises(setting, value):
    """An invalid grid cannot even be built: the config refuses it, naming the setting."""
    with pytest.raises(ValueError, match=rf"^{setting} {value!r}: give "):
        GridConfig(**{setting: value})


# --- label_patches ------------------------------------------------------------------------


def label_one(patch, boxes, classes, difficult=None):
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    difficult = np.zeros(len(boxes), bool) if difficult is None else np.array(difficult, bool)
    patches = np.array([patch], np.float32)
    return int(label_patches(patches, boxes, np.array(classes), difficult, RULE, BG)[0])


P = [0, 0, 10, 10]  # a 100-pixel patch


def test_patch_cover_met_box_cover_not_is_ignored():
    # |P∩B| = 100 >= 0.2*100, but < 0.6*400: a patch inside a big box
    assert label_one(P, [[0, 0, 20, 20]], [3]) == IGNORED


def test_box_cover_met_patch_cover_not_is_ignored():
    # small box inside a big patch: |P∩B| = 100 >= 0.6*100, but < 0.2*10000
    assert label_one([0, 0, 100, 100], [[10, 10, 20, 20]], [3]) == IGNORED


def test_both_covers_met_is_the_class():
    assert label_one(P, [[0, 0, 10, 12]], [3]) == 3  # 100 >= 0.2*100 and 100 >= 0.6*120


def test_patch_cover_threshold_is_inclusive():
    assert label_one(P, [[0, 0, 10, 2]], [3]) == 3  # exactly 0.2|P|, whole box
    assert label_one(P, [[0, 0, 10, 1.9]], [3]) == IGNORED


def test_box_cover_threshold():
    assert label_one(P, [[3.9, 0, 13.9, 10]], [3]) == 3  # 61% of the box inside
    assert label_one(P, [[4.1, 0, 14.1, 10]], [3]) == IGNORED  # 59%


def test_touching_nothing_is_background():
    assert label_one(P, [[10, 0, 20, 10]], [3]) == BG  # shares an edge only
    assert label_one(P, [[50, 50, 60, 60]], [3]) == BG


def test_touching_slightly_is_ignored():
    assert label_one(P, [[9, 0, 20, 10]], [3]) == IGNORED


def test_two_classes_meeting_the_rule_is_ignored():
    assert label_one(P, [[0, 0, 10, 5], [0, 5, 10, 10]], [3, 7]) == IGNORED


def test_other_class_touching_without_meeting_keeps_the_class():
    assert label_one(P, [[0, 0, 10, 10], [9, 0, 30, 10]], [3, 7]) == 3


def test_two_boxes_of_same_class_is_that_class():
    assert label_one(P, [[0, 0, 10, 5], [0, 5, 10, 10]], [7, 7]) == 7


def test_class_zero_is_a_class_not_background():
    assert label_one(P, [[0, 0, 10, 10]], [0]) == 0


def test_difficult_box_meeting_the_rule_is_ignored():
    assert label_one(P, [[0, 0, 10, 10]], [3], difficult=[True]) == IGNORED


def test_difficult_box_touched_is_not_background():
    assert label_one(P, [[9, 0, 20, 10]], [3], difficult=[True]) == IGNORED


def test_difficult_and_normal_box_of_same_class():
    assert label_one(P, [[0, 0, 10, 5], [0, 5, 10, 10]], [3, 3], difficult=[True, False]) == 3


def test_difficult_box_of_other_class_meeting_the_rule_blocks():
    assert label_one(P, [[0, 0, 10, 5], [0, 5, 10, 10]], [3, 7], difficult=[False, True]) == IGNORED


def test_no_boxes_all_background():
    labels = label_patches(
        patch_grid(50, 40, GridConfig(scales=2, min_scale=0.5)),
        np.zeros((0, 4), np.float32),
        np.zeros(0, np.int64),
        np.zeros(0, bool),
        RULE,
        BG,
    )
    assert labels.dtype == np.int16
    assert (labels == BG).all() and len(labels) > 1


def test_labels_vectorised_over_patches():
    patches = np.array(
        [[0, 0, 10, 10], [0, 0, 20, 20], [30, 30, 40, 40], [8, 0, 18, 10]], np.float32
    )
    boxes = np.array([[0, 0, 10, 10]], np.float32)
    labels = label_patches(patches, boxes, np.array([5]), np.array([False]), RULE, BG)
    # exact; 0.6|B| but 100 >= 0.2*400; far away; 20% of both
    np.testing.assert_array_equal(labels, [5, 5, BG, IGNORED])


def test_custom_rule_thresholds_are_used():
    strict = LabelRule(min_patch_cover=0.5, min_box_cover=0.9)
    boxes = np.array([[0, 0, 10, 4]], np.float32)  # 40% of the patch, whole box
    patches = np.array([P], np.float32)
    args = (patches, boxes, np.array([3]), np.array([False]))
    assert label_patches(*args, RULE, BG)[0] == 3
    assert label_patches(*args, strict, BG)[0] == IGNORED


# --- sample_mask / keep_mask ---------------------------------------------------------------


def mixed_labels(n=2000, seed=1):
    rng = np.random.default_rng(seed)
    return rng.choice(
        np.array([BG, IGNORED, 0, 4, 19], np.int16), size=n, p=[0.7, 0.1, 0.1, 0.05, 0.05]
    )


def test_sample_mask_deterministic_and_order_free():
    first = sample_mask(2000, RULE, "000005")
    sample_mask(2000, RULE, "000007")  # another image in between changes nothing
    np.testing.assert_array_equal(sample_mask(2000, RULE, "000005"), first)
    ids = ["000001", "000002", "000003"]
    forward = {i: sample_mask(2000, RULE, i) for i in ids}
    backward = {i: sample_mask(2000, RULE, i) for i in reversed(ids)}
    for i in ids:
        np.testing.assert_array_equal(forward[i], backward[i])


def test_sample_mask_differs_by_seed_and_id():
    base = sample_mask(2000, RULE, "000005")
    assert not np.array_equal(base, sample_mask(2000, RULE, "000006"))
    assert not np.array_equal(base, sample_mask(2000, LabelRule(seed=1), "000005"))


def test_keep_mask_keeps_every_object_patch_and_the_sample_only():
    labels = mixed_labels()
    sampled = sample_mask(len(labels), RULE, "000005")
    keep = keep_mask(labels, sampled, BG)
    positive = (labels >= 0) & (labels != BG)
    assert keep[positive].all()
    np.testing.assert_array_equal(keep[~positive], sampled[~positive])
    assert (keep & (labels == IGNORED)).any()  # sampled ignored patches are stored, label -1


def test_sample_mask_ratio():
    n = 200_000
    for ratio in (0.1, 0.3):
        kept = sample_mask(n, LabelRule(background_ratio=ratio), "000009").sum()
        sigma = np.sqrt(n * ratio * (1 - ratio))
        assert abs(kept - n * ratio) < 5 * sigma
    assert not sample_mask(n, LabelRule(background_ratio=0.0), "x").any()
    assert sample_mask(n, LabelRule(background_ratio=1.0), "x").all()


def test_whole_grid_is_one_box_of_the_image():
    np.testing.assert_array_equal(
        patch_grid(500, 375, GridConfig(kind="whole")), [[0, 0, 500, 375]]
    )
    with pytest.raises(ValueError, match="^grid_kind 'tiles': choose one of patches, whole$"):
        patch_grid(500, 375, GridConfig(kind="tiles"))  # the config refuses it
