"""`pipeline label-studio`: midlevel as a Label Studio ML backend until Ctrl-C. What only the
verb does: connect to Label Studio, start the worker, build the app
(pipeline/labelling/app.py), bind the port, say the URL to paste in Settings -> Model, and
run uvicorn; on the way out, the worker finishes its refresh."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import uvicorn

from pipeline.config import LabelStudioConfig
from pipeline.deploy.listening import bind
from pipeline.labelling.app import create_app
from pipeline.labelling.project import ProjectSettings
from pipeline.labelling.remote import LabelStudioRemote
from pipeline.labelling.service import Backend


def run(config: LabelStudioConfig, *, ready: Callable[[str], None] = print) -> None:
    """Serve Label Studio until interrupted; `ready` gets the URL line once bound."""
    _log_to_stderr()
    remote = LabelStudioRemote(
        config.label_studio, config.api_key, max_image_bytes=round(config.max_upload_mb * 2**20)
    )
    settings = ProjectSettings(
        workdir=Path(config.workdir), features=replace(config.features),
        threshold=config.threshold, strategy=config.strategy,
    )  # fmt: skip
    backend = Backend(settings, remote, predict_wait=config.predict_wait)
    app = create_app(
        backend, basic_auth=config.basic_auth, max_body_mb=config.max_upload_mb,
        body_timeout_s=config.body_timeout,
    )  # fmt: skip
    listening = bind(config.host, config.port)
    host, port = listening.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    backend.start()
    ready(
        f"label-studio: ML backend for {config.label_studio} at http://{shown}:{port}/ (paste it "
        f"in the project's Settings -> Model; files under {config.workdir}/; Ctrl-C stops)"
    )
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    try:
        with contextlib.suppress(KeyboardInterrupt):
            server.run(sockets=[listening])
    finally:
        backend.stop()
    ready(f"label-studio: stopped; {_served(backend)}")


def _served(backend: Backend) -> str:
    versions = [f"project {p}: {s['model_version']}" for p, s in backend.health().items()]
    return ", ".join(versions) or "no project was set up"


def _log_to_stderr() -> None:
    """The backend's log lines (refreshes, refusals) on stderr, one per event."""
    logger = logging.getLogger("midlevel.label_studio")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s label-studio: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
