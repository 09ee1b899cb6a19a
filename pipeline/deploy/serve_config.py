"""`pipeline serve`'s settings, light to import (the CLI reads its defaults here without
loading the web framework); what each means: docs/serve.md."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import ConfigError


@dataclass(frozen=True)
class ServeConfig:
    """An exported model folder behind HTTP on host:port (port 0: any free port)."""

    model: str  # the folder `pipeline export` wrote, or a head (file, or name in cache_dir)
    host: str = "127.0.0.1"  # this machine only; 0.0.0.0 serves every interface
    port: int = 8000
    # A 12-megapixel phone JPEG is 3-8 MB; 20 MB leaves room for PNGs without letting one
    # client hold much memory (max_pending uploads at most are held at once).
    max_upload_mb: float = 20.0
    threads: int | None = None  # predictions at once [default: server.split_threads]
    max_pending: int = 64  # requests running or waiting; more get 503 before being read
    example: str | None = None  # a photo the page offers to try, served at /example
    cache_dir: str = "cache"  # where a head given by name is found

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise ConfigError("port", self.port, "must be in 0..65535 (0: any free port)")
        if not self.max_upload_mb > 0:
            raise ConfigError("max_upload_mb", self.max_upload_mb, "must be above 0")
        if self.threads is not None and self.threads < 1:
            raise ConfigError("threads", self.threads, "must be at least 1")
        if self.max_pending < 1:
            raise ConfigError("max_pending", self.max_pending, "must be at least 1")
