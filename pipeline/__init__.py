"""midlevel: frozen-CNN mid-level patch features, cached, transferred to new recognition tasks.

The Python API for new photos (see README, "Predictions on new photos"):

    from pipeline import load_head

    head = load_head("cache/trainval-1a2b3c4d5e6f/heads/mlp.joblib")
    head.predict("photo.jpg")      # {"cat": 0.93, "dog": 0.02, ...}
    head.score_maps("photo.jpg")   # {"cat": [h, w] map, ...}
"""

__version__ = "0.3.0"


def load_head(head, *, cache_dir="cache", device="auto", weights=None, runtime="auto"):
    """A fitted head ready to predict (pipeline/predict.py): a heads/<name>.joblib file, or
    the name of the one head of that name in `cache_dir`."""
    from pipeline.predict import load_head as load

    return load(head, cache_dir=cache_dir, device=device, weights=weights, runtime=runtime)
