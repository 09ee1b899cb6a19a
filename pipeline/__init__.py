"""midlevel: frozen-CNN mid-level patch features, cached, transferred to new recognition tasks.

The public API (docs/predict.md): `load_head` (a fitted head ready to predict on new
photos), `open_dataset` (a dataset by KIND:PATH) and `__version__`. Both load on first
use, so that `import pipeline` stays light for the command line.
"""

__version__ = "0.4.0"
__all__ = ["__version__", "load_head", "open_dataset"]


def __getattr__(name: str):
    if name == "load_head":
        from pipeline.predict import load_head

        return load_head
    if name == "open_dataset":
        from pipeline.datasets import open_dataset

        return open_dataset
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
