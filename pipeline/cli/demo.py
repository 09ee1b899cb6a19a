"""`pipeline demo-data`: the embedded demo tree, replaced only once the new one is whole."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from pipeline.cli.errors import UserError
from pipeline.config import DemoConfig


@click.command("demo-data")
@click.option("--output", default=DemoConfig.output, help="Where to write the demo VOC tree.")
@click.option("--trainval", type=int, default=DemoConfig.trainval, help="Trainval images.")
@click.option("--test", type=int, default=DemoConfig.test, help="Test images.")
@click.option("--seed", type=int, default=DemoConfig.seed, help="Layout seed.")
@click.option("--overwrite", is_flag=True, help="Rebuild the tree if it exists.")
def command(overwrite: bool, **opts) -> None:
    """Build a small VOC-format tree from sample photos that installed packages ship."""
    from pipeline.datasets.demo import build_demo_tree

    config = DemoConfig(**opts)
    output, n_trainval, n_test = config.output, config.trainval, config.test
    year_dir = Path(output) / "VOC2007"
    if year_dir.exists() and not overwrite:
        click.echo(f"demo-data: {year_dir} already exists, kept (--overwrite rebuilds it)")
        return
    staging = Path(output) / ".demo-data-tmp"  # the old tree stays until the new one is whole
    shutil.rmtree(staging, ignore_errors=True)
    try:
        built = build_demo_tree(staging, n_trainval=n_trainval, n_test=n_test, seed=config.seed)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    shutil.rmtree(year_dir, ignore_errors=True)
    built.rename(year_dir)
    staging.rmdir()
    click.echo(f"demo-data: {n_trainval} trainval + {n_test} test images -> {year_dir}")
