"""`pipeline localize`: which head maps which split, and how the maps are drawn."""

from __future__ import annotations

import click

from pipeline.cli.options import build, dataset, dataset_of, features, scored_split
from pipeline.config import REDUCES, LocalizeConfig


@click.command("localize")
@dataset
@features
@scored_split
@click.option(
    "--output", default=LocalizeConfig.output, help="Directory: maps.h5, overlays/, pointing.csv."
)
@click.option(
    "--reduce",
    type=click.Choice(REDUCES),
    default=LocalizeConfig.reduce,
    help="How the patches covering a pixel combine into its score.",
)
@click.option("--top", type=int, default=LocalizeConfig.top, help="Classes overlaid per image.")
@click.option(
    "--overlays",
    type=int,
    default=LocalizeConfig.overlays,
    help="Overlay PNGs to write (first N images; 0: none).",
)
def command(**opts) -> None:
    """Per-class score maps from the patch scores, overlays, and pointing accuracy."""
    from stages import localize as stage

    config = build(LocalizeConfig(), dataset_of(opts, required=True))
    click.echo(stage.run(config).line())
