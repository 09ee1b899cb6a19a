"""`pipeline label-studio`: where Label Studio is, where to listen, and the backend's settings."""

from __future__ import annotations

import importlib.util

import click

from pipeline.cli.errors import UserError
from pipeline.cli.options import build, compute, features, options, setting_option
from pipeline.config import ExtractConfig, LabelStudioConfig

# module -> package: the web stack and Label Studio's SDK, extras (pip install 'midlevel[label-studio]')
NEEDS = {"fastapi": "fastapi", "uvicorn": "uvicorn", "label_studio_sdk": "label-studio-sdk"}
SERVER_SETTINGS = ("host", "port", "workdir", "threshold", "strategy", "predict_wait", "basic_auth",
                   "max_upload_mb", "body_timeout")  # fmt: skip
ENV = {"basic_auth": {"envvar": "MIDLEVEL_BASIC_AUTH"}}


@click.command("label-studio")
@click.option(
    "--label-studio",
    "label_studio",
    envvar="LABEL_STUDIO_URL",
    required=True,
    help="Label Studio's URL, e.g. http://localhost:8080. Env: LABEL_STUDIO_URL.",
)
@click.option(
    "--api-key",
    envvar="LABEL_STUDIO_API_KEY",
    required=True,
    help="Its API token (Account & Settings). Env: LABEL_STUDIO_API_KEY.",
)
@options(
    *(setting_option(LabelStudioConfig, name, **ENV.get(name, {})) for name in SERVER_SETTINGS)
)
@features
@compute
def command(**opts) -> None:
    """midlevel as a Label Studio ML backend: pre-labels, a labelling priority, retraining.

    Connect it in the project's Settings -> Model. Each task's image is extracted once; each
    annotation event refits the head from the cache (docs/label-studio.md).
    """
    missing = [name for module, name in NEEDS.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise UserError(
            f"pipeline label-studio needs {', '.join(missing)}: pip install 'midlevel[label-studio]'"
        )
    from stages import label_studio as stage

    server = {name: opts.pop(name) for name in ("label_studio", "api_key", *SERVER_SETTINGS)}
    if opts.pop("keep") != "auto":  # every patch is kept: annotations relabel, never re-extract
        raise UserError("--keep: the backend keeps every patch of a task; leave it out")
    stage.run(LabelStudioConfig(**server, features=build(ExtractConfig(), opts)), ready=click.echo)
