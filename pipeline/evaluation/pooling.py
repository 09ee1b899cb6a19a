"""Image scores from a head's patch scores, whatever the head: the paper's mean of p^k, or the
head's own pooling when it has one (the weak head pools as it was trained)."""

from __future__ import annotations

import numpy as np

from pipeline.evaluation.metrics import pool_patch_log_scores


def image_log_scores(
    head,
    features: np.ndarray,
    image_index: np.ndarray,
    n_images: int,
    k: float,
    *,
    log_probs: np.ndarray | None = None,
) -> np.ndarray:
    """[n_images, n_head_columns] float64 log image scores of the patches `features` [N, D],
    `image_index` [N] into the images; nan for an image without a patch. k is the power of
    mean-of-p^k pooling (heads with another pooling ignore it). `log_probs`: the head's
    predict_log_proba of `features` where the caller has it already (localize's maps)."""
    pool = getattr(head, "pool_log_scores", None)
    if pool is not None:
        return pool(features, image_index, n_images, k)
    if log_probs is None:
        log_probs = head.predict_log_proba(features)
    return pool_patch_log_scores(log_probs, image_index, n_images, k)


def score_power(head, k: float) -> float:
    """The power p was raised to in the image's log score: exp(log score / power) is a score
    in (0, 1] on p's own scale (the `score` columns of predictions.csv)."""
    power = getattr(head, "pool_power", None)
    return power(k) if power is not None else k


def describe_pooling(head, k: float) -> str:
    """How the head's image scores are pooled, for summary lines: "k 5" (mean of p^k)."""
    describe = getattr(head, "describe_pool", None)
    return describe(k) if describe is not None else f"k {k:g}"
