"""`pipeline score`: which head scores which split, and where the tables go."""

from __future__ import annotations

import click

from pipeline.cli.options import build, config_file, dataset, dataset_of, features, scored_split
from pipeline.config import ScoreConfig


@click.command("score")
@config_file
@dataset
@features
@scored_split
@click.option(
    "-k",
    "--k",
    "k",
    type=float,
    default=None,
    help="Pooling exponent: mean of p^k [default: the head's, 5 unless fit set it].",
)
@click.option("--output", default=ScoreConfig.output, help="Per-class AP table (CSV).")
@click.option(
    "--scores-output", default=None, help="Per-image scores CSV [default: <output>-scores.csv]."
)
@click.option(
    "--export",
    type=click.Path(file_okay=False),
    default=None,
    help="Write the VOC evaluation server's comp1_cls_<split>_<class>.txt files under DIR/results/.",
)
def command(**opts) -> None:
    """Pool patch scores per image and write per-class AP (VOC07 11-point and area)."""
    from stages import score as stage

    summary = stage.run(build(ScoreConfig(), dataset_of(opts)))
    for text, colour in summary.notes():
        if colour is None:
            click.echo(text)
        else:
            click.secho(text, fg=colour, err=True)
    click.echo(summary.line())
