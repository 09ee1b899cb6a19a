"""The frozen-feature baseline on patches: a one-vs-rest linear SVM, streamed by SGD."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from sklearn.linear_model import SGDClassifier

from pipeline.heads import defaults
from pipeline.heads.streaming import ClassWeight, StreamingHead


class LinearSVMHead(StreamingHead):
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
        C: float = defaults.SVM_C,
        epochs: int = defaults.SVM_EPOCHS,
        class_weight: ClassWeight = None,
        seed: int = defaults.SEED,
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

    link = "sigmoid"  # margins -> p (an export's model.json says it)

    def dense_layers(self) -> dict:
        """The head as its standardisation and one dense layer (an export's graph); two
        classes as two opposite margins, as `_margins` gives them."""
        coef, intercept = self.sgd_.coef_, self.sgd_.intercept_
        if coef.shape[0] == 1:
            coef, intercept = np.concatenate([-coef, coef]), np.concatenate([-intercept, intercept])
        return {"mean": self.mean_, "scale": self.scale_, "layers": [(coef, intercept)],
                "link": self.link}  # fmt: skip

    def _log_link(self, margins: np.ndarray) -> np.ndarray:
        return -np.logaddexp(0.0, -margins)  # log sigmoid, exact for any margin
