"""`pipeline sweep`: head settings from --param and --file, scored by cross-validation."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.errors import UserError
from pipeline.cli.options import dataset, features, fit_config, head
from pipeline.config import SweepConfig

FILE_OPTIONS = ("folds", "jobs")  # top-level keys of a sweep file besides [grid], [[settings]]


@click.command("sweep")
@dataset
@features
@head
@click.option(
    "--param",
    "params",
    multiple=True,
    help="NAME=V1,V2,... to sweep (repeatable; all combinations), e.g. dropout=0.3,0.5.",
)
@click.option(
    "--file",
    "sweep_file",
    type=click.Path(exists=True, dir_okay=False),
    help="TOML sweep file: a [grid] of lists and/or [[settings]] tables.",
)
@click.option(
    "--folds", type=int, default=SweepConfig.folds, help="Cross-validation folds (by image)."
)
@click.option(
    "--jobs", type=int, default=SweepConfig.jobs, help="Parallel processes (-1: one per core)."
)
@click.option("--output", default=SweepConfig.output, help="One row per setting (CSV).")
@click.option(
    "--best-output",
    default=None,
    help="Best setting as a fit config [default: <output>-best.toml].",
)
def command(params, sweep_file, folds, jobs, output, best_output, **opts) -> None:
    """Score head settings by K-fold cross-validation on the cached training split, in parallel."""
    from pipeline.training.settings import grid_settings, parse_params, read_sweep_file
    from stages import sweep as stage

    settings = grid_settings(parse_params(params), "--param") if params else []
    run = {"folds": folds, "jobs": jobs}
    if sweep_file:
        from_file, extra = read_sweep_file(Path(sweep_file))
        settings += from_file
        unknown = sorted(set(extra) - set(FILE_OPTIONS))
        if unknown:
            raise UserError(
                f"{sweep_file}: unknown top-level key(s) {', '.join(unknown)}; "
                "use folds, jobs, [grid], [[settings]]"
            )
        run |= extra
    config = SweepConfig(
        base=fit_config(opts),
        settings=tuple(settings),
        output=output,
        best_output=best_output,
        **run,
    )
    click.echo(stage.run(config).line())
