"""`pipeline serve`: an exported model folder behind HTTP until Ctrl-C. What only the verb
does: export a head given instead of a folder (once), load the model, build the app
(pipeline/deploy/server.py), bind the port (a port in use is one line, not a traceback),
say the URL, and run uvicorn."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import uvicorn

from pipeline.config import ExportConfig, ServeConfig
from pipeline.deploy.bundle import FIX, MANIFEST, is_model_folder, read_manifest, sha256
from pipeline.deploy.listening import bind
from pipeline.deploy.runtime import Model
from pipeline.deploy.server import create_app, split_threads
from pipeline.errors import CacheError
from pipeline.io import TEMPORARY
from pipeline.words import plural


def run(config: ServeConfig, *, ready: Callable[[str], None] = print) -> None:
    """Serve `config.model` until interrupted; `ready` gets one line with the URL once the
    port is bound (with port 0 it names the port the system chose)."""
    folder = _model_folder(config, ready)
    threads, onnx_threads = split_threads(config.threads)
    model = Model.load(folder, threads=onnx_threads)
    example = Path(config.example) if config.example else None
    app = create_app(
        model, max_upload_mb=config.max_upload_mb, threads=threads,
        max_pending=config.max_pending, example=example, body_timeout_s=config.body_timeout,
    )  # fmt: skip
    listening = bind(config.host, config.port)
    host, port = listening.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    ready(
        f"serve: {folder} ({len(model.classes)} classes, {model.mode} mode, "
        f"{model.info.get('precision')}) at http://{shown}:{port}/ ({threads} threads x "
        f"{onnx_threads} ONNX Runtime threads; Ctrl-C stops)"
    )
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn stops, then raises Ctrl-C again
        server.run(sockets=[listening])
    served = app.state.counts["predictions"]
    ready(f"serve: stopped after {plural(served, 'prediction')}")


def _model_folder(config: ServeConfig, ready: Callable[[str], None]) -> Path:
    """The folder to serve: `config.model` when it is a folder (Model.load says what is
    wrong with one `pipeline export` did not write), else a head (its file, or its name in
    config.cache_dir) exported once into <head>-model/ beside its file, and reused while it
    loads and its model.json records the head's SHA-256. That folder is derived from the
    head: a damaged one is exported again, with a line saying why."""
    given = Path(config.model)
    if given.is_dir():
        return given
    from pipeline.store.head_files import find_head  # h5py: only to serve a head

    head = find_head(config.model, config.cache_dir)
    folder = head.with_name(f"{head.name.split('.')[0]}-model")  # heads/mlp-model/
    if is_model_folder(folder):
        try:
            if read_manifest(folder)["head"]["sha256"] == sha256(head):
                return folder
        except CacheError as exc:
            ready(f"{str(exc).removesuffix(f'; {FIX}')}; exporting the head again")
    elif folder.is_dir() and any(folder.iterdir()):
        _clear_cut_short(folder)
        ready(f"{folder}: an export cut short (no {MANIFEST}); exporting the head again")
    from pipeline.deploy.export import export_head  # torch: only to export

    exported = export_head(ExportConfig(head=str(head), output=str(folder)))
    ready(f"export: {exported.head} ({exported.mode} mode, {exported.precision}) -> {folder}/")
    return folder


def _clear_cut_short(folder: Path) -> None:
    """Empty <head>-model/ of what an export cut short leaves (its graphs, a file in flight);
    a folder holding anything else is not midlevel's to empty: one line naming it."""
    files = list(folder.iterdir())
    foreign = [
        p.name for p in files if not (p.is_file() and p.suffix == ".onnx" or TEMPORARY in p.name)
    ]
    if foreign:
        raise CacheError(
            f"{folder}: not a model folder and it holds {', '.join(sorted(foreign)[:3])}; move "
            "them away (serve exports the head there) or serve an exported folder"
        )
    for path in files:
        path.unlink()
