"""Score maps (pipeline/score_maps.py) and `stages.localize`: exact map values on hand-made
patches, peaks and the pointing rule, and an end-to-end run on the synthetic shapes tree."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
from cli_helpers import invoke
from PIL import Image

from pipeline.config import BackboneConfig, GridConfig, LocalizeConfig
from pipeline.datasets.base import whole_image
from pipeline.datasets.voc import VocObject, parse_annotation, resolve_year_dir
from pipeline.datasets.voc_writer import VocSample, write_voc_tree
from pipeline.errors import DataError
from pipeline.localization import file_key, pointing_counts
from pipeline.patches import patch_grid
from pipeline.provenance import read_sidecar
from pipeline.score_maps import CELL, grid_shape, map_peak, pointing_hit, score_map
from stages.localize import run


def test_single_patch_paints_its_square_and_nothing_else():
    probs = np.array([[0.7, 0.2]])
    for reduce in ("mean", "max"):
        maps = score_map([[2, 1, 5, 4]], probs, 8, 6, reduce=reduce, cell=1)
        assert maps.shape == (2, 6, 8) and maps.dtype == np.float32
        expected = np.zeros((2, 6, 8), dtype=np.float32)
        expected[:, 1:4, 2:5] = probs[0, :, None, None]
        np.testing.assert_allclose(maps, expected, atol=1e-7)


def test_overlapping_patches_mean_and_max():
    boxes = [[0, 0, 4, 4], [2, 2, 6, 6]]
    probs = np.array([[0.2], [0.8]])
    mean = score_map(boxes, probs, 8, 8, reduce="mean", cell=1)[0]
    peak = score_map(boxes, probs, 8, 8, reduce="max", cell=1)[0]
    for maps in (mean, peak):
        assert maps[0, 0] == pytest.approx(0.2) and maps[1, 3] == pytest.approx(0.2)
        assert maps[5, 5] == pytest.approx(0.8) and maps[4, 2] == pytest.approx(0.8)
        assert maps[7, 7] == 0 and maps[0, 6] == 0
    np.testing.assert_allclose(mean[2:4, 2:4], 0.5, atol=1e-7)
    np.testing.assert_allclose(peak[2:4, 2:4], 0.8, atol=1e-7)


def test_score_map_matches_a_per_pixel_count_on_random_patches():
    """The difference-array mean and the patch loop max against the definition, pixel by
    pixel: patch edges anywhere, some beyond the image, a class column of zeros."""
    rng = np.random.default_rng(0)
    width, height, n = 37, 23, 40
    x0, y0 = rng.integers(-5, width, n), rng.integers(-5, height, n)
    boxes = np.stack([x0, y0, x0 + rng.integers(1, 25, n), y0 + rng.integers(1, 25, n)], axis=1)
    probs = np.c_[rng.random((n, 2)), np.zeros(n)]
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    b = boxes[:, :, None, None]
    covers = (b[:, 0] <= xs) & (xs < b[:, 2]) & (b[:, 1] <= ys) & (ys < b[:, 3])  # [N, H, W]
    count = covers.sum(axis=0)
    sums = np.einsum("nhw,nc->chw", covers, probs)
    mean = np.where(count > 0, sums / np.maximum(count, 1), 0)
    top = (covers[:, None] * probs[:, :, None, None]).max(axis=0)
    np.testing.assert_allclose(score_map(boxes, probs, width, height, cell=1), mean, atol=1e-6)
    maximum = score_map(boxes, probs, width, height, reduce="max", cell=1)
    np.testing.assert_allclose(maximum, top, atol=1e-6)
    assert (count == 0).any()  # the check covers pixels no patch sees


def test_coarse_cells_span_the_image():
    assert grid_shape(500, 375) == (94, 125)  # CELL 4: a VOC image's map
    maps = score_map([[0, 0, 500, 375]], [[0.3]], 500, 375)
    np.testing.assert_allclose(maps, 0.3, atol=1e-7)  # the border cells too
    maps = score_map([[100, 40, 200, 140]], [[1.0]], 500, 375)[0]
    rows, cols = np.nonzero(maps)
    # cells whose centres lie in the patch: x 100..200 -> columns 25..49 (centres 102..198)
    assert (cols.min(), cols.max(), rows.min(), rows.max()) == (25, 49, 10, 34)


def test_bad_shapes_and_reduce_are_refused():
    with pytest.raises(ValueError, match="must be"):
        score_map([[0, 0, 4, 4]], [[0.1], [0.2]], 8, 8)
    with pytest.raises(ValueError, match="reduce 'sum'"):
        score_map([[0, 0, 4, 4]], [[0.1]], 8, 8, reduce="sum")


def test_map_peak_is_the_centre_of_the_best_cell_in_pixels():
    score = np.zeros((4, 5), dtype=np.float32)
    score[2, 3] = 0.9
    assert map_peak(score, 50, 40) == pytest.approx((35.0, 25.0))


def test_map_peak_breaks_ties_at_the_middle_of_the_plateau():
    score = np.zeros((8, 10), dtype=np.float32)
    score[2:5, 3:6] = 1.0  # a saturated patch: nine tied cells, centroid at row 3, column 4
    assert map_peak(score, 10, 8) == pytest.approx((4.5, 3.5))


def test_pointing_hit_inside_outside_and_tolerance():
    boxes = np.array([[10, 10, 50, 40], [200, 200, 220, 220]], dtype=np.float32)
    assert pointing_hit((30, 20), boxes, tolerance=0)
    assert pointing_hit((210, 219), boxes, tolerance=0)  # the second box
    assert not pointing_hit((60, 20), boxes, tolerance=0)  # 10 px right of the first box
    assert pointing_hit((60, 20), boxes)  # the default 15 px tolerance
    assert not pointing_hit((66, 20), boxes)  # 16 px
    assert not pointing_hit((62, 52), boxes)  # 12 px right and below: 17 px diagonally
    assert not pointing_hit((30, 20), np.zeros((0, 4)))


def test_hand_made_corner_object_is_found_where_the_centre_misses(tmp_path):
    """One cat in the top-left corner of a 200x150 image, written as a VOC tree and read
    back; patches mostly inside its box score 0.9, the others 0.05."""
    cat = VocObject("cat", (8.0, 6.0, 70.0, 56.0))
    image = Image.new("RGB", (200, 150), (128, 128, 128))
    sample = VocSample("000001", image, (cat,))
    year = write_voc_tree(tmp_path / "VOC2007", [sample], {"test": ["000001"]})
    annotation = parse_annotation(year / "Annotations" / "000001.xml")
    patches = patch_grid(200, 150, GridConfig())
    inside = np.clip(np.minimum(patches[:, 2:], 70) - np.maximum(patches[:, :2], 8), 0, None)
    share = inside.prod(axis=1) / ((patches[:, 2] - patches[:, 0]) ** 2)
    probs = np.where(share >= 0.6, 0.9, 0.05)[:, None] * [1.0, 0.0]  # cat, then a dog never seen
    boxes = annotation.boxes()
    centre = (100.0, 75.0)
    assert not pointing_hit(centre, boxes)  # 35 px from the box: the baseline misses
    for reduce in ("mean", "max"):
        maps = score_map(patches, probs, 200, 150, reduce=reduce)
        assert pointing_hit(map_peak(maps[0], 200, 150), boxes, tolerance=0), reduce
        sample = whole_image("000001", Path(), 200, 150, [(0, cat.box, False)])
        counts = pointing_counts(maps, sample, ("cat", "dog"), ("cat", "dog"))
        np.testing.assert_array_equal(counts, [[1, 0], [1, 0], [0, 0]])


@pytest.fixture(scope="module")
def localized(shapes_cache, tmp_path_factory):
    """An SVM head on the shapes cache, localized on its test split (16 images, 128x96)."""
    cache, common = shapes_cache
    code, out = invoke("fit", "--head", "svm", *common)
    assert code == 0, out
    config = LocalizeConfig(
        data=common[common.index("--voc-root") + 1],
        cache_dir=str(cache),
        backbone=BackboneConfig("resnet18", "random", 64),
        grid=GridConfig(scales=3, min_scale=0.4),
        head="svm",
        output=str(tmp_path_factory.mktemp("localize")),
        overlays=2,
    )
    return config, run(config)


def test_pointing_csv_beats_the_centre_baseline(localized):
    config, summary = localized
    with open(summary.pointing) as handle:
        reader = csv.DictReader(handle)
        rows = {row["class"]: row for row in reader}
    assert reader.fieldnames == ["class", "pairs", "hits", "accuracy", "centre_accuracy"]
    assert list(rows) == ["bus", "car", "cat", "mean"]
    assert int(rows["mean"]["pairs"]) == sum(int(rows[c]["pairs"]) for c in ("bus", "car", "cat"))
    # Measured 100 vs 66.7: shapes of 24-57 px on 128x96 images are often within 15 px of
    # the centre, so the baseline is high; the maps must still beat it clearly.
    accuracy, centre = float(rows["mean"]["accuracy"]), float(rows["mean"]["centre_accuracy"])
    assert accuracy >= 85 and accuracy >= centre + 15, rows
    sidecar = read_sidecar(summary.pointing)
    assert sidecar["kind"] == "localize" and sidecar["tolerance"] == 15
    assert sidecar["config"]["reduce"] == "mean" and sidecar["head"]["head"] == "svm"
    assert "15 px" in summary.line() and "vs centre" in summary.line()


def test_maps_h5_layout_and_peaks_inside_the_objects(localized):
    """Strict pointing (no tolerance) from the stored maps: measured 20 of 22 pairs against
    4 of 22 for the image centre."""
    config, summary = localized
    annotations = resolve_year_dir(config.data) / "Annotations"
    hits = centre = pairs = 0
    with h5py.File(summary.maps) as h5:
        classes = json.loads(h5.attrs["classes"])
        assert classes == ["bus", "car", "cat"]
        assert h5.attrs["reduce"] == "mean" and h5.attrs["cell"] == CELL
        assert len(h5["maps"]) == summary.images == 16
        for key, entry in h5["maps"].items():
            image_id = entry.attrs["id"]
            assert key == file_key(image_id) == image_id  # VOC ids are safe names as they are
            width, height = int(entry.attrs["width"]), int(entry.attrs["height"])
            scores = entry["scores"]
            assert (width, height) == (128, 96)
            assert scores.shape == (3, *grid_shape(width, height)) and scores.dtype == np.float16
            assert scores.compression == "gzip"
            maps = scores[...].astype(np.float32)
            assert maps.min() >= 0 and maps.max() <= 1
            annotation = parse_annotation(annotations / f"{image_id}.xml")
            for c, name in enumerate(classes):
                boxes = [o.box for o in annotation.objects if o.name == name]
                if boxes:
                    pairs += 1
                    hits += pointing_hit(map_peak(maps[c], width, height), boxes, tolerance=0)
                    centre += pointing_hit((width / 2, height / 2), boxes, tolerance=0)
    assert pairs == int(summary.rows[-1]["pairs"])
    assert hits >= 0.8 * pairs and centre <= 0.3 * pairs, (hits, centre, pairs)


def test_overlays_have_the_image_size_and_show_the_maps(localized):
    config, summary = localized
    overlays = sorted((Path(config.output) / "overlays").glob("*.png"))
    images = resolve_year_dir(config.data) / "JPEGImages"
    assert len(overlays) == summary.overlays == 2
    for path in overlays:
        with Image.open(path) as png, Image.open(images / f"{path.stem}.jpg") as jpeg:
            assert png.size == jpeg.size
            change = np.abs(np.asarray(png, float) - np.asarray(jpeg.convert("RGB"), float))
            assert change.mean() > 5  # heat maps and labels drawn


def test_training_split_and_bad_options_are_refused(localized):
    config, _ = localized
    with pytest.raises(DataError, match="--split test or val"):
        run(replace(config, split="trainval"))
    with pytest.raises(DataError, match="--reduce 'sum'"):
        run(replace(config, reduce="sum"))
