"""Score maps (pipeline/evaluation/score_maps.py) and `stages.localize`: exact map values on hand-made
patches, peaks, the pointing rule, location AP by hand, the overlay figure's pixels, and an
end-to-end run on the synthetic shapes tree."""

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

import stages.localize
from pipeline.config import BackboneConfig, GridConfig, LocalizeConfig
from pipeline.datasets.base import whole_image
from pipeline.datasets.voc import resolve_year_dir
from pipeline.datasets.voc_writer import VocSample, write_voc_tree
from pipeline.datasets.voc_xml import VocObject, parse_annotation
from pipeline.errors import ConfigError, DataError
from pipeline.evaluation.metrics import location_ap
from pipeline.evaluation.pointing import (
    location_aps,
    location_flags,
    pointing_counts,
    pointing_table,
)
from pipeline.evaluation.score_maps import (
    CELL,
    LOCATION_TOLERANCE,
    grid_shape,
    map_peak,
    pointing_hit,
    score_map,
)
from pipeline.features.patches import patch_grid
from pipeline.reporting.maps import file_key
from pipeline.reporting.overlays import (
    BOX_COLOUR,
    PEAK_COLOUR,
    overlay_image,
    overlay_layout,
    overlay_panels,
)
from pipeline.reporting.provenance import read_sidecar
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
        # Location AP's flags: cat present, its peak hits, the centre misses even at 18 px
        # (35 px away); the dog has no box (-1), nothing to hit.
        flags = location_flags(maps, sample, ("cat", "dog"), ("cat", "dog"))
        np.testing.assert_array_equal(flags, [[1, -1], [1, 0], [0, 0]])
    hard = whole_image("000001", Path(), 200, 150, [(0, cat.box, True)])
    flags = location_flags(maps, hard, ("cat", "dog"), ("cat", "dog"))
    np.testing.assert_array_equal(flags[0], [0, -1])  # only a difficult cat: left out


def test_location_ap_by_hand():
    """Four images ranked 0.9 > 0.8 > 0.7 > 0.6; each predicts one location."""
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    # Three images with the class, all hit, one without the class third: ranking TP TP FP
    # TP, precision 1, 1, 2/3, 3/4 at recall 1/3, 2/3, 2/3, 1; envelope 1, 1, 3/4:
    # AP = (1 + 1 + 3/4) / 3.
    present = np.array([1, 1, -1, 1])
    hits = np.array([True, True, False, True])
    assert location_ap(scores, hits, present) == pytest.approx(11 / 12)
    # The most confident image misses (same ranking, its peak off the object): FP TP FP TP,
    # precision 1/2 at recall 1/3, 1/2 at 2/3, recall never 1 (a miss is never recovered).
    assert location_ap(scores, [False, True, False, True], present) == pytest.approx(1 / 3)
    # The image without the class ranked first instead of third: FP TP TP TP, precision
    # 1/2, 2/3, 3/4, envelope 3/4 everywhere: a confident score without the object costs.
    assert location_ap(scores, [False, True, True, True], [-1, 1, 1, 1]) == pytest.approx(3 / 4)
    # The same image with only difficult boxes is left out: TP TP TP, AP 1.
    assert location_ap(scores, [False, True, True, True], [0, 1, 1, 1]) == pytest.approx(1.0)
    # Ties keep the input order (stable), as metrics.area_ap does.
    assert location_ap([0.5, 0.5], [False, True], [-1, 1]) == pytest.approx(0.5)
    assert np.isnan(location_ap(scores, hits, [-1, 0, -1, -1]))  # no image has the class
    with pytest.raises(ValueError, match="equal 1-D"):
        location_ap(scores, hits[:3], present)
    with pytest.raises(ValueError, match="present must hold"):
        location_ap(scores, hits, [1, 2, 1, 1])


def test_pointing_table_location_columns_and_nan_classes():
    """Per-image flags [n_images, 3, C] to the table: a class no image has a box of gets nan
    everywhere and is skipped by every mean."""
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
    flags = np.zeros((3, 3, 2), dtype=np.int8)
    flags[:, 0] = [[1, -1], [-1, -1], [1, -1]]  # class a in images 0 and 2; b nowhere
    flags[:, 1] = [[1, 0], [0, 0], [0, 0]]  # the peak hits a in image 0, misses in 2
    flags[:, 2] = [[0, 0], [0, 0], [1, 0]]  # the centre hits a in image 2 only
    location = location_aps(scores, flags)
    # peak: TP (0.9), FP (0.7), FP (0.2 has no a): AP 1/2 * 1; centre: FP (0.9), TP (0.7:
    # precision 1/2 at recall 1/2), FP: AP 1/2 * 1/2
    np.testing.assert_allclose(location[:, 0], [1 / 2, 1 / 4])
    assert np.isnan(location[:, 1]).all()
    tally = np.array([[2, 0], [1, 0], [1, 0]])
    rows = pointing_table(("a", "b"), tally, location)
    assert [r["class"] for r in rows] == ["a", "b", "mean"]
    assert rows[0]["location_ap"] == 50.0 and rows[0]["centre_location_ap"] == 25.0
    assert all(np.isnan(rows[1][key]) for key in ("accuracy", "location_ap", "centre_location_ap"))
    assert rows[2]["location_ap"] == 50.0 and rows[2]["centre_location_ap"] == 25.0
    assert rows[2]["accuracy"] == 50.0


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


def test_pointing_and_location_ap_beat_the_centre_baseline(localized):
    config, summary = localized
    with open(summary.pointing) as handle:
        reader = csv.DictReader(handle)
        rows = {row["class"]: row for row in reader}
    assert reader.fieldnames == [
        "class", "pairs", "hits", "accuracy", "centre_accuracy", "location_ap",
        "centre_location_ap",
    ]  # fmt: skip
    assert list(rows) == ["bus", "car", "cat", "mean"]
    assert int(rows["mean"]["pairs"]) == sum(int(rows[c]["pairs"]) for c in ("bus", "car", "cat"))
    # Measured 100 vs 66.7: shapes of 24-57 px on 128x96 images are often within 15 px of
    # the centre, so the baseline is high; the maps must still beat it clearly.
    accuracy, centre = float(rows["mean"]["accuracy"]), float(rows["mean"]["centre_accuracy"])
    assert accuracy >= 85 and accuracy >= centre + 15, rows
    # Location AP, the same ranking by class score for both: measured 100 vs 71.8.
    location, centre_location = (
        float(rows["mean"][k]) for k in ("location_ap", "centre_location_ap")
    )
    assert location >= 70 and location >= centre_location + 10, rows
    mean_of_classes = np.mean([float(rows[c]["location_ap"]) for c in ("bus", "car", "cat")])
    assert location == pytest.approx(mean_of_classes, abs=0.01)
    sidecar = read_sidecar(summary.pointing)
    assert sidecar["kind"] == "localize" and sidecar["pointing_tolerance"] == 15
    assert sidecar["location_tolerance"] == LOCATION_TOLERANCE == 18 and sidecar["k"] == 5
    assert sidecar["config"]["reduce"] == "mean" and sidecar["head"]["head"] == "svm"
    line = summary.line()
    assert "15 px" in line and "vs centre" in line and "location AP" in line and "18 px" in line


def test_a_class_without_boxes_in_the_split_gets_nan_and_leaves_the_means(
    localized, monkeypatch, tmp_path
):
    """The same head and cache, the cat boxes taken out of the test annotations that localize
    reads (a dataset with image labels for all classes but boxes for some, as the real VOC
    subset): cat's pointing and location AP are nan, the means are those of bus and car."""
    config, summary = localized
    with open(summary.pointing) as handle:
        before = {row["class"]: row for row in csv.DictReader(handle)}
    open_head_on_split = stages.localize.open_head_on_split

    def without_cat_boxes(cfg):
        opened = open_head_on_split(cfg)
        data = opened.cache.data  # the split as localize reads it, once the cache is checked
        kept = [s.box_classes != data.classes.index("cat") for s in data.samples]
        samples = [
            replace(s, boxes=s.boxes[k], box_classes=s.box_classes[k], difficult=s.difficult[k])
            for s, k in zip(data.samples, kept, strict=True)
        ]
        opened.cache.data = replace(data, samples=samples)
        return opened

    monkeypatch.setattr(stages.localize, "open_head_on_split", without_cat_boxes)
    result = run(replace(config, output=str(tmp_path), overlays=0))
    with open(result.pointing) as handle:
        rows = {row["class"]: row for row in csv.DictReader(handle)}
    cat = rows["cat"]
    assert cat["pairs"] == "0" and cat["hits"] == "0"
    for key in ("accuracy", "centre_accuracy", "location_ap", "centre_location_ap"):
        assert cat[key] == "nan", cat
        kept = [float(before[c][key]) for c in ("bus", "car")]
        assert [float(rows[c][key]) for c in ("bus", "car")] == kept  # untouched
        assert float(rows["mean"][key]) == pytest.approx(np.mean(kept), abs=0.01)


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


def _rgb(colour: str) -> np.ndarray:
    return np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=float)


def _near(pixel, colour: str, within: float = 60) -> bool:
    return float(np.abs(np.asarray(pixel, dtype=float) - _rgb(colour)).sum()) < within


def test_overlay_panels_show_each_class_map_peak_and_boxes(tmp_path):
    """A 200x160 photo, three classes: a hot cat square (1.0), a warm dog square (0.6), a
    faint bird everywhere (0.1). Two panels, cat then dog, at 1.6x (the 320 px minimum);
    the pixels of the figure are read back where the layout puts each point."""
    path = tmp_path / "photo.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(90, 170, (160, 200, 3), dtype=np.uint8)).save(path)
    h, w = grid_shape(200, 160)
    maps = np.zeros((3, h, w), dtype=np.float32)
    maps[0, 4:17, 5:20] = 1.0  # cat: x 20..80, y 16..68 (4 px cells), centre (50, 42)
    maps[1, 23:36, 30:45] = 0.6  # dog: x 120..180, y 92..144, centre (150, 118)
    maps[2] = 0.1
    classes = ("cat", "dog", "bird")
    boxes = {
        "cat": (np.array([[16.0, 12.0, 84.0, 72.0]]), np.array([False])),
        "dog": (np.array([[110.0, 84.0, 190.0, 150.0]]), np.array([True])),
    }
    panels = overlay_panels(maps, classes, 2, (200, 160), boxes)
    assert [p.title for p in panels] == ["cat  peak 1.00  hit", "dog  peak 0.60  difficult only"]
    assert [p.title for p in overlay_panels(maps, classes, 2, (200, 160))] == [
        "cat  peak 1.00",
        "dog  peak 0.60",
    ]  # no boxes (predict): no hit or miss
    cat_peak, dog_peak = panels[0].point, panels[1].point
    assert cat_peak == pytest.approx((50, 42)) and dog_peak == pytest.approx((150, 118))
    figure = np.asarray(overlay_image(path, maps, classes, 2, (200, 160), boxes))
    layout = overlay_layout(200, 160, 2)
    assert figure.shape == (layout.size[1], layout.size[0], 3)
    assert len(layout.origins) == 2 and layout.panel == (320, 256)
    assert layout.origins[1][0] >= layout.origins[0][0] + 320  # side by side, no overlap

    def at(panel, point):
        col, row = layout.pixel(panel, point, (200, 160))
        return figure[int(row), int(col)]

    assert _near(at(0, cat_peak), PEAK_COLOUR) and _near(at(1, dog_peak), PEAK_COLOUR)
    assert not _near(at(1, cat_peak), PEAK_COLOUR) and not _near(at(0, dog_peak), PEAK_COLOUR)
    # The cat's box, solid, in the cat's panel only: the middle of its left edge.
    assert _near(at(0, (16, 42)), BOX_COLOUR) and not _near(at(1, (16, 42)), BOX_COLOUR)
    # The dog's difficult box, dashed: along its top edge some pixels are lime, some not.
    x0, row = layout.pixel(1, (110, 84), (200, 160))
    x1, _ = layout.pixel(1, (190, 84), (200, 160))
    edge = [_near(figure[round(row), x], BOX_COLOUR) for x in range(int(x0) + 6, int(x1) - 6)]
    assert 0.2 < np.mean(edge) < 0.9, np.mean(edge)
    # The map's colour: bright where the cat scores 1, dark where it scores 0, and the dog's
    # warm square is drawn in the dog's panel, not in the cat's.
    hot, cold = at(0, (30, 60)).astype(float), at(0, (150, 30)).astype(float)
    assert hot.sum() > cold.sum() + 300 and hot[0] > 200, (hot, cold)
    warm_dog, dog_in_cat_panel = at(1, (130, 135)).astype(float), at(0, (130, 135)).astype(float)
    assert warm_dog[0] > dog_in_cat_panel[0] + 80, (warm_dog, dog_in_cat_panel)  # orange, grey
    assert warm_dog[0] - warm_dog[2] > 60 and abs(dog_in_cat_panel[0] - dog_in_cat_panel[2]) < 10
    # The colour bar: the scale's top (1) bright, its bottom (0) dark.
    bx0, by0, bx1, by1 = layout.colorbar
    top, bottom = figure[by0 + 2, (bx0 + bx1) // 2], figure[by1 - 3, (bx0 + bx1) // 2]
    assert top.astype(float).sum() > bottom.astype(float).sum() + 300, (top, bottom)


def test_overlay_layout_keeps_voc_photos_at_their_size():
    layout = overlay_layout(500, 375, 2)
    assert layout.panel == (500, 375) and len(layout.origins) == 2
    assert layout.size[0] >= 2 * 500 and layout.size[1] >= 375
    assert overlay_layout(4000, 3000, 1).panel == (640, 480)  # phone photos shrink


def test_overlay_errors_are_one_line(tmp_path):
    maps = np.zeros((1, *grid_shape(40, 30)), dtype=np.float32)
    with pytest.raises(DataError, match="image not found"):
        overlay_image(tmp_path / "missing.jpg", maps, ("cat",), 1, (40, 30))
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="not a readable image"):
        overlay_image(tmp_path / "bad.jpg", maps, ("cat",), 1, (40, 30))
    Image.new("RGB", (41, 30)).save(tmp_path / "other.png")
    with pytest.raises(DataError, match="is 41x30, the features were extracted from 40x30"):
        overlay_image(tmp_path / "other.png", maps, ("cat",), 1, (40, 30))


def test_overlays_of_the_run_have_a_panel_per_class_with_its_peak(localized):
    config, summary = localized
    overlays = sorted((Path(config.output) / "overlays").glob("*.png"))
    assert len(overlays) == summary.overlays == 2
    layout = overlay_layout(128, 96, config.top)
    (pw, ph), peak = layout.panel, _rgb(PEAK_COLOUR)
    for path in overlays:
        with Image.open(path) as png:
            assert png.size == layout.size
            pixels = np.asarray(png.convert("RGB"), dtype=float)
        for x0, y0 in layout.origins:  # each panel marks its peak
            panel = pixels[y0 : y0 + ph, x0 : x0 + pw]
            assert (np.abs(panel - peak).sum(axis=2) < 60).sum() > 20, path.name


def test_training_split_and_bad_options_are_refused(localized):
    config, _ = localized
    with pytest.raises(DataError, match="--split test or val"):
        run(replace(config, split="trainval"))
    with pytest.raises(ConfigError, match="^reduce 'sum': choose one of mean, max$"):
        run(replace(config, reduce="sum"))  # the config refuses it, before any work
