"""`pipeline compare`: the paper's comparison, with a config file per method if wished."""

from __future__ import annotations

import click

from pipeline.cli.options import (
    config_file,
    dataset,
    features,
    fit_config,
    head,
    method_config,
    method_settings,
)
from pipeline.config import CompareConfig


@click.command("compare")
@config_file
@dataset
@features
@head
@click.option("--test-split", default=CompareConfig.test_split, help="Split to score.")
@click.option(
    "--output", default=CompareConfig.output, help="Directory for the runs and the report."
)
@method_config
def command(test_split, output, method_configs, **opts) -> None:
    """Whole-image SVM vs patches + SVM vs patches + MLP (the paper's comparison) vs the weak
    head (patches, image labels only), one report.

    Extract --grid whole and the patch grid of both splits first; --head is ignored.
    """
    from stages import compare as stage

    settings = method_settings(method_configs)
    config = CompareConfig(
        base=fit_config(opts), test_split=test_split, output=output, method_settings=settings
    )
    click.echo(stage.run(config).line())
