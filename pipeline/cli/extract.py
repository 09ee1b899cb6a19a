"""`pipeline extract`: stage one's options."""

from __future__ import annotations

import click

from pipeline.cli.options import build, compute, dataset, dataset_of, features
from pipeline.config import ON_ERROR, ExtractConfig


@click.command("extract")
@dataset
@features
@click.option(
    "--split", default=ExtractConfig.split, help="ImageSets/Main split: train, val, trainval, test."
)
@compute
@click.option(
    "--images-per-shard",
    type=int,
    default=ExtractConfig.images_per_shard,
    help="Images per HDF5 shard.",
)
@click.option("--limit", type=int, default=None, help="Only the first N images of the split.")
@click.option(
    "--overwrite", is_flag=True, help="Rebuild the cache for these settings from scratch."
)
@click.option(
    "--on-error",
    type=click.Choice(ON_ERROR),
    default=ExtractConfig.on_error,
    show_default=True,
    help="A bad image (unreadable JPEG, bad XML...) stops the run, or is skipped: logged, "
    "listed in its shard's 'skipped' attribute and counted in the summary.",
)
def command(**opts) -> None:
    """Stage one: run the frozen backbone over every patch; write HDF5 shards."""
    from pipeline.features.ranks import from_environment
    from stages import extract as stage

    opts = dataset_of(opts, required=True)
    opts.pop("classes")
    summary = stage.run(build(ExtractConfig(), opts))
    if from_environment().main:  # under torchrun, one summary for the run
        click.echo(summary.line())
