"""The streaming base of the patch heads: a statistics pass, then epochs over chunks (one
HDF5 shard at a time), so memory is bounded by one shard whatever the split's size."""

from __future__ import annotations

import abc
from collections import Counter
from collections.abc import Callable, Iterable, Iterator

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.preprocessing import StandardScaler

from pipeline.heads.layers import StandardisedRows

Chunks = Callable[[int], Iterable[tuple[np.ndarray, np.ndarray]]]
Progress = Callable[[int, float], None]
ClassWeight = None | str | dict


class StreamingHead(StandardisedRows, ClassifierMixin, BaseEstimator, abc.ABC):
    """What both heads share: the statistics pass, the epoch loop and batched prediction.

    A subclass sets up its model in `_start`, trains one epoch in `_fit_epoch` and returns
    margins for standardised rows in `_margins`; `_log_link` maps margins to log probabilities.
    """

    epochs: int
    seed: int
    class_weight: ClassWeight

    def fit(self, X: np.ndarray, y: np.ndarray) -> StreamingHead:
        """Train on in-memory arrays. X: [N, D] float16/float32 features, y: [N] labels."""
        X, y = np.asarray(X), np.asarray(y)
        return self.fit_stream(lambda epoch: [(X, y)])

    def fit_stream(self, chunks: Chunks, *, progress: Progress | None = None) -> StreamingHead:
        """Train from a stream: `chunks(epoch)` yields (X [n, D], y [n]) pieces, e.g. shards.

        `chunks(0)` is read once for statistics, then `chunks(e)` once for each epoch e; the
        caller chooses the chunk order, the head shuffles rows within each chunk.
        `progress(epoch, loss)`, if given, is called at the end of every epoch.
        """
        self._fit_statistics(chunks(0))
        self._start()
        self.loss_curve_: list[float] = []
        for epoch in range(self.epochs):
            loss = self._fit_epoch(self._shuffled(chunks(epoch), epoch))
            self.loss_curve_.append(loss)
            if progress is not None:
                progress(epoch, loss)
        self._finish()
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Scores [N, n_classes] float32 before the link, columns in the order of `classes_`."""
        X = self._checked_features(X)
        out = np.empty((len(X), len(self.classes_)), dtype=np.float32)
        for start in range(0, len(X), self._predict_rows):
            stop = start + self._predict_rows
            out[start:stop] = self._margins(self._standardise(X[start:stop]))
        return out

    def predict_log_proba(self, X: np.ndarray) -> np.ndarray:
        """Log class probabilities [N, n_classes] float64, columns in the order of `classes_`.

        The paper's pooling raises p to the 5th power: a sigmoid of a margin past about 17 is
        exactly 1 in float32, and p^5 of a small p underflows to 0, so the scorer pools these
        logs (finite for any margin) rather than the probabilities.
        """
        return self._log_link(self.decision_function(X).astype(np.float64))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities [N, n_classes] float64, columns in the order of `classes_`."""
        return np.exp(self.predict_log_proba(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Labels [N] from `classes_`."""
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]

    def _fit_statistics(self, chunks: Iterable[tuple[np.ndarray, np.ndarray]]) -> None:
        scaler = StandardScaler()
        counts: Counter = Counter()
        for X, y in chunks:
            X, y = self._check_chunk(X, y, getattr(scaler, "n_features_in_", None))
            if len(y) == 0:  # a shard can be empty; StandardScaler and SGD refuse 0 rows
                continue
            scaler.partial_fit(X.astype(np.float32, copy=False))
            counts.update(dict(zip(*np.unique(y, return_counts=True), strict=True)))
        if len(counts) < 2:
            raise ValueError(
                f"the training stream has {sum(counts.values())} rows and labels "
                f"{sorted(counts)}; a head needs rows of at least two classes"
            )
        self.classes_ = np.asarray(sorted(counts))
        self.class_counts_ = np.asarray([counts[c] for c in self.classes_], dtype=np.int64)
        self.n_samples_seen_ = int(self.class_counts_.sum())
        self.n_features_in_ = int(scaler.n_features_in_)
        self.mean_ = scaler.mean_.astype(np.float32)
        self.scale_ = scaler.scale_.astype(np.float32)

    @staticmethod
    def _check_chunk(
        X: np.ndarray, y: np.ndarray, n_features: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        X, y = np.asarray(X), np.asarray(y)
        if X.ndim != 2 or y.shape != (len(X),):
            raise ValueError(f"a chunk must be X [n, D] and y [n]; got {X.shape} and {y.shape}")
        if n_features is not None and X.shape[1] != n_features:
            raise ValueError(
                f"a chunk has {X.shape[1]} features, an earlier one {n_features}: "
                "every chunk of a stream must come from the same feature cache"
            )
        return X, y

    def _shuffled(
        self, chunks: Iterable[tuple[np.ndarray, np.ndarray]], epoch: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Standardised chunks with rows shuffled, labels as indices into `classes_`."""
        rng = np.random.default_rng(self.seed + epoch)
        for X, y in chunks:
            X, y = self._check_chunk(X, y, self.n_features_in_)
            if len(y) == 0:
                continue
            order = rng.permutation(len(y))
            yield self._standardise(X[order]), self._encode(y[order])

    def _encode(self, y: np.ndarray) -> np.ndarray:
        index = np.searchsorted(self.classes_, y).clip(0, len(self.classes_) - 1)
        unseen = self.classes_[index] != y
        if unseen.any():
            raise ValueError(
                f"labels {np.unique(y[unseen]).tolist()} were not in the statistics pass: "
                "chunks(epoch) must yield the same rows for every epoch"
            )
        return index

    def _class_weights(self) -> np.ndarray:
        """Weight per class [n_classes] float64, as scikit-learn's `class_weight`."""
        if self.class_weight is None:
            return np.ones(len(self.classes_))
        if isinstance(self.class_weight, str) and self.class_weight == "balanced":
            return self.n_samples_seen_ / (len(self.classes_) * self.class_counts_)
        if isinstance(self.class_weight, dict):
            weights = np.ones(len(self.classes_))
            for label, weight in self.class_weight.items():
                index = np.flatnonzero(self.classes_ == label)
                if len(index) == 0:
                    raise ValueError(
                        f"class_weight names label {label!r}, which is not among the "
                        f"training labels {self.classes_.tolist()}"
                    )
                weights[index] = weight
            return weights
        raise ValueError(
            f"class_weight={self.class_weight!r}; use None, 'balanced' or a dict label -> weight"
        )

    @abc.abstractmethod
    def _start(self) -> None:
        """Build a fresh model once the statistics are known."""

    @abc.abstractmethod
    def _fit_epoch(self, batches: Iterator[tuple[np.ndarray, np.ndarray]]) -> float:
        """Train on shuffled standardised chunks; return the epoch's mean loss."""

    def _finish(self) -> None:
        """Hook run after the last epoch."""

    @abc.abstractmethod
    def _margins(self, X: np.ndarray) -> np.ndarray:
        """Scores [n, n_classes] of standardised rows X [n, D] float32."""

    @abc.abstractmethod
    def _log_link(self, margins: np.ndarray) -> np.ndarray:
        """Map scores [N, n_classes] to log probabilities."""
