"""Stage two's estimators, trained on cached features (scikit-learn contract: settings in
`__init__`, `fit`, learned attributes ending in `_`); they import nothing else of pipeline
but its errors. The classes load on first use, so that the pooling names need no torch."""

from __future__ import annotations

import importlib

_MODULES = {
    "MLPHead": "pipeline.heads.mlp",
    "LinearSVMHead": "pipeline.heads.linear_svm",
    "ImageSVMHead": "pipeline.heads.image_svm",
    "WeakPatchHead": "pipeline.heads.weak",
}

__all__ = list(_MODULES)


def __getattr__(name: str):
    if name in _MODULES:
        return getattr(importlib.import_module(_MODULES[name]), name)
    raise AttributeError(f"module 'pipeline.heads' has no attribute {name!r}")
