"""Which unlabelled images to label next, judged only by what an unlabelled image gives: the
head's pooled scores over its label-blind patch sample, and the mean feature of that sample;
never a label, nor a patch its boxes selected (docs/labels.md#which-images-to-label-next).
`diversity` and `typical` need no head, so they also pick the first batch of a task."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from pipeline.store.cache import SplitCache

CANDIDATES = 4  # combined: the k-center picks among the batch x CANDIDATES most uncertain
DUPLICATE = 0.25  # near-duplicates: closer than this share of the pool's median neighbour gap
NEIGHBOUR_SAMPLE = 2000  # images the median neighbour gap is measured on
BLOCK = 512  # pool images a distance block holds
TYPICAL_NEIGHBOURS = 20  # typicality: 1 / mean distance to this many nearest in the cluster
MIN_CLUSTER = 5  # typical: among clusters holding as many labels, smaller ones come last
MAX_CLUSTERS = 500  # typical: k-means clusters at most (labelled + batch below that)
SHORT = 0.5  # balanced: a class with fewer labelled positives than this x the mean is short
AUTO_SWITCH = 5  # auto: typical until every class has this many labelled positives, then balanced


@dataclass(frozen=True)
class Embeddings:
    """Per image, the mean of its label-blind patch sample's features, unit length."""

    image_ids: list[str]
    vectors: np.ndarray  # [n_images, D] float32

    def of(self, image_ids) -> np.ndarray:
        where = {i: n for n, i in enumerate(self.image_ids)}
        return self.vectors[[where[i] for i in image_ids]]


def image_embeddings(cache: SplitCache) -> Embeddings:
    """The embedding of every image of the cache with a patch in its label-blind sample."""
    ids, vectors = [], []
    for shard in cache.iter_shards():
        index = shard.image_index[shard.sampled]
        n = len(shard.image_ids)
        counts = np.bincount(index, minlength=n)
        members = sparse.csr_matrix(
            (np.ones(len(index), np.float32), (index, np.arange(len(index)))), shape=(n, len(index))
        )
        sums = members @ shard.features[shard.sampled].astype(np.float32)
        seen = counts > 0
        ids += [i for i, s in zip(shard.image_ids, seen, strict=True) if s]
        vectors.append(sums[seen] / counts[seen, None])
    vectors = np.concatenate(vectors) if vectors else np.zeros((0, 0), np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return Embeddings(ids, (vectors / np.maximum(norms, 1e-12)).astype(np.float32))


def uncertainty(log_scores: np.ndarray, power: float) -> np.ndarray:
    """[n] the summed binary entropy of each image's class scores on p's own scale
    (exp(log score / power)); 0 for an image without a score."""
    p = np.clip(np.exp(np.nan_to_num(log_scores, nan=-np.inf) / power), 1e-12, 1 - 1e-12)
    return -(p * np.log(p) + (1 - p) * np.log1p(-p)).sum(axis=1) * ~np.isnan(log_scores).any(1)


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[len(a), len(b)] Euclidean distances of unit vectors."""
    return np.sqrt(np.clip(2.0 - 2.0 * a @ b.T, 0.0, None))


def _nearest(a: np.ndarray, b: np.ndarray, *, skip_zero: bool = False) -> np.ndarray:
    """[len(a)] distance of each row of a to its nearest row of b, in blocks of a so that a
    pool of 100,000 images never holds their whole distance matrix; `skip_zero` ignores
    distances of 0 (a row itself, or an exact copy)."""
    out = np.empty(len(a))
    for start in range(0, len(a), BLOCK):
        block = _distances(a[start : start + BLOCK], b)
        if skip_zero:
            block[block < 1e-6] = np.inf
        out[start : start + BLOCK] = block.min(axis=1) if block.shape[1] else np.inf
    return out


def duplicate_gap(pool: np.ndarray, seed: int = 0) -> float:
    """Below this distance two images count as near-duplicates: DUPLICATE x the median
    distance of a pool image to its nearest other one (on a sample of a large pool)."""
    if len(pool) < 2:
        return 0.0
    rng = np.random.default_rng(seed)
    sample = pool[rng.permutation(len(pool))[:NEIGHBOUR_SAMPLE]]
    nearest = _nearest(sample, pool, skip_zero=True)  # exact copies say nothing of the pool
    nearest = nearest[np.isfinite(nearest)]
    return float(DUPLICATE * np.median(nearest)) if len(nearest) else 0.0


def k_center(pool: np.ndarray, labelled: np.ndarray, n: int, gap: float, among=None):
    """Greedy k-center: up to n pool indices, each the farthest from the labelled images and
    those picked before it, never closer to one than `gap`; (index, its distance) pairs."""
    among = np.arange(len(pool)) if among is None else np.asarray(among)
    nearest = np.full(len(among), np.inf)
    if len(labelled):
        nearest = _nearest(pool[among], labelled)
    elif len(among):  # nothing labelled: start at the image farthest from the pool's mean
        centre = pool.mean(0, keepdims=True)
        nearest = _distances(pool[among], centre / max(np.linalg.norm(centre), 1e-12))[:, 0]
    picked = []
    while len(picked) < n and len(among):
        best = int(np.argmax(nearest))
        if not nearest[best] > gap:  # every image left is a near-duplicate, or picked
            break
        picked.append((int(among[best]), float(nearest[best])))
        nearest = np.minimum(nearest, _distances(pool[among], pool[among[best]][None])[:, 0])
        nearest[best] = -np.inf
    return picked


def most_uncertain(unsure: np.ndarray, pool: np.ndarray, labelled: np.ndarray, n: int, gap: float):
    """The n most uncertain pool images, skipping near-duplicates of a labelled or picked one."""
    picked, kept = [], list(labelled)
    for i in np.argsort(-unsure, kind="stable"):
        if len(picked) == n:
            break
        if kept and _distances(pool[i][None], np.asarray(kept))[0].min() <= gap:
            continue
        picked.append((int(i), float(unsure[i])))
        kept.append(pool[i])
    return picked


def clusters(points: np.ndarray, k: int, seed: int) -> np.ndarray:
    """[n] the k-means cluster of each point (k-means++, seeded; mini-batches past 50)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    k = min(k, len(points))
    if k <= 50:
        model = KMeans(k, n_init=1, random_state=seed)
    else:
        model = MiniBatchKMeans(k, n_init=1, random_state=seed, batch_size=4096)
    return model.fit_predict(points)


def typicality(points: np.ndarray) -> np.ndarray:
    """[n] 1 / the mean distance of each point to its nearest others (TYPICAL_NEIGHBOURS at
    most): the density of the region it stands in."""
    k = min(TYPICAL_NEIGHBOURS, len(points) - 1)
    if k < 1:
        return np.ones(len(points))
    out = np.empty(len(points))
    for start in range(0, len(points), BLOCK):
        block = _distances(points[start : start + BLOCK], points)
        nearest = np.partition(block, k, axis=1)[:, : k + 1]  # itself (0) and its k nearest
        out[start : start + BLOCK] = k / np.maximum(nearest.sum(axis=1), 1e-12)
    return out


def typical(pool: np.ndarray, labelled: np.ndarray, n: int, gap: float, seed: int = 0):
    """TypiClust-style picks (Hacohen et al., 2022): pool and labelled images in k-means
    clusters, as many as there will be labels; each pick the most typical image of the
    largest cluster holding the fewest labels (clusters under MIN_CLUSTER images last), so a
    batch covers the pool's dense regions before it repeats one. TypiClust drops the small
    clusters; on a pool of a few dozen photos most clusters are small, and dropping them left
    two of five classes out of a first batch. Near-duplicates of a labelled or picked image
    are passed over."""
    if not len(pool) or n <= 0:
        return []
    offset = len(labelled)
    points = np.concatenate([labelled, pool]) if offset else pool
    cluster = clusters(points, min(offset + n, MAX_CLUSTERS), seed)
    count = int(cluster.max()) + 1
    held = np.bincount(cluster[:offset], minlength=count)
    sizes = np.bincount(cluster, minlength=count)
    dense = np.empty(len(pool))
    for c in range(count):
        members = cluster == c
        # points[members] lists the cluster's labelled images first, then its pool images
        dense[np.flatnonzero(members[offset:])] = typicality(points[members])[held[c] :]
    free = cluster[offset:].copy()  # each pool image's cluster; -1 once picked or passed over
    kept, picked = list(labelled), []
    while len(picked) < n and (free >= 0).any():
        open_ = np.unique(free[free >= 0])
        c = min(open_, key=lambda c: (held[c], sizes[c] < MIN_CLUSTER, -sizes[c], c))
        members = np.flatnonzero(free == c)
        i = int(members[np.argmax(dense[members])])
        free[i] = -1
        if kept and _distances(pool[i][None], np.asarray(kept))[0].min() <= gap:
            continue
        picked.append((i, float(dense[i])))
        kept.append(pool[i])
        held[c] += 1
    return picked


def balanced(p: np.ndarray, positives, pool: np.ndarray, labelled: np.ndarray, n: int, gap: float):
    """Class-balanced uncertainty: the classes in turn, fewest labelled positives first. A
    class short of labels (under SHORT x the mean count) takes the pool image the head thinks
    likeliest to hold it; any other class the image nearest its decision boundary (p = 1/2).
    A pick counts for its class from then on. p [n, C]: the head's scores on p's scale."""
    counts = np.asarray(positives, float).copy()
    free = ~np.isnan(p).any(axis=1)
    kept, picked = list(labelled), []
    while len(picked) < n and free.any():
        c = int(np.argmin(counts))
        value = p[:, c] if counts[c] < SHORT * counts.mean() else -np.abs(p[:, c] - 0.5)
        candidates = np.flatnonzero(free)
        i = int(candidates[np.argmax(value[candidates])])
        free[i] = False
        if kept and _distances(pool[i][None], np.asarray(kept))[0].min() <= gap:
            continue
        picked.append((i, float(value[i])))
        kept.append(pool[i])
        counts[c] += 1
    return picked


def resolve(strategy: str, has_head: bool, positives) -> tuple[str, str]:
    """The strategy `auto` stands for, and why: typical while a class has fewer than
    AUTO_SWITCH labelled positives (or there is no head yet), then balanced."""
    if strategy != "auto":
        return strategy, "as asked"
    if not has_head or positives is None:
        return "typical", "no head yet"
    fewest = int(np.min(positives)) if len(positives) else 0
    if fewest < AUTO_SWITCH:
        return "typical", f"a class has {fewest} labelled positives, under {AUTO_SWITCH}"
    return "balanced", f"every class has {AUTO_SWITCH} or more labelled positives"


def choose(
    strategy: str, pool: np.ndarray, labelled: np.ndarray, log_scores: np.ndarray | None,
    power: float, batch: int, seed: int = 0, positives=None,
) -> list[tuple[int, float]]:  # fmt: skip
    """`batch` (pool index, strategy score) pairs, best first. pool [n, D] and labelled [m, D]
    are embeddings; log_scores [n, C] the head's pooled image scores of the pool (None for
    LABEL_FREE strategies); `seed` seeds typical's clusters; `positives` [C] the labelled
    images' positives per class (balanced)."""
    strategy = resolve(strategy, log_scores is not None, positives)[0]
    gap = duplicate_gap(pool)
    if strategy == "diversity":
        return k_center(pool, labelled, batch, gap)
    if strategy == "typical":
        return typical(pool, labelled, batch, gap, seed)
    if strategy == "balanced":
        p = np.exp(log_scores / power)
        held = np.zeros(p.shape[1]) if positives is None else positives
        return balanced(p, held, pool, labelled, batch, gap)
    unsure = uncertainty(log_scores, power)
    if strategy == "uncertainty":
        return most_uncertain(unsure, pool, labelled, batch, gap)
    among = np.argsort(-unsure, kind="stable")[: CANDIDATES * batch]
    return [(i, float(unsure[i])) for i, _ in k_center(pool, labelled, batch, gap, among)]
