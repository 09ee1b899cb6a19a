"""`pipeline report`: which runs, named how, drawn from which dataset."""

from __future__ import annotations

import click

from pipeline.cli.options import data_spec
from pipeline.config import ReportConfig


@click.command("report")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--output", default=ReportConfig.output, help="Directory for the figures and results.md."
)
@click.option("--names", default=None, help="Comma-separated run names [default: from each run].")
@click.option(
    "--data",
    envvar="MIDLEVEL_DATA",
    default=None,
    help="Dataset of the contact sheets' images [default: the one each run recorded].",
)
@click.option("--voc-root", default=None, help="A VOC tree: --data voc:DIR.")
@click.option(
    "--top",
    type=int,
    default=ReportConfig.top,
    help="Images per end of each ranking in the contact sheets.",
)
def command(runs, output, names, top, **opts) -> None:
    """Figures and a paper-ready table from scored runs (the ap.csv files of pipeline score)."""
    from stages import report as stage

    names = tuple(n.strip() for n in names.split(",")) if names else None
    config = ReportConfig(
        runs=tuple(runs), output=output, names=names, data=data_spec(opts) or None, top=top
    )
    click.echo(stage.run(config).line())
