"""One image's class scores from its patches' margins, in numpy: the head's link, then the
pooling `pipeline score` uses (mean of p^k, or the weak head's own, pipeline/heads/weak.py),
so that a runtime without torch gives the same numbers."""

from __future__ import annotations

import math

import numpy as np


def log_link(margins: np.ndarray, link: str) -> np.ndarray:
    """[N, columns] float64 log probabilities of a head's margins (softmax or sigmoid)."""
    margins = np.asarray(margins, dtype=np.float64)
    if link == "softmax":
        peak = margins.max(axis=1, keepdims=True)
        return margins - peak - np.log(np.exp(margins - peak).sum(axis=1, keepdims=True))
    if link == "sigmoid":
        return -np.logaddexp(0.0, -margins)
    raise ValueError(f"link {link!r}: choose softmax or sigmoid")


def _log_mean_exp(values: np.ndarray) -> np.ndarray:
    """log of the mean of exp(values) over axis 0, without overflow."""
    peak = values.max(axis=0)
    return peak + np.log(np.exp(values - peak).mean(axis=0))


def _mean_of(ranked: np.ndarray, share: float) -> np.ndarray:
    """Mean of the first ceil(share * n) rows (at least one) of ranked [n, C]."""
    take = min(len(ranked), max(1, math.ceil(share * len(ranked))))
    return ranked[:take].mean(axis=0)


def image_log_scores(margins: np.ndarray, pooling: dict, link: str, classes: int) -> np.ndarray:
    """[classes] float64 log image scores of one image's patch margins [N, columns]: log mean
    p^k for the paper's pooling; the weak head's pooling of logits, through log sigmoid."""
    margins = np.asarray(margins, dtype=np.float64)
    pool, k = pooling["pool"], float(pooling["k"])
    if pool == "mean-pk":
        return _log_mean_exp(k * log_link(margins, link))[:classes]
    logits = margins[:, :classes]
    if pool == "max":
        pooled = logits.max(axis=0)
    elif pool == "lse":
        r = float(pooling["r"])
        pooled = _log_mean_exp(r * logits) / r
    elif pool == "topk":
        ranked = -np.sort(-logits, axis=0)
        pooled = _mean_of(ranked, pooling["top_fraction"])
        if pooling["bottom_fraction"] > 0:
            low = _mean_of(ranked[::-1], pooling["bottom_fraction"])
            pooled = pooled + pooling["bottom_weight"] * low
    else:
        raise ValueError(f"pool {pool!r}: choose mean-pk, max, lse or topk")
    return -np.logaddexp(0.0, -pooled)


def score_power(pooling: dict) -> float:
    """The power p is raised to in the log score: exp(log score / power) is on p's scale."""
    return float(pooling["k"]) if pooling["pool"] == "mean-pk" else 1.0
