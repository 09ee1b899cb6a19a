"""`pipeline serve`: which model folder, where to listen, and the limits."""

from __future__ import annotations

import importlib.util

import click

from pipeline.cli.errors import UserError
from pipeline.config import ServeConfig

# module -> package: the web stack, an extra (the rest of midlevel runs without it);
# python-multipart is imported by starlette only when a form arrives, so it is looked for here
NEEDS = {"fastapi": "fastapi", "uvicorn": "uvicorn", "python_multipart": "python-multipart"}


@click.command("serve")
@click.argument("model", metavar="DIR")
@click.option(
    "--host", default=ServeConfig.host, show_default=True,
    help="Interface to listen on (0.0.0.0: every interface).",
)  # fmt: skip
@click.option(
    "--port", type=int, default=ServeConfig.port, show_default=True,
    help="0: any free port (the printed line names it).",
)  # fmt: skip
@click.option(
    "--max-upload-mb", type=float, default=ServeConfig.max_upload_mb, show_default=True,
    help="Larger uploads are refused (413) before or while they are read.",
)  # fmt: skip
@click.option(
    "--workers-threads", "threads", type=int, default=None,
    help="Predictions run at once, sharing the cores [default: 2, or 1 on one core].",
)  # fmt: skip
@click.option(
    "--max-pending", type=int, default=ServeConfig.max_pending, show_default=True,
    help="Requests with their photo in, running or waiting; more are refused (503).",
)  # fmt: skip
@click.option(
    "--body-timeout", type=float, default=ServeConfig.body_timeout, show_default=True,
    help="Seconds a photo may take to arrive after its request's headers; then 408.",
)  # fmt: skip
@click.option(
    "--example", type=click.Path(exists=True, dir_okay=False), default=None,
    help="A photo the page offers to try (served at /example).",
)  # fmt: skip
@click.option(
    "--cache-dir", envvar="MIDLEVEL_CACHE_DIR", default=ServeConfig.cache_dir, show_default=True,
    help="Where a head given by name is found.",
)  # fmt: skip
def command(model, **opts) -> None:
    """An exported model folder (pipeline export) behind HTTP: a page, /predict, /health.

    DIR may also be a head (its file, or its name in --cache-dir): it is exported once into
    <head>-model/ beside the head file.
    """
    missing = [name for module, name in NEEDS.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise UserError(f"pipeline serve needs {', '.join(missing)}: pip install 'midlevel[serve]'")
    from stages import serve as stage

    stage.run(ServeConfig(model=model, **opts), ready=click.echo)
