"""`pipeline predict`: which head, which photos, and what to write."""

from __future__ import annotations

import importlib.util

import click

from pipeline.cli.errors import UserError
from pipeline.cli.options import compute, trust_pickled_head
from pipeline.config import ON_ERROR, PRECISIONS, ExtractConfig, PredictConfig

MAPS_NEED = ("h5py", "matplotlib")  # maps.h5, the overlays' colour maps: not in the runtime


@click.command("predict")
@click.argument("sources", nargs=-1, required=True)
@click.option(
    "--head",
    default=None,
    help="A head FILE (cache/<split>-<digest>-<tag>/heads/mlp.safetensors) or the name of a head in --cache-dir.",
)
@click.option(
    "--model",
    type=click.Path(file_okay=False),
    default=None,
    help="Instead of --head: a model folder of pipeline export, run without torch (docs/deploy.md).",
)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default=None,
    help="The frozen net's numbers with --head [default: those of the head's features].",
)
@click.option(
    "--cache-dir",
    envvar="MIDLEVEL_CACHE_DIR",
    default=ExtractConfig.cache_dir,
    show_default=True,
    help="Where named heads are found, and many photos' features are cached.",
)
@click.option(
    "--output",
    default=PredictConfig.output,
    show_default=True,
    help="One row per image: its top classes and the score of every class.",
)
@click.option(
    "--maps",
    type=click.Path(file_okay=False),
    default=None,
    help="Also write maps.h5 and heat-map overlays of every image into DIR.",
)
@click.option(
    "-k", "--k", "k", type=float, default=None, help="Pooling exponent [default: the head's]."
)
@click.option(
    "--top", type=int, default=PredictConfig.top, show_default=True, help="Classes named per image."
)
@click.option("--weights", default=None, help="A local copy of the head's backbone weights FILE.")
@compute
@trust_pickled_head
@click.option(
    "--cache/--no-cache",
    "cached",
    default=None,
    help="Features through the cache (resumable) [default: for more than 200 images].",
)
@click.option(
    "--on-error",
    type=click.Choice(ON_ERROR[::-1]),  # skip first: predict's default
    default=PredictConfig.on_error,
    show_default=True,
    help="A bad photo is skipped with a logged line, or stops the run.",
)
def command(sources, **opts) -> None:
    """A fitted head on new photos (files, folders, globs): scores, top classes, maps."""
    if opts["maps"]:
        _maps_packages()
    from stages import predict as stage

    click.echo(stage.run(PredictConfig(sources=tuple(sources), **opts)).line())


def _maps_packages() -> None:
    """--maps writes maps.h5 and overlays, whose packages a runtime install lacks: said in
    one line before any photo is read."""
    missing = [name for name in MAPS_NEED if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(
            f"--maps needs {' and '.join(missing)} (maps.h5 and its overlays): pip install "
            f"{' '.join(missing)}, or drop --maps"
        )
