"""What the torch heads share: the paper's adaptation layers (FCa, FCb), cosine SGD, seeded
draws, standardised rows and a pickle that loads on any machine."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted


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

    # Rows per forward pass at prediction time: with 1280-d features and 2048 hidden units
    # this keeps a pass near 250 MB whatever the size of X.
    _predict_rows = 16384

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
    """A head whose network `model_` is the adaptation layers: a pickle of it holds a CPU copy
    (it loads anywhere), and a head file's arrays rebuild it (pipeline/heads/state.py)."""

    hidden: int
    dropout: float

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        if "model_" in state:
            state["model_"] = copy.deepcopy(state["model_"]).cpu()
        return state

    def restore_network(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        """The network `name` rebuilt from its weights (strictly: a mismatch raises)."""
        model = adaptation_layers(
            self.n_features_in_, self.hidden, self.dropout, len(self.classes_)
        )
        model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
        setattr(self, name, model.eval())

    def dense_layers(self) -> dict:
        """The head as its standardisation and dense layers, ReLU between them (an export's
        graph: pipeline/features/graphs.py); `link` maps the last layer's margins."""
        linear = [m for m in self.model_ if isinstance(m, torch.nn.Linear)]
        layers = [(m.weight.detach().cpu().numpy(), m.bias.detach().cpu().numpy()) for m in linear]
        return {"mean": self.mean_, "scale": self.scale_, "layers": layers, "link": self.link}
