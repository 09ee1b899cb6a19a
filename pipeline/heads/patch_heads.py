"""Heads trained on cached patch features: the paper's adaptation layers and a linear baseline.

Oquab et al., CVPR 2014, section 3.2: the frozen network's features feed two new layers, FCa
(2048 units, ReLU, dropout 0.5) and FCb (one output per target class plus a "background"
class, softmax), trained with stochastic gradient descent on the target patches. `MLPHead`
is that pair; `LinearSVMHead` is a one-vs-rest linear SVM on the same features, the
frozen-feature baseline the adaptation layers are measured against.

Both heads are scikit-learn estimators (hyperparameters in `__init__`, learned attributes end
with `_`, `clone`, `get_params` and joblib work) and both train in bounded memory from a
stream of chunks, one HDF5 shard at a time: `fit_stream(chunks)` calls `chunks(0)` once for a
statistics pass (feature mean and scale, class counts), then `chunks(epoch)` once per epoch,
and never holds more than one chunk. `fit(X, y)` is the same on one in-memory chunk.

The optimiser settings of `MLPHead` (lr 0.01, momentum 0.9, weight decay 1e-4, cosine decay)
are common SGD defaults, not values from the paper.
"""

from __future__ import annotations

import abc
import contextlib
import copy
from collections import Counter
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch
from scipy.special import log_softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import SGDClassifier
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

Chunks = Callable[[int], Iterable[tuple[np.ndarray, np.ndarray]]]
Progress = Callable[[int, float], None]
ClassWeight = None | str | dict


def torch_device(name: str) -> torch.device:
    """The torch device of a --device value: cpu, cuda, or auto (cuda when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@contextlib.contextmanager
def seeded_torch(seed: int, device: torch.device) -> Iterator[None]:
    """Torch draws seeded by `seed` inside, the global generators left as they were."""
    forked = []
    if device.type == "cuda":
        forked = [torch.cuda.current_device() if device.index is None else device.index]
    with torch.random.fork_rng(devices=forked):
        torch.manual_seed(seed)
        yield


def adaptation_layers(n_features: int, hidden: int, dropout: float, n_outputs: int):
    """The paper's FCa (Linear, ReLU, dropout) then FCb (one output per class)."""
    return torch.nn.Sequential(
        torch.nn.Linear(n_features, hidden),
        torch.nn.ReLU(),
        torch.nn.Dropout(dropout),
        torch.nn.Linear(hidden, n_outputs),
    )


def cosine_sgd(model, *, lr: float, momentum: float, weight_decay: float, epochs: int):
    """SGD with momentum and weight decay, its learning rate decayed along a cosine."""
    optimizer = torch.optim.SGD(
        model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
    )
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))


class StandardisedRows:
    """What heads on cached features share: the feature check and standardised rows, from
    the `mean_`, `scale_` and `n_features_in_` of their statistics pass."""

    mean_: np.ndarray
    scale_: np.ndarray
    n_features_in_: int

    def _checked_features(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "classes_")
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has shape {X.shape}; this head was fitted on {self.n_features_in_} "
                "features: score features from the same backbone and layer"
            )
        return X

    def _standardise(self, X: np.ndarray) -> np.ndarray:
        out = np.subtract(X, self.mean_, dtype=np.float32)
        out /= self.scale_
        return out


class TorchModelState:
    """A pickled head holds a CPU copy of its network `model_`, so that it loads anywhere."""

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        if "model_" in state:
            state["model_"] = copy.deepcopy(state["model_"]).cpu()
        return state


class _StreamingHead(StandardisedRows, ClassifierMixin, BaseEstimator, abc.ABC):
    """What both heads share: the statistics pass, the epoch loop and batched prediction.

    A subclass sets up its model in `_start`, trains one epoch in `_fit_epoch` and returns
    margins for standardised rows in `_margins`; `_log_link` maps margins to log probabilities.
    """

    # Rows per forward pass at prediction time: with 1280-d features and 2048 hidden units
    # this keeps a pass near 250 MB whatever the size of X.
    _predict_rows = 16384

    epochs: int
    seed: int
    class_weight: ClassWeight

    def fit(self, X: np.ndarray, y: np.ndarray) -> _StreamingHead:
        """Train on in-memory arrays. X: [N, D] float16/float32 features, y: [N] labels."""
        X, y = np.asarray(X), np.asarray(y)
        return self.fit_stream(lambda epoch: [(X, y)])

    def fit_stream(self, chunks: Chunks, *, progress: Progress | None = None) -> _StreamingHead:
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


class MLPHead(TorchModelState, _StreamingHead):
    """FCa Linear(D, hidden) -> ReLU -> Dropout -> FCb Linear(hidden, n_classes) -> softmax.

    Trained with SGD (momentum, weight decay) on the class-weighted cross-entropy, the
    learning rate decayed along a cosine over the epochs. For a given seed the result on the
    CPU is deterministic: the weights and dropout draw from a seeded torch generator that
    leaves the global one alone, and the rows of each chunk are shuffled with
    `numpy.random.default_rng(seed + epoch)`.

    device: "cpu", "cuda" or "auto" (cuda when available), for training and prediction. The
    fitted network is `model_`; a pickled head holds a CPU copy of it so that it loads anywhere.
    """

    def __init__(
        self,
        *,
        hidden: int = 2048,
        dropout: float = 0.5,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        epochs: int = 20,
        batch_size: int = 256,
        class_weight: ClassWeight = None,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        self.hidden = hidden
        self.dropout = dropout
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.batch_size = batch_size
        self.class_weight = class_weight
        self.seed = seed
        self.device = device

    def fit_stream(self, chunks: Chunks, *, progress: Progress | None = None) -> MLPHead:
        with seeded_torch(self.seed, self._device()):
            return super().fit_stream(chunks, progress=progress)

    def _device(self) -> torch.device:
        return torch_device(self.device)

    def _start(self) -> None:
        device = self._device()
        self.model_ = adaptation_layers(
            self.n_features_in_, self.hidden, self.dropout, len(self.classes_)
        ).to(device)
        self._optimizer, self._schedule = cosine_sgd(
            self.model_,
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            epochs=self.epochs,
        )
        weights = torch.as_tensor(self._class_weights(), dtype=torch.float32, device=device)
        self._criterion = torch.nn.CrossEntropyLoss(weight=weights)

    def _fit_epoch(self, batches: Iterator[tuple[np.ndarray, np.ndarray]]) -> float:
        device = self._device()
        self.model_.train()
        total, rows = 0.0, 0
        for X, y in batches:
            for start in range(0, len(y), self.batch_size):
                xb = torch.from_numpy(X[start : start + self.batch_size]).to(device)
                yb = torch.from_numpy(y[start : start + self.batch_size]).to(device)
                loss = self._criterion(self.model_(xb), yb)
                self._optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self._optimizer.step()
                total += loss.item() * len(yb)
                rows += len(yb)
        self._schedule.step()
        return total / max(rows, 1)

    def _finish(self) -> None:
        self.model_.eval()
        del self._optimizer, self._schedule, self._criterion

    @torch.inference_mode()
    def _margins(self, X: np.ndarray) -> np.ndarray:
        device = self._device()
        # Module.to moves in place and is free when the network is already there.
        return self.model_.to(device)(torch.from_numpy(X).to(device)).float().cpu().numpy()

    def _log_link(self, margins: np.ndarray) -> np.ndarray:
        return log_softmax(margins, axis=1)


class LinearSVMHead(_StreamingHead):
    """One-vs-rest linear SVM: hinge loss, L2 penalty, streamed with SGD `partial_fit`.

    alpha = 1 / (C * n_samples), the SVM's C spread over the rows counted in the statistics
    pass. `predict_proba` is the logistic sigmoid of each class's margin: a monotone map into
    (0, 1) so that the paper's p^k pooling applies, but NOT a distribution over classes (rows
    do not sum to 1) and not calibrated. `loss_curve_` is the mean one-vs-rest hinge loss
    (summed over classes, no class weights or penalty) on each chunk just after training on it.
    """

    def __init__(
        self,
        *,
        C: float = 1.0,
        epochs: int = 10,
        class_weight: ClassWeight = None,
        seed: int = 0,
    ) -> None:
        self.C = C
        self.epochs = epochs
        self.class_weight = class_weight
        self.seed = seed

    def _start(self) -> None:
        # Rows come already shuffled by `_shuffled`, so SGD's own shuffle stays off.
        self.sgd_ = SGDClassifier(
            loss="hinge",
            average=True,  # averaged SGD lands near the SVM optimum instead of oscillating around it
            penalty="l2",
            alpha=1.0 / (self.C * self.n_samples_seen_),
            shuffle=False,
            random_state=self.seed,
            class_weight=dict(enumerate(self._class_weights())),
        )

    def _fit_epoch(self, batches: Iterator[tuple[np.ndarray, np.ndarray]]) -> float:
        classes = np.arange(len(self.classes_))
        total, rows = 0.0, 0
        for X, y in batches:
            self.sgd_.partial_fit(X, y, classes=classes)
            signs = np.where(y[:, None] == classes, 1.0, -1.0)
            total += float(np.maximum(0.0, 1.0 - signs * self._margins(X)).sum())
            rows += len(y)
        return total / max(rows, 1)

    def _margins(self, X: np.ndarray) -> np.ndarray:
        margins = self.sgd_.decision_function(X)
        if margins.ndim == 1:  # two classes: SGD keeps one separator, positive = classes_[1]
            margins = np.stack([-margins, margins], axis=1)
        return margins

    def _log_link(self, margins: np.ndarray) -> np.ndarray:
        return -np.logaddexp(0.0, -margins)  # log sigmoid, exact for any margin
