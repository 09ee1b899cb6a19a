"""midlevel: frozen-CNN mid-level patch features, cached, transferred to new recognition tasks."""

__version__ = "0.1.0"
