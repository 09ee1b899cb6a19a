"""`pipeline`: the command line. Each verb's module parses its options into a config and
runs its stage; only click and the settings load here, so that `--help` and a refusal
answer at once (torch loads in the verbs that run a net)."""

from __future__ import annotations

import click

from pipeline.cli import (
    compare,
    curve,
    demo,
    export,
    extract,
    fit,
    label_studio,
    localize,
    predict,
    report,
    score,
    serve,
    suggest,
    sweep,
)
from pipeline.cli.errors import Cli


@click.group(
    cls=Cli, context_settings={"help_option_names": ["-h", "--help"], "show_default": True}
)
def cli() -> None:
    """midlevel: frozen-CNN patch features, cached once, transferred to new tasks.

    Typical run: extract --split trainval, extract --split test, fit --head mlp, score.
    """


for verb in (
    demo,
    extract,
    fit,
    sweep,
    curve,
    suggest,
    score,
    compare,
    localize,
    report,
    predict,
    export,
    serve,
    label_studio,
):
    cli.add_command(verb.command)


def main() -> None:
    cli(prog_name="pipeline")
