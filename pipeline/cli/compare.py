"""`pipeline compare`: the paper's comparison, with a config file per method if wished."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.errors import UserError
from pipeline.cli.options import config_file, dataset, features, fit_config, head
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
@click.option("--method-config", "method_configs", multiple=True,
              help="METHOD=FILE: head settings of one method (whole-svm, patches-svm, patches-mlp, patches-weak) "
              "from a config file such as a sweep's best; repeatable.")  # fmt: skip
def command(test_split, output, method_configs, **opts) -> None:
    """Whole-image SVM vs patches + SVM vs patches + MLP (the paper's comparison) vs the weak
    head (patches, image labels only), one report.

    Extract --grid whole and the patch grid of both splits first; --head is ignored.
    """
    from pipeline.training.settings import read_head_setting
    from stages import compare as stage

    methods = [name for name, _, _ in stage.METHODS]
    settings = {}
    for text in method_configs:
        method, _, path = text.partition("=")
        if method not in methods or not path:
            raise UserError(
                f"--method-config {text!r}: write METHOD=FILE, METHOD one of {', '.join(methods)}"
            )
        if not Path(path).is_file():
            raise UserError(f"{path}: config file not found; pass an existing file")
        settings[method] = read_head_setting(Path(path))
    config = CompareConfig(fit_config(opts), test_split, output, settings)
    click.echo(stage.run(config).line())
