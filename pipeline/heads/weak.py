"""A patch head learned from image labels alone (Oquab, Bottou, Laptev, Sivic, "Is object
localization for free?", CVPR 2015): the adaptation layers score every patch, a pooling makes
each image's score, and multi-label cross-entropy on the image labels trains the whole
(poolings and training in docs/weak-supervision.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator
from sklearn.preprocessing import StandardScaler

from pipeline.heads import defaults
from pipeline.heads.device import resolve_device
from pipeline.heads.layers import (
    StandardisedRows,
    TorchModelState,
    adaptation_layers,
    cosine_sgd,
    seeded_torch,
)
from pipeline.heads.pools import POOLS, check_pooling

ImageChunks = Callable[[int], Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]]


def _padded(scores: torch.Tensor, image_index: torch.Tensor, n_images: int):
    """Patch scores [N, C] as [n_images, L, C] (L: the most patches of an image) and the
    mask [n_images, L] of real patches."""
    counts = torch.bincount(image_index, minlength=n_images)
    order = torch.argsort(image_index, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(image_index), device=scores.device) - starts[image_index[order]]
    length = int(counts.max()) if len(counts) else 0
    dense = scores.new_zeros((n_images, max(length, 1), scores.shape[1]))
    mask = torch.zeros((n_images, max(length, 1)), dtype=torch.bool, device=scores.device)
    dense[image_index[order], slot] = scores[order]
    mask[image_index[order], slot] = True
    return dense, mask, counts


def _mean_of_first(ranked: torch.Tensor, take: torch.Tensor) -> torch.Tensor:
    """Mean over dim 1 of the first `take` [n_images] entries of ranked [n_images, L, C]."""
    first = torch.arange(ranked.shape[1], device=ranked.device)[None, :] < take[:, None]
    total = (ranked * first[..., None]).sum(1)
    return total / take.clamp_min(1)[:, None]


def pooled(
    scores: torch.Tensor,
    image_index: torch.Tensor,
    n_images: int,
    *,
    pool: str,
    r: float,
    top_fraction: float,
    bottom_fraction: float,
    bottom_weight: float,
    k: float,
) -> torch.Tensor:
    """[n_images, C] pooled scores of patch logits [N, C]: logits for max, lse and topk; the log
    image probability for mean-pk. Images without a patch get 0 (callers leave them out)."""
    dense, mask, counts = _padded(scores, image_index, n_images)
    valid = mask[..., None]
    n = counts.clamp_min(1).to(scores.dtype)[:, None]
    if pool == "max":
        return dense.masked_fill(~valid, -torch.inf).amax(1).masked_fill(counts[:, None] == 0, 0)
    if pool == "lse":
        lse = torch.logsumexp((r * dense).masked_fill(~valid, -torch.inf), 1)
        return ((lse - torch.log(n)) / r).masked_fill(counts[:, None] == 0, 0)
    if pool == "mean-pk":
        powered = (k * F.logsigmoid(dense)).masked_fill(~valid, -torch.inf)
        return (torch.logsumexp(powered, 1) - torch.log(n)).masked_fill(counts[:, None] == 0, 0)
    if pool == "topk":
        high = dense.masked_fill(~valid, -torch.inf).sort(1, descending=True).values
        take = torch.ceil(top_fraction * counts).clamp_min(1).long().minimum(counts)
        score = _mean_of_first(torch.nan_to_num(high, neginf=0.0), take)
        if bottom_fraction > 0:
            low = dense.masked_fill(~valid, torch.inf).sort(1).values
            take = torch.ceil(bottom_fraction * counts).clamp_min(1).long().minimum(counts)
            score = score + bottom_weight * _mean_of_first(torch.nan_to_num(low, posinf=0.0), take)
        return score
    raise ValueError(f"pool {pool!r}: choose one of {', '.join(POOLS)}")


def _log_one_minus_exp(log_p: torch.Tensor) -> torch.Tensor:
    """log(1 - p) from log p < 0, accurate near both ends (Maechler's log1mexp)."""
    log_p = log_p.clamp_max(-1e-7)
    return torch.where(
        log_p > -0.6931, torch.log(-torch.expm1(log_p)), torch.log1p(-torch.exp(log_p))
    )


class WeakPatchHead(TorchModelState, StandardisedRows, BaseEstimator):
    """Adaptation layers trained from image labels through a pooling of patch scores.

    fit_stream(chunks) / fit(X, image_index, Y) learn; `pool_log_scores` gives log image
    scores [n_images, C] (what score pools with), `predict_log_proba` log sigmoid patch scores
    [N, C] (what the score maps show). `classes_` are the class columns 0..C-1 of Y.
    """

    link = "sigmoid"  # patch logits -> p(class | patch) (an export's model.json says it)

    def __init__(
        self,
        *,
        pool: str = defaults.POOL,
        r: float = defaults.LSE_R,
        top_fraction: float = defaults.TOP_FRACTION,
        bottom_fraction: float = defaults.BOTTOM_FRACTION,
        bottom_weight: float = defaults.BOTTOM_WEIGHT,
        k: float = defaults.K,
        hidden: int = defaults.HIDDEN,
        dropout: float = defaults.DROPOUT,
        lr: float = defaults.LR,
        momentum: float = defaults.MOMENTUM,
        weight_decay: float = defaults.WEIGHT_DECAY,
        epochs: int = defaults.EPOCHS,
        batch_images: int = defaults.BATCH_IMAGES,
        seed: int = defaults.SEED,
        device: str = "cpu",
    ) -> None:
        self.pool = pool
        self.r = r
        self.top_fraction = top_fraction
        self.bottom_fraction = bottom_fraction
        self.bottom_weight = bottom_weight
        self.k = k
        self.hidden = hidden
        self.dropout = dropout
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.batch_images = batch_images
        self.seed = seed
        self.device = device

    def fit(self, X: np.ndarray, image_index: np.ndarray, Y: np.ndarray) -> WeakPatchHead:
        """Train on in-memory arrays: X [N, D] patches, image_index [N] into Y [M, C]."""
        X, image_index, Y = np.asarray(X), np.asarray(image_index), np.asarray(Y)
        return self.fit_stream(lambda epoch: [(X, image_index, Y)])

    def fit_stream(self, chunks: ImageChunks, *, progress=None) -> WeakPatchHead:
        """Train from `chunks(epoch)` (see the module docstring); `progress(epoch, loss)`."""
        check_pooling(self.pool)
        device = resolve_device(self.device)
        with seeded_torch(self.seed, device):
            self._fit_statistics(chunks(0))
            self.model_ = adaptation_layers(
                self.n_features_in_, self.hidden, self.dropout, len(self.classes_)
            ).to(device)
            optimizer, schedule = cosine_sgd(
                self.model_,
                lr=self.lr,
                momentum=self.momentum,
                weight_decay=self.weight_decay,
                epochs=self.epochs,
            )
            self.loss_curve_: list[float] = []
            for epoch in range(self.epochs):
                loss = self._fit_epoch(chunks(epoch), epoch, optimizer, device)
                schedule.step()
                self.loss_curve_.append(loss)
                if progress is not None:
                    progress(epoch, loss)
        self.model_.eval()
        return self

    def _fit_statistics(self, chunks) -> None:
        scaler = StandardScaler()
        n_classes, patches, images = None, 0, 0
        positives = None
        for X, image_index, Y in chunks:
            X, image_index, Y = self._check_chunk(X, image_index, Y, n_classes)
            n_classes = Y.shape[1]
            if len(X) == 0:
                continue
            scaler.partial_fit(X.astype(np.float32, copy=False))
            seen = np.unique(image_index)
            patches, images = patches + len(X), images + len(seen)
            found = (Y[seen] == 1).sum(0)
            positives = found if positives is None else positives + found
        if positives is None:
            raise ValueError("the training stream has no patch; a weak head needs images")
        if (positives == 0).any():
            raise ValueError(
                f"class columns {np.flatnonzero(positives == 0).tolist()} have no positive "
                "image with patches; every class needs one"
            )
        self.classes_ = np.arange(n_classes)
        self.class_positives_ = positives.astype(np.int64)
        self.n_features_in_ = int(scaler.n_features_in_)
        self.n_samples_seen_ = patches
        self.n_images_seen_ = images
        self.mean_ = scaler.mean_.astype(np.float32)
        self.scale_ = scaler.scale_.astype(np.float32)

    @staticmethod
    def _check_chunk(X, image_index, Y, n_classes):
        X, image_index, Y = np.asarray(X), np.asarray(image_index), np.asarray(Y)
        if X.ndim != 2 or image_index.shape != (len(X),) or Y.ndim != 2:
            raise ValueError(
                f"a chunk must be X [n, D], image_index [n], Y [m, C]; got {X.shape}, "
                f"{image_index.shape}, {Y.shape}"
            )
        if len(X) and (image_index.min() < 0 or image_index.max() >= len(Y)):
            raise ValueError(f"image_index must lie in [0, {len(Y)})")
        if n_classes is not None and Y.shape[1] != n_classes:
            raise ValueError(f"a chunk has {Y.shape[1]} classes, an earlier one {n_classes}")
        return X, image_index.astype(np.int64), Y

    def _fit_epoch(self, chunks, epoch: int, optimizer, device) -> float:
        self.model_.train()
        rng = np.random.default_rng(self.seed + epoch)
        total, entries = 0.0, 0
        for X, image_index, Y in chunks:
            X, image_index, Y = self._check_chunk(X, image_index, Y, len(self.classes_))
            images = rng.permutation(np.unique(image_index))
            for start in range(0, len(images), self.batch_images):
                batch = np.sort(images[start : start + self.batch_images])
                rows = np.flatnonzero(np.isin(image_index, batch))
                local = np.searchsorted(batch, image_index[rows])
                truth = torch.from_numpy(Y[batch].astype(np.float32)).to(device)
                xb = torch.from_numpy(self._standardise(X[rows])).to(device)
                scores = self._pool(self.model_(xb), torch.from_numpy(local).to(device), len(batch))
                loss_sum, count = self._loss(scores, truth)
                if count == 0:
                    continue
                optimizer.zero_grad(set_to_none=True)
                (loss_sum / count).backward()
                optimizer.step()
                total, entries = total + loss_sum.item(), entries + count
        return total / max(entries, 1)

    def _pool(self, scores: torch.Tensor, image_index: torch.Tensor, n_images: int, k=None):
        return pooled(
            scores, image_index, n_images, pool=self.pool, r=self.r,
            top_fraction=self.top_fraction, bottom_fraction=self.bottom_fraction,
            bottom_weight=self.bottom_weight, k=self.k if k is None else k,
        )  # fmt: skip

    def _loss(self, scores: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(summed binary cross-entropy over the labelled entries, their count); 0 labels
        (difficult) are left out."""
        known = truth != 0
        target = (truth > 0).to(scores.dtype)
        if self.pool == "mean-pk":
            log_p = scores.clamp_max(-1e-7)
            entry = -(target * log_p + (1 - target) * _log_one_minus_exp(log_p))
        else:
            entry = F.binary_cross_entropy_with_logits(scores, target, reduction="none")
        return (entry * known).sum(), int(known.sum())

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Patch logits [N, C] float32, columns in the order of `classes_`."""
        X = self._checked_features(X)
        device = resolve_device(self.device)
        model = self.model_.to(device)
        out = np.empty((len(X), len(self.classes_)), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(X), self._predict_rows):
                rows = torch.from_numpy(self._standardise(X[start : start + self._predict_rows]))
                out[start : start + len(rows)] = model(rows.to(device)).float().cpu().numpy()
        return out

    def predict_log_proba(self, X: np.ndarray) -> np.ndarray:
        """[N, C] float64 log sigmoid of each patch's logits: p(class | patch) for the maps."""
        return -np.logaddexp(0.0, -self.decision_function(X).astype(np.float64))

    def pool_log_scores(
        self, X: np.ndarray, image_index: np.ndarray, n_images: int, k: float
    ) -> np.ndarray:
        """[n_images, C] float64 log image probabilities, pooled as the head was trained (k:
        the power for mean-pk); nan for an image without a patch."""
        logits = torch.from_numpy(self.decision_function(X)).double()
        index = torch.from_numpy(np.asarray(image_index, dtype=np.int64))
        with torch.inference_mode():
            scores = self._pool(logits, index, n_images, k)
            if self.pool != "mean-pk":
                scores = F.logsigmoid(scores)
        out = scores.numpy().astype(np.float64)
        out[np.bincount(index.numpy(), minlength=n_images) == 0] = np.nan
        return out

    def describe_pool(self, k: float) -> str:
        """The pooling in a few words (score's summary line)."""
        detail = {
            "max": "",
            "lse": f" r {self.r:g}",
            "topk": f" top {self.top_fraction:g}"
            + (
                f" bottom {self.bottom_fraction:g} x {self.bottom_weight:g}"
                if self.bottom_fraction
                else ""
            ),
            "mean-pk": f" k {k:g}",
        }[self.pool]
        return f"{self.pool} pooling{detail}"

    def pool_power(self, k: float) -> float:
        """The power p is raised to in the image score (pipeline/evaluation/pooling.py)."""
        return k if self.pool == "mean-pk" else 1.0
