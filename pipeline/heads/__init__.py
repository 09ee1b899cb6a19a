"""Stage two's estimators, trained on cached features (scikit-learn contract: settings in
`__init__`, `fit`, learned attributes ending in `_`); they import nothing else of pipeline
but its errors. The classes load on first use, so that the pooling names need no torch."""

from __future__ import annotations

import importlib

# Every class a head file may name: the heads, and the scikit-learn parts they hold.
CLASSES = {
    "MLPHead": "pipeline.heads.mlp",
    "LinearSVMHead": "pipeline.heads.linear_svm",
    "ImageSVMHead": "pipeline.heads.image_svm",
    "WeakPatchHead": "pipeline.heads.weak",
    "SGDClassifier": "sklearn.linear_model",
    "StandardScaler": "sklearn.preprocessing",
}
__all__ = [name for name, module in CLASSES.items() if module.startswith("pipeline.")]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module(CLASSES[name]), name)
    raise AttributeError(f"module 'pipeline.heads' has no attribute {name!r}")
