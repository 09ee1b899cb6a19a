"""The weak head (pipeline/heads/weak.py): each pooling by hand, the estimator contract, and the
pipeline from image labels alone on a tree whose objects sit in corners."""

from __future__ import annotations

import csv
import json
import math
import tomllib

import h5py
import joblib
import numpy as np
import pytest
import torch
from cli_helpers import SMALL, error_lines, invoke, read_ap
from sklearn.base import clone
from synthetic_datasets import make_corner_labels_csv

from pipeline.evaluation.score_maps import map_peak, pointing_hit
from pipeline.heads.weak import WeakPatchHead, pooled
from pipeline.store.cache import head_path
from pipeline.store.head_files import load_head_file
from pipeline.store.shards import read_shard

# image 0: patches 0-2, image 1: patches 3-4, image 2: none; two classes
SCORES = [[1.0, -2.0], [3.0, 0.0], [-1.0, 4.0], [0.5, 0.5], [2.0, 1.0]]
INDEX = [0, 0, 0, 1, 1]


def pool(name: str, **settings) -> np.ndarray:
    options = dict(r=2.0, top_fraction=0.5, bottom_fraction=0.0, bottom_weight=0.7, k=2.0)
    options.update(settings)
    scores = torch.tensor(SCORES, dtype=torch.float64)
    return pooled(scores, torch.tensor(INDEX), 3, pool=name, **options).numpy()


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def test_max_pooling_by_hand():
    np.testing.assert_allclose(pool("max"), [[3, 4], [2, 1], [0, 0]])


def test_lse_pooling_by_hand_and_its_limits():
    def lse(values, r):
        return math.log(sum(math.exp(r * v) for v in values) / len(values)) / r

    expected = [[lse([1, 3, -1], 2), lse([-2, 0, 4], 2)], [lse([0.5, 2], 2), lse([0.5, 1], 2)]]
    np.testing.assert_allclose(pool("lse")[:2], expected)
    np.testing.assert_allclose(pool("lse", r=1e-4)[0], [1.0, 2 / 3], atol=1e-3)  # the mean
    np.testing.assert_allclose(pool("lse", r=200.0)[0], [3, 4], atol=0.01)  # the max


def test_topk_pooling_by_hand_with_and_without_the_bottom_term():
    # top half: ceil(1.5) = 2 of image 0's 3 patches, ceil(1) = 1 of image 1's 2
    np.testing.assert_allclose(pool("topk")[:2], [[2, 2], [2, 1]])
    # bottom 0.3: ceil(0.9) = 1 patch of image 0, ceil(0.6) = 1 of image 1, weight 0.7
    with_bottom = pool("topk", bottom_fraction=0.3)[:2]
    np.testing.assert_allclose(with_bottom, [[2 - 0.7, 2 - 1.4], [2 + 0.35, 1 + 0.35]])


def test_mean_pk_pooling_by_hand():
    def mean_pk(values, k):
        return math.log(sum(sigmoid(v) ** k for v in values) / len(values))

    expected = [[mean_pk([1, 3, -1], 2), mean_pk([-2, 0, 4], 2)]]
    np.testing.assert_allclose(pool("mean-pk")[:1], expected)


def blobs(seed: int = 0, n_images: int = 60, per_image: int = 12):
    """Images of `per_image` noise patches; an image of class c has 3 patches pushed along
    axis c (class 0 on even images, class 1 on every third): where the object is."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_images * per_image, 8)).astype(np.float32)
    index = np.repeat(np.arange(n_images), per_image)
    Y = -np.ones((n_images, 2), dtype=np.int8)
    for m in range(n_images):
        for c, present in enumerate((m % 2 == 0, m % 3 == 0)):
            if present:
                Y[m, c] = 1
                X[m * per_image + rng.choice(per_image, 3, replace=False), c] += 4.0
    return X, index, Y


@pytest.fixture(scope="module")
def fitted():
    X, index, Y = blobs()
    return WeakPatchHead(pool="max", hidden=32, epochs=20, lr=0.05, batch_images=4).fit(X, index, Y)


def test_learns_image_labels_and_pools_as_trained(fitted):
    from pipeline.evaluation.metrics import area_ap

    X, index, Y = blobs(seed=1)
    scores = fitted.pool_log_scores(X, index, 60, 5.0)
    for c in range(2):
        assert area_ap(scores[:, c], Y[:, c]) > 0.9
    logits = fitted.decision_function(X)
    by_hand = [logits[index == m].max(axis=0) for m in range(60)]  # max pooling
    np.testing.assert_allclose(scores, -np.logaddexp(0, -np.asarray(by_hand)), rtol=1e-5)
    np.testing.assert_allclose(fitted.predict_log_proba(X), -np.logaddexp(0, -logits), rtol=1e-6)
    assert fitted.pool_power(5.0) == 1.0 and fitted.set_params(pool="mean-pk").pool_power(5) == 5
    fitted.set_params(pool="max")


def test_an_image_without_patches_scores_nan_not_a_confident_negative(fitted):
    X, index, _ = blobs()
    scores = fitted.pool_log_scores(X[:24], index[:24], 3, 5.0)  # images 0 and 1; 2 has none
    assert np.isfinite(scores[:2]).all() and np.isnan(scores[2]).all()


def test_an_images_patches_pool_together_whatever_their_row_order():
    X, index, Y = blobs()
    order = np.random.default_rng(3).permutation(len(X))
    settings = dict(
        pool="max", hidden=16, epochs=3, batch_images=4, dropout=0.0
    )  # dropout draws by row
    a = WeakPatchHead(**settings).fit(X, index, Y)
    b = WeakPatchHead(**settings).fit(X[order], index[order], Y)
    np.testing.assert_allclose(a.decision_function(X), b.decision_function(X), atol=1e-4)


def test_difficult_labels_are_left_out_of_the_loss():
    head = WeakPatchHead(pool="max")
    scores = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    truth = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    total, count = head._loss(scores, truth)
    expected = -math.log(sigmoid(2.0)) - math.log(1 - sigmoid(0.5)) - math.log(sigmoid(3.0))
    assert count == 3 and float(total) == pytest.approx(expected, rel=1e-5)
    log_p = torch.log(torch.tensor([[0.9, 0.2]]))
    total, count = head.set_params(pool="mean-pk")._loss(log_p, torch.tensor([[1.0, -1.0]]))
    assert float(total) == pytest.approx(-math.log(0.9) - math.log(0.8), rel=1e-5)


def test_estimator_contract_seed_clone_and_joblib(fitted, tmp_path):
    X, index, Y = blobs()
    settings = dict(hidden=16, epochs=2)
    one, two = (WeakPatchHead(**settings).fit(X, index, Y) for _ in range(2))
    np.testing.assert_array_equal(one.decision_function(X), two.decision_function(X))
    other = WeakPatchHead(**settings, seed=1).fit(X, index, Y)
    assert not np.allclose(one.decision_function(X), other.decision_function(X))
    assert clone(fitted).get_params() == fitted.get_params()
    joblib.dump(fitted, tmp_path / "weak.joblib")
    back = joblib.load(tmp_path / "weak.joblib")
    np.testing.assert_array_equal(back.decision_function(X), fitted.decision_function(X))
    with pytest.raises(ValueError, match="pool"):
        WeakPatchHead(pool="median").fit(X, index, Y)


@pytest.fixture(scope="module")
def corners(tmp_path_factory):
    """The corner tree as a labels CSV, both splits extracted with every patch kept."""
    root = tmp_path_factory.mktemp("corners")
    labels, truth = make_corner_labels_csv(root / "data")
    common = ["--data", f"csv:{labels}", "--cache-dir", str(root / "cache"), *SMALL]
    for split in ("trainval", "test"):
        code, out = invoke("extract", "--split", split, "--keep", "all", "--workers", "0", *common)
        assert code == 0, out
    return root, common, truth


def test_weak_head_from_image_labels_alone_ranks_and_points_at_the_corner(corners):
    """No box exists anywhere in this dataset: AP far above chance (a third of the images
    hold each class), and each test image's map peaks on its shape, in its corner."""
    root, common, truth = corners
    code, out = invoke("fit", "--head", "weak", "--pool", "max", "--epochs", "30", "--hidden", "64",
                       *common)  # fmt: skip
    assert code == 0 and "3 classes from image labels (max pooling)" in out, out
    ap_csv = root / "ap.csv"
    code, out = invoke("score", "--head", "weak", "--output", str(ap_csv), *common)
    assert code == 0 and "3 classes, max pooling, mAP" in out, out
    ap = read_ap(ap_csv)
    assert ap["mean"] > 85, ap
    maps_dir = root / "maps"
    code, out = invoke("localize", "--head", "weak", "--output", str(maps_dir), "--overlays",
                       "1", *common)  # fmt: skip
    assert code == 0, out
    hits = []
    with h5py.File(maps_dir / "maps.h5") as h5:
        classes = json.loads(h5.attrs["classes"])
        for entry in h5["maps"].values():
            name, box = truth[entry.attrs["id"]]
            maps = entry["scores"][...].astype(np.float32)
            peak = map_peak(maps[classes.index(name)], entry.attrs["width"], entry.attrs["height"])
            boxes = np.asarray([box], dtype=np.float32)
            hits.append(pointing_hit(peak, boxes, tolerance=0))
            assert not pointing_hit((64, 48), boxes, tolerance=0)  # the centre guess misses
    assert len(hits) == 18 and np.mean(hits) >= 0.9, hits


def test_box_heads_on_an_image_label_dataset_point_to_the_weak_head(corners):
    _, common, _ = corners
    code, out = invoke("fit", "--head", "mlp", *common)
    assert code == 2 and len(error_lines(out)) == 1 and "--head weak" in out, out


def test_weak_head_on_a_voc_cache_learns_from_the_label_blind_sample_only(shapes_cache):
    """The training split holds every object patch plus a label-blind sample: the weak head
    sees the sample alone, so where the boxes are never reaches it."""
    cache, common = shapes_cache
    code, out = invoke("fit", "--head", "weak", "--epochs", "3", "--hidden", "16", *common)
    assert code == 0, out
    path = next(cache.glob("trainval-*/heads/weak.safetensors"))
    head, record = load_head_file(path)
    shards = [read_shard(p) for p in sorted(path.parents[1].glob("shard-*.h5"))]
    sampled = sum(int(s.sampled.sum()) for s in shards)
    stored = sum(len(s.sampled) for s in shards)
    assert head.n_samples_seen_ == record.patches == sampled < stored
    assert f"{sampled} patches of {record.images} images" in out
    assert record.config["weak"]["pool"] == "mean-pk" and head_path(path.parents[1], "weak") == path


def test_weak_head_cross_validates_and_sweeps_its_poolings(shapes_cache, tmp_path):
    cache, common = shapes_cache
    fast = ["--epochs", "3", "--hidden", "16"]
    code, out = invoke("fit", "--head", "weak", "--cv", "2", *fast, *common)
    assert code == 0 and "cv weak: mAP" in out, out
    output = tmp_path / "sweep.csv"
    code, out = invoke("sweep", "--head", "weak", "--param", "pool=max,lse,topk,mean-pk",
                       "--folds", "2", "--jobs", "1", "--output", str(output), *fast, *common)  # fmt: skip
    assert code == 0 and "4 settings x 2 folds (4 run, 0 kept)" in out, out
    with open(output) as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["pool"] for r in rows) == ["lse", "max", "mean-pk", "topk"]
    assert {r["head"] for r in rows} == {"weak"}
    best = tomllib.loads(output.with_name("sweep-best.toml").read_text())
    assert best["head"] == "weak" and best["pool"] == rows[0]["pool"]
    code, out = invoke("sweep", "--head", "weak", "--param", "pool=median", *common)
    assert code == 2 and "pool = 'median'" in out, out


def test_weak_head_refuses_the_whole_grid_and_bad_pool_settings(shapes_cache):
    _, common = shapes_cache
    for extra, message in (
        (["--grid", "whole"], "fit --head weak on the patch grid"),
        (["--top-fraction", "0"], "--top-fraction 0.0"),
        (["--lse-r", "-1"], "--lse-r -1.0"),
    ):
        code, out = invoke("fit", "--head", "weak", *extra, *common)
        assert code == 2 and len(error_lines(out)) == 1 and message in out, (extra, out)


def test_predict_pools_new_photos_as_the_weak_head_was_trained(shapes_voc, shapes_cache, tmp_path):
    cache, common = shapes_cache
    code, out = invoke("fit", "--head", "weak", "--epochs", "6", "--hidden", "32", *common)
    assert code == 0, out
    path = next(cache.glob("trainval-*/heads/weak.safetensors"))
    photos = sorted((shapes_voc / "JPEGImages").glob("*.jpg"))[-4:]
    output = tmp_path / "predictions.csv"
    code, out = invoke("predict", "--head", str(path), "--output", str(output),
                       *map(str, photos))  # fmt: skip
    assert code == 0, out
    with open(output) as handle:
        rows = list(csv.DictReader(handle))
    scores = np.array([[float(r[c]) for c in ("bus", "car", "cat")] for r in rows])
    assert len(rows) == 4 and ((scores > 0) & (scores <= 1)).all()
    code, out = invoke("score", "--head", "weak", "--split", "test", "--output",
                       str(tmp_path / "ap.csv"), *common)  # fmt: skip
    with open(tmp_path / "ap-scores.csv") as handle:
        logs = {r["image_id"]: float(r["car"]) for r in csv.DictReader(handle)}
    for row, score in zip(rows, scores[:, 1], strict=True):  # (mean p^5)^(1/5): same pooling
        assert score == pytest.approx(math.exp(logs[row["image"]] / 5), rel=1e-3)
