"""PASCAL VOC average precision (the 2007 11-point rule and the area rule), location AP, and
the paper's mean-of-p^k pooling in log space. Truth is 1 positive, -1 negative, 0 difficult:
difficult images leave the ranking, as the devkit's VOCevalcls does."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def precision_recall(scores: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """[M] precision and [M] recall down the ranking of non-difficult images; None if no positive.

    Ties keep the input order (stable sort), as MATLAB's sort in the devkit does.
    """
    scores, truth = np.asarray(scores, dtype=np.float64), np.asarray(truth)
    if scores.ndim != 1 or scores.shape != truth.shape:
        raise ValueError(f"scores {scores.shape} and truth {truth.shape} must be equal 1-D shapes")
    if not np.isin(truth, (-1, 0, 1)).all():
        raise ValueError("truth must hold only 1 (positive), -1 (negative) or 0 (difficult)")
    kept = truth != 0
    scores, truth = scores[kept], truth[kept]
    n_pos = int((truth > 0).sum())
    if n_pos == 0:
        return None
    tp = np.cumsum(truth[np.argsort(-scores, kind="stable")] > 0)
    ranks = np.arange(1, len(tp) + 1)
    return tp / ranks, tp / n_pos


def voc07_ap(scores: np.ndarray, truth: np.ndarray) -> float:
    """VOC 2007 11-point interpolated AP of scores [M] against truth [M] in {1, -1, 0}.

    The rule the paper's VOC 2007 numbers use: mean over recall levels t = 0, 0.1, ..., 1
    of the best precision at recall >= t. nan when there is no positive, since AP is
    then undefined; mean_ap skips such classes.
    """
    pr = precision_recall(scores, truth)
    if pr is None:
        return float("nan")
    prec, rec = pr
    # 1e-9 keeps t = 0.3, 0.7 ... reachable despite 0.1 * 3 != 0.3 in binary floats.
    levels = np.linspace(0.0, 1.0, 11)
    best = [prec[rec >= t - 1e-9].max(initial=0.0) for t in levels]
    return float(np.mean(best))


def area_ap(scores: np.ndarray, truth: np.ndarray) -> float:
    """VOC 2010+ AP of scores [M] against truth [M] in {1, -1, 0}: area under the PR curve.

    Precision is first replaced by its maximum at any later rank (the devkit's VOCap
    envelope), then summed over the steps where recall grows. nan when there is no positive.
    """
    pr = precision_recall(scores, truth)
    if pr is None:
        return float("nan")
    return _envelope_area(*pr)


def _envelope_area(prec: np.ndarray, rec: np.ndarray) -> float:
    """Area under the precision envelope (the devkit's VOCap) of one ranking's curve."""
    envelope = np.maximum.accumulate(prec[::-1])[::-1]
    steps = np.diff(rec, prepend=0.0)
    return float(np.sum(steps * envelope))


def location_ap(scores: np.ndarray, hits: np.ndarray, present: np.ndarray) -> float:
    """Location AP of one class (Oquab et al., CVPR 2015; docs/localize.md): images ranked by
    their class score scores [M], each a true positive when its predicted location hits [M]
    an object of the class and it has one (present [M]: 1 yes, 0 only difficult ones, left
    out, -1 no), any other a false positive; the area AP of that ranking, nan without one.
    """
    scores = np.asarray(scores, dtype=np.float64)
    hits, present = np.asarray(hits, dtype=bool), np.asarray(present)
    if scores.ndim != 1 or not scores.shape == hits.shape == present.shape:
        raise ValueError(
            f"scores {scores.shape}, hits {hits.shape} and present {present.shape} must be "
            "equal 1-D shapes"
        )
    if not np.isin(present, (-1, 0, 1)).all():
        raise ValueError("present must hold only 1 (has the class), 0 (difficult) or -1 (none)")
    kept = present != 0
    scores, positive = scores[kept], (hits & (present == 1))[kept]
    n_present = int((present == 1).sum())
    if n_present == 0:
        return float("nan")
    tp = np.cumsum(positive[np.argsort(-scores, kind="stable")])
    return _envelope_area(tp / np.arange(1, len(tp) + 1), tp / n_present)


def pool_patch_log_scores(
    log_probs: np.ndarray, image_index: np.ndarray, n_images: int, k: float = 5.0
) -> np.ndarray:
    """[n_images, C] float64 log image scores: log of the mean over each image's patches of p**k.

    log_probs: [N, C] patch log class probabilities; image_index: [N] int, the image of each
    patch. k = 5 is Oquab et al. 2014 (sec. 3.3): a power above 1 lets a few confident patches
    outweigh many lukewarm ones, where k = 1 (plain mean) lets background dilute the object.
    Pooled in log space (log-sum-exp per image) because p**5 of an SVM's sigmoid underflows to
    exactly 0 far from the margin, and tied zeros would lose the ranking that AP measures.
    Images with no patch get nan, so a missing image cannot pass for a confident negative.
    """
    log_probs, image_index = np.asarray(log_probs, dtype=np.float64), np.asarray(image_index)
    if log_probs.ndim != 2 or image_index.shape != (log_probs.shape[0],):
        raise ValueError(
            f"log_probs must be [N, C] and image_index [N]; got {log_probs.shape} and {image_index.shape}"
        )
    if not np.issubdtype(image_index.dtype, np.integer):
        raise ValueError(f"image_index must be integers, got dtype {image_index.dtype}")
    if k <= 0:
        raise ValueError(f"pooling power k must be > 0, got {k}")
    if image_index.size and (image_index.min() < 0 or image_index.max() >= n_images):
        raise ValueError(
            f"image_index must lie in [0, {n_images}); got {image_index.min()}..{image_index.max()}"
        )
    powered = k * log_probs
    peak = np.full((n_images, log_probs.shape[1]), -np.inf)
    np.maximum.at(peak, image_index, powered)
    finite_peak = np.where(np.isfinite(peak), peak, 0.0)
    sums = np.zeros_like(peak)
    np.add.at(sums, image_index, np.exp(powered - finite_peak[image_index]))
    counts = np.bincount(image_index, minlength=n_images).astype(np.float64)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, finite_peak + np.log(sums) - np.log(counts), np.nan)


def mean_ap(values: npt.ArrayLike) -> float:
    """Mean of per-class APs, skipping nan (classes with no positive); nan if all are nan."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")
