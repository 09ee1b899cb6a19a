"""`pipeline export`: which head, where its model folder goes, at which precision."""

from __future__ import annotations

import click

from pipeline.cli.options import trust_pickled_head
from pipeline.config import PRECISIONS, ExportConfig


@click.command("export")
@click.option(
    "--head",
    required=True,
    help="A head FILE (cache/<split>-<digest>-<tag>/heads/mlp.safetensors) or the name of a head in --cache-dir.",
)
@click.option(
    "--output",
    default=ExportConfig.output,
    show_default=True,
    type=click.Path(file_okay=False),
    help="The model folder: its ONNX graphs and model.json.",
)
@click.option(
    "--cache-dir",
    envvar="MIDLEVEL_CACHE_DIR",
    default=ExportConfig.cache_dir,
    show_default=True,
    help="Where named heads are found.",
)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default=None,
    help="The frozen net's numbers: int8 is static quantization, calibrated on the head's "
    "training images (docs/deploy.md#int8) [default: that of the head's features].",
)
@click.option("--weights", default=None, help="A local copy of the head's backbone weights FILE.")
@trust_pickled_head
def command(**opts) -> None:
    """A fitted head and its net as ONNX graphs and model.json: predicts without torch."""
    from stages import export as stage

    click.echo(stage.run(ExportConfig(**opts)).line())
