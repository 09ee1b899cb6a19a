"""`pipeline serve`: an exported model folder behind HTTP until Ctrl-C. What only the verb
does: load the model, build the app (pipeline/deploy/server.py), bind the port (a port in
use is one line, not a traceback), say the URL, and run uvicorn."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from pathlib import Path

import uvicorn

from pipeline.deploy.runtime import Model
from pipeline.deploy.serve_config import ServeConfig
from pipeline.deploy.server import create_app, split_threads
from pipeline.errors import ConfigError


def run(config: ServeConfig, *, ready: Callable[[str], None] = print) -> None:
    """Serve `config.model` until interrupted; `ready` gets one line with the URL once the
    port is bound (with port 0 it names the port the system chose)."""
    threads, onnx_threads = split_threads(config.threads)
    model = Model.load(config.model, threads=onnx_threads)
    example = Path(config.example) if config.example else None
    app = create_app(
        model, max_upload_mb=config.max_upload_mb, threads=threads,
        max_pending=config.max_pending, example=example,
    )  # fmt: skip
    listening = _bind(config.host, config.port)
    host, port = listening.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    ready(
        f"serve: {config.model} ({len(model.classes)} classes, {model.mode} mode, "
        f"{model.info.get('precision')}) at http://{shown}:{port}/ ({threads} threads x "
        f"{onnx_threads} ONNX Runtime threads; Ctrl-C stops)"
    )
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn stops, then raises Ctrl-C again
        server.run(sockets=[listening])
    ready(f"serve: stopped after {app.state.counts['predictions']} predictions")


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or the reason in one line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
    except OSError as exc:
        listening.close()
        raise ConfigError(
            "port", port, f"cannot listen on {host} ({exc.strerror}); pick another {{port}}"
        ) from None
    listening.listen(2048)
    listening.set_inheritable(True)
    return listening
