"""The whole-image baseline head (DeCAF; Razavian et al. 2014): one liblinear SVM per class on
one feature per image, trained on the image labels (difficult images left out of a class)."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from sklearn.utils.validation import check_is_fitted

from pipeline.heads import defaults


class ImageSVMHead(ClassifierMixin, BaseEstimator):
    """fit(X [N, D], Y [N, C] in {1, -1, 0}); predict_log_proba gives log sigmoid(margin)."""

    def __init__(self, C: float = defaults.SVM_C, seed: int = defaults.SEED):
        self.C = C
        self.seed = seed

    def fit(self, X: np.ndarray, Y: np.ndarray) -> ImageSVMHead:
        X, Y = np.asarray(X, dtype=np.float32), np.asarray(Y)
        if X.ndim != 2 or Y.ndim != 2 or len(X) != len(Y):
            raise ValueError(f"X must be [N, D] and Y [N, C]; got {X.shape} and {Y.shape}")
        self.scaler_ = StandardScaler().fit(X)
        X = self.scaler_.transform(X)
        self.coef_ = np.zeros((Y.shape[1], X.shape[1]), dtype=np.float32)
        self.intercept_ = np.zeros(Y.shape[1], dtype=np.float32)
        for c in range(Y.shape[1]):
            rows = Y[:, c] != 0
            if len(np.unique(Y[rows, c])) < 2:
                raise ValueError(f"class column {c} needs positive and negative images")
            svm = LinearSVC(C=self.C, random_state=self.seed, max_iter=20_000)
            svm.fit(X[rows], Y[rows, c] > 0)
            self.coef_[c], self.intercept_[c] = svm.coef_[0], svm.intercept_[0]
        self.classes_ = np.arange(Y.shape[1])
        self.n_features_in_ = X.shape[1]
        self.n_samples_seen_ = len(X)
        self.loss_curve_: list[float] = []
        return self

    link = "sigmoid"  # margins -> p (an export's model.json says it)

    def dense_layers(self) -> dict:
        """The head as its standardisation and one dense layer (an export's graph)."""
        scaler = self.scaler_
        return {"mean": scaler.mean_, "scale": scaler.scale_,
                "layers": [(self.coef_, self.intercept_)], "link": self.link}  # fmt: skip

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "coef_")
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has shape {X.shape}; this head was fitted on {self.n_features_in_} features"
            )
        return self.scaler_.transform(X) @ self.coef_.T + self.intercept_

    def predict_log_proba(self, X: np.ndarray) -> np.ndarray:
        """[N, C] float64 log sigmoid of the margins: finite for any margin (see streaming.py)."""
        return -np.logaddexp(0.0, -self.decision_function(X).astype(np.float64))
