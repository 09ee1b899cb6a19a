"""`pipeline label-studio`: where Label Studio is, where to listen, and the backend's settings."""

from __future__ import annotations

import importlib.util

import click

from pipeline.cli.errors import UserError
from pipeline.cli.options import build, compute, features
from pipeline.config import STRATEGIES, ExtractConfig, LabelStudioConfig

# module -> package: the web stack and Label Studio's SDK, extras (pip install 'midlevel[label-studio]')
NEEDS = {"fastapi": "fastapi", "uvicorn": "uvicorn", "label_studio_sdk": "label-studio-sdk"}
SERVER_OPTIONS = ("label_studio", "api_key", "host", "port", "workdir", "threshold", "strategy",
                  "predict_wait", "basic_auth", "max_upload_mb", "body_timeout")  # fmt: skip


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
@click.option(
    "--host",
    default=LabelStudioConfig.host,
    show_default=True,
    help="Interface to listen on (0.0.0.0: every interface).",
)
@click.option(
    "--port",
    type=int,
    default=LabelStudioConfig.port,
    show_default=True,
    help="0: any free port (the printed line names it).",
)
@click.option(
    "--workdir",
    default=LabelStudioConfig.workdir,
    show_default=True,
    help="Each project's export, images, feature cache and heads, under project-<id>/.",
)
@click.option(
    "--threshold",
    type=float,
    default=LabelStudioConfig.threshold,
    show_default=True,
    help="A class is pre-labelled where the head scores it this or more.",
)
@click.option(
    "--strategy",
    type=click.Choice(STRATEGIES),
    default=LabelStudioConfig.strategy,
    show_default=True,
    help="The labelling priority each task's score gives (suggest's).",
)
@click.option(
    "--predict-wait",
    type=float,
    default=LabelStudioConfig.predict_wait,
    show_default=True,
    help="Seconds /predict waits for tasks not extracted yet.",
)
@click.option(
    "--basic-auth",
    envvar="MIDLEVEL_BASIC_AUTH",
    default=None,
    help="user:password Label Studio must send (Settings -> Model). Env: MIDLEVEL_BASIC_AUTH.",
)
@click.option(
    "--max-upload-mb",
    type=float,
    default=LabelStudioConfig.max_upload_mb,
    show_default=True,
    help="Larger request bodies and images are refused.",
)
@click.option(
    "--body-timeout",
    type=float,
    default=LabelStudioConfig.body_timeout,
    show_default=True,
    help="Seconds a request body may take to arrive; then 408.",
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

    server = {name: opts.pop(name) for name in SERVER_OPTIONS}
    if opts.pop("keep") != "auto":  # every patch is kept: annotations relabel, never re-extract
        raise UserError("--keep: the backend keeps every patch of a task; leave it out")
    stage.run(LabelStudioConfig(**server, features=build(ExtractConfig(), opts)), ready=click.echo)
