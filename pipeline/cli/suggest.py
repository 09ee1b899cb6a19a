"""`pipeline suggest`: which images of a pool split to label next."""

from __future__ import annotations

import click

from pipeline.cli.options import build, dataset, dataset_of, features, scored_split
from pipeline.config import STRATEGIES, SuggestConfig


@click.command("suggest")
@dataset
@features
@scored_split
@click.option(
    "--strategy",
    type=click.Choice(STRATEGIES),
    default=SuggestConfig.strategy,
    help="typical (the densest image of each k-means cluster with the fewest labels; needs no head; ahead of random at every budget of the real simulation, docs/labels.md), auto (typical until every class has 5 labelled positives, then balanced), balanced (classes in turn, fewest labels first: nearest their boundary, or likeliest positives of a class short of labels), diversity (k-center over image features), uncertainty (the head's least sure images), combined (diverse among the uncertain).",
)
@click.option(
    "--batch",
    type=int,
    default=SuggestConfig.batch,
    help="Images to suggest, none a near-duplicate of another.",
)
@click.option("--output", default=SuggestConfig.output, help="The suggestions, ranked (CSV).")
@click.option("--sheet", default=None, help="Their contact sheet [default: <output stem>.png].")
def command(**opts) -> None:
    """Rank the images of --split (a pool, its features extracted) for labelling next, for a
    head fitted on --train-split; uses no label of the pool. No labels yet: --head none picks
    the first batch."""
    from stages import suggest as stage

    config = build(SuggestConfig(), dataset_of(opts))
    click.echo(stage.run(config).line())
