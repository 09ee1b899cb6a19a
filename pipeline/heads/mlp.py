"""The paper's adaptation layers as a head (Oquab et al., CVPR 2014, section 3.2): FCa (2048
units, ReLU, dropout 0.5) and FCb (one output per class plus background, softmax), trained by
SGD on the cached patch features. Its optimiser settings (lr 0.01, momentum 0.9, weight
decay 1e-4, cosine decay) are common SGD defaults, not values from the paper."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from scipy.special import log_softmax

from pipeline.heads import defaults
from pipeline.heads.device import resolve_device
from pipeline.heads.layers import TorchModelState, adaptation_layers, cosine_sgd, seeded_torch
from pipeline.heads.streaming import Chunks, ClassWeight, Progress, StreamingHead


class MLPHead(TorchModelState, StreamingHead):
    """FCa Linear(D, hidden) -> ReLU -> Dropout -> FCb Linear(hidden, n_classes) -> softmax,
    trained by SGD on the class-weighted cross-entropy with a cosine learning rate. Seeded
    draws that leave the global generator alone make a CPU fit deterministic; a pickled head
    holds a CPU copy of `model_`, so it loads anywhere. device: cpu, cuda or auto."""

    link = "softmax"  # margins -> class probabilities (an export's model.json says it)

    def __init__(
        self,
        *,
        hidden: int = defaults.HIDDEN,
        dropout: float = defaults.DROPOUT,
        lr: float = defaults.LR,
        momentum: float = defaults.MOMENTUM,
        weight_decay: float = defaults.WEIGHT_DECAY,
        epochs: int = defaults.EPOCHS,
        batch_size: int = defaults.BATCH_SIZE,
        class_weight: ClassWeight = None,
        seed: int = defaults.SEED,
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
        return resolve_device(self.device)

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
