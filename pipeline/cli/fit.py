"""`pipeline fit`: stage two's options."""

from __future__ import annotations

import click

from pipeline.cli.options import config_file, dataset, features, fit_config, head
from pipeline.config import FOLDS, check_range


@click.command("fit")
@config_file
@dataset
@features
@head
@click.option("--cv", "cv_folds", type=int, default=None,
              help="First report the mAP of K-fold cross-validation over the split's images.")  # fmt: skip
def command(cv_folds: int | None, **opts) -> None:
    """Stage two: train the head from cached features only (never reads a JPEG)."""
    from stages import fit as stage

    if cv_folds is not None:
        check_range("cv_folds", cv_folds, FOLDS)

    def progress(epoch: int, loss: float) -> None:
        click.echo(f"  epoch {epoch + 1}: loss {loss:.4f}", err=True)

    summary = stage.run(fit_config(opts), cv_folds=cv_folds, progress=progress)
    click.echo(summary.line())
