"""Which images to label next: planted uncertain, outlier and duplicate images, and a planted
leak (box-selected patches, labels) that a strategy must not see."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.config import LABEL_FREE
from pipeline.store.cache import SplitCache
from pipeline.store.keys import CacheKey
from pipeline.store.shards import Shard, write_shard
from pipeline.training.acquisition import (
    AUTO_SWITCH,
    CANDIDATES,
    choose,
    image_embeddings,
    resolve,
    uncertainty,
)

DIM = 16


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def cluster(n: int, seed: int = 0, spread: float = 0.05) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return unit(np.ones(DIM) + rng.normal(0, spread, (n, DIM)))


def sure_scores(n: int, classes: int = 3) -> np.ndarray:
    """Log scores on p's scale (power 1) the head is sure of: p 0.01 or 0.99."""
    p = np.where(np.random.default_rng(1).random((n, classes)) < 0.5, 0.01, 0.99)
    return np.log(p)


def test_uncertainty_ranks_the_planted_unsure_image_first():
    pool, scores = cluster(20), sure_scores(20)
    scores[7] = np.log(0.5)  # unsure of every class
    scores[12, 0] = np.log(0.4)  # unsure of one
    picks = choose("uncertainty", pool, cluster(3, seed=5), scores, 1.0, 2)
    assert [i for i, _ in picks] == [7, 12]
    assert picks[0][1] == pytest.approx(3 * np.log(2))  # three classes at p = 0.5: 3 ln 2
    power = 5.0  # a mean-of-p^k score: judged on p's scale, exp(score / k)
    assert uncertainty(scores * power, power) == pytest.approx(uncertainty(scores, 1.0))


def test_diversity_ranks_the_planted_outlier_first_and_combined_mixes_both():
    pool, scores = cluster(20), sure_scores(20)
    pool[4] = unit(-np.ones((1, DIM)) + np.eye(DIM)[0])  # far from everything
    scores[9] = np.log(0.5)
    assert choose("diversity", pool, cluster(3, seed=5), scores, 1.0, 1)[0][0] == 4
    scores[4] = np.log(0.6)  # the outlier is unsure too: combined takes it first
    combined = [i for i, _ in choose("combined", pool, cluster(3, seed=5), scores, 1.0, 2)]
    unsure = np.argsort(-uncertainty(scores, 1.0), kind="stable")[: CANDIDATES * 2]
    assert combined[0] == 4 and set(combined) <= set(unsure)
    scores[4] = np.log(1e-6)  # surest of all of the outlier: combined leaves it
    assert 4 not in [i for i, _ in choose("combined", pool, cluster(3, seed=5), scores, 1.0, 2)]


@pytest.mark.parametrize("strategy", ["uncertainty", "diversity", "combined", "balanced"])
def test_a_batch_holds_no_near_duplicates(strategy):
    pool, scores = cluster(30, spread=0.3), sure_scores(30)
    pool[11] = pool[3]  # the same photo twice, both unsure and both far out
    pool[3] = pool[11] = unit(-np.ones((1, DIM)) + np.eye(DIM)[1])
    scores[3] = scores[11] = np.log(0.5)
    picks = [i for i, _ in choose(strategy, pool, cluster(3, seed=5), scores, 1.0, 5)]
    assert len(picks) == 5 and len({3, 11} & set(picks)) == 1, picks


def test_balanced_picks_a_planted_rare_class_image_that_uncertainty_never_picks():
    """Issue 27: the head sure of image 13 holding class 2, which one labelled image holds;
    plain uncertainty spends the batch on images unsure of the common classes."""
    pool = cluster(30, spread=0.3)
    p = np.where(np.random.default_rng(2).random((30, 3)) < 0.5, 0.02, 0.98)
    p[:12, :2] = np.linspace(0.45, 0.55, 12)[:, None]  # unsure of classes 0 and 1
    p[13] = (0.01, 0.01, 0.95)
    p[:, 2] = np.minimum(p[:, 2], 0.1)
    p[13, 2] = 0.95
    scores, labelled = np.log(p), cluster(3, seed=5)
    unsure = [i for i, _ in choose("uncertainty", pool, labelled, scores, 1.0, 5)]
    picks = choose("balanced", pool, labelled, scores, 1.0, 5, positives=[10, 8, 1])
    assert 13 not in unsure and picks[0] == (13, pytest.approx(0.95)), picks
    rest = [i for i, _ in picks[1:]]
    assert set(rest) <= set(range(12)), rest  # then nearest the boundaries of 0 and 1
    even = [i for i, _ in choose("balanced", pool, labelled, scores, 1.0, 5, positives=[5, 5, 5])]
    assert 13 not in even  # no class short of labels: boundaries only


def test_auto_is_typical_until_every_class_has_its_labels_then_balanced():
    assert resolve("auto", False, None) == ("typical", "no head yet")
    few = [AUTO_SWITCH, AUTO_SWITCH + 3, AUTO_SWITCH - 1]
    assert resolve("auto", True, few) == (
        "typical", f"a class has {AUTO_SWITCH - 1} labelled positives, under {AUTO_SWITCH}"
    )  # fmt: skip
    assert resolve("auto", True, [AUTO_SWITCH] * 3)[0] == "balanced"
    assert resolve("uncertainty", True, few) == ("uncertainty", "as asked")
    pool, owner = planted_clusters([20, 15, 10], seed=4)
    scores = np.log(np.full((len(pool), 3), 0.5))
    for positives, twin in ((few, "typical"), ([9, 9, 9], "balanced")):
        picks = choose("auto", pool, pool[:0], scores, 1.0, 3, positives=positives)
        assert picks == choose(twin, pool, pool[:0], scores, 1.0, 3, positives=positives)


NONE = np.zeros((0, DIM), np.float32)


def planted_clusters(sizes: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors in well-apart clusters of these sizes, shuffled: (points, cluster of each)."""
    rng = np.random.default_rng(seed)
    centres = np.eye(DIM)[: len(sizes)] * 3
    points = [unit(c + rng.normal(0, 0.3, (n, DIM))) for c, n in zip(centres, sizes, strict=True)]
    order = rng.permutation(sum(sizes))
    owner = np.repeat(np.arange(len(sizes)), sizes)
    return np.concatenate(points)[order], owner[order]


def test_typical_covers_every_planted_cluster_before_repeating_one():
    """The first batch of a task (no label): one image of each planted cluster, small ones
    too, each among the densest of its cluster; a larger batch repeats the large ones first."""
    pool, owner = planted_clusters([40, 25, 15, 8, 6])
    picks = [i for i, _ in choose("typical", pool, NONE, None, 1.0, 5)]
    assert sorted(owner[picks]) == [0, 1, 2, 3, 4]
    for i in picks:  # nearer its cluster's mean than most of the cluster
        members = pool[owner == owner[i]]
        centre = members.mean(0)
        assert np.linalg.norm(pool[i] - centre) <= np.median(
            np.linalg.norm(members - centre, axis=1)
        )
    counts = np.bincount(owner[[i for i, _ in choose("typical", pool, NONE, None, 1.0, 9)]])
    assert counts.min() >= 1 and counts[0] >= counts[4], counts


def test_typical_fills_the_clusters_labels_left_uncovered():
    pool, owner = planted_clusters([40, 25, 15, 12, 10], seed=1)
    labelled = np.concatenate([pool[owner == 0][:1], pool[owner == 1][:1]])
    rest = np.ones(len(pool), bool)
    rest[[np.flatnonzero(owner == 0)[0], np.flatnonzero(owner == 1)[0]]] = False
    picks = [i for i, _ in choose("typical", pool[rest], labelled, None, 1.0, 3)]
    assert sorted(owner[rest][picks]) == [2, 3, 4]


def test_typical_takes_one_of_many_copies_of_a_photo():
    """Copies are the densest region of all, and one cluster: one of them is picked."""
    pool, owner = planted_clusters([30, 20, 10], seed=3)
    pool[owner == 2] = pool[owner == 2][0]  # ten copies of one photo
    picks = [i for i, _ in choose("typical", pool, NONE, None, 1.0, 8)]
    assert len(picks) == 8 and (owner[picks] == 2).sum() == 1, owner[picks]


def test_typical_is_the_same_for_a_seed():
    pool, _ = planted_clusters([30, 20, 10], seed=2)
    runs = [choose("typical", pool, NONE, None, 1.0, 7, seed) for seed in (0, 0, 1)]
    assert runs[0] == runs[1]
    assert len(runs[2]) == 7


def planted_cache(tmp_path, *, leak_labels: int) -> SplitCache:
    """Six images: each a label-blind sample of ordinary patches; image 000002 also has
    box-selected patches far out (a cache of a training split keeps them), image 000004 a
    sample a little apart from the rest. `leak_labels` changes the image labels."""
    rng = np.random.default_rng(0)
    features, index, sampled, labels = [], [], [], []
    for image in range(6):
        ordinary = np.ones(DIM) + rng.normal(0, 0.05, (5, DIM))
        if image == 4:
            ordinary += np.eye(DIM)[2] * 0.8
        features.append(ordinary)
        index += [image] * 5
        sampled += [True] * 5
        labels += [6] * 5  # background
        if image == 2:
            features.append(-10 * np.ones((3, DIM)))  # its object: would win any diversity
            index += [image] * 3
            sampled += [False] * 3
            labels += [0] * 3
    image_labels = np.full((6, 6), -1, np.int8)
    image_labels[2, 0] = 1
    image_labels[:, leak_labels] = 1
    shard = Shard(
        features=np.concatenate(features).astype(np.float16),
        boxes=np.zeros((len(index), 4), np.float32),
        labels=np.array(labels, np.int16),
        sampled=np.array(sampled),
        image_index=np.array(index, np.int32),
        image_ids=[f"{i:06d}" for i in range(6)],
        sizes=np.full((6, 2), 100, np.int32),
        image_labels=image_labels,
    )
    cache = SplitCache(tmp_path / f"c{leak_labels}", CacheKey({}))
    cache.prepare(n_images=6, images_per_shard=6, overwrite=True)
    classes = json.dumps([f"c{i}" for i in range(6)])
    write_shard(cache.shard_path(0), shard, {"digest": cache.digest, "class_names": classes})
    cache.record(0, images=6, patches=len(index), seconds=0.0, n_shards=1)
    return cache


@pytest.mark.parametrize("strategy", LABEL_FREE)
def test_a_label_free_strategy_picks_the_same_whatever_the_labels(tmp_path, strategy):
    picks = []
    for leak in (1, 3):
        embeddings = image_embeddings(planted_cache(tmp_path / str(leak), leak_labels=leak))
        pool = [i for i in embeddings.image_ids if i != "000000"]
        chosen = choose(strategy, embeddings.of(pool), embeddings.of(["000000"]), None, 1.0, 3)
        picks.append([pool[i] for i, _ in chosen])
    assert picks[0] == picks[1] and len(picks[0]) == 3


def test_a_strategy_sees_no_box_selected_patch_and_no_label(tmp_path):
    picks = []
    for leak in (1, 3):
        embeddings = image_embeddings(planted_cache(tmp_path, leak_labels=leak))
        pool = [i for i in embeddings.image_ids if i != "000000"]
        chosen = choose("diversity", embeddings.of(pool), embeddings.of(["000000"]), None, 1.0, 2)
        picks.append([pool[i] for i, _ in chosen])
    # Had the box-selected patches of 000002 counted, it would lead by far; its embedding is
    # its label-blind sample's mean, so the planted real outlier 000004 leads.
    assert picks[0][0] == "000004"
    assert picks[0] == picks[1]  # other image labels, the same choice
    embeddings = image_embeddings(planted_cache(tmp_path, leak_labels=1))
    assert (embeddings.of(["000002"]) > 0).all()
