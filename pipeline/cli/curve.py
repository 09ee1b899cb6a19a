"""`pipeline curve`: AP against the number of labelled images, from the cached splits."""

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
from pipeline.config import PROTOCOLS, SCHEDULES, STARTS, STRATEGIES, CurveConfig

DEFAULT_HEADS = "mlp,svm,weak,whole-svm"


@click.command("curve")
@config_file
@dataset
@features
@head
@click.option(
    "--heads",
    default=None,
    help="Methods to fit: mlp, svm, weak (patch grid), whole-svm (--grid whole features), "
    "comma-separated [default: all four, leaving out those whose grid is not extracted].",
)
@method_config
@click.option(
    "--test-split", default=CurveConfig.test_split, help="Labelled split every fit is scored on."
)
@click.option(
    "--shots",
    default="1,2,4,8,16,32,64,all",
    help="k positive images per class (whole images, all their labels), and/or all.",
)
@click.option(
    "--images",
    default="",
    help="Labelled images in all (one positive of every class first), e.g. 10,20,50,100.",
)
@click.option(
    "--seeds",
    type=int,
    default=CurveConfig.seeds,
    help="Independent draws per budget, the same for every head.",
)
@click.option(
    "--protocol",
    type=click.Choice(PROTOCOLS),
    default=CurveConfig.protocol,
    help="union: the images of k positives per class; vissl: per class k positives and (C-1)k negatives (whole-svm).",
)
@click.option(
    "--schedule",
    type=click.Choice(SCHEDULES),
    default=CurveConfig.schedule,
    help="epochs: every fit runs --epochs (few images: few SGD steps); steps: fewer images run "
    "more epochs, the whole split's SGD steps (at most 10x).",
)
@click.option(
    "--simulate",
    default="",
    help=f"Active labelling beside random: strategies among {', '.join(STRATEGIES)}.",
)
@click.option(
    "--simulate-heads", default=None, help="Methods the simulation runs for [default: --heads]."
)
@click.option(
    "--batch", type=int, default=CurveConfig.batch, help="Simulation: images labelled a round."
)
@click.option(
    "--up-to", type=int, default=CurveConfig.up_to, help="Simulation: labelled images it stops at."
)
@click.option(
    "--start",
    type=click.Choice(STARTS),
    default=CurveConfig.start,
    help="Simulation: from no label, the first batch the strategy's too (random's random), or "
    "from one positive image of every class.",
)
@click.option(
    "--jobs", type=int, default=CurveConfig.jobs, help="Parallel processes (-1: one per core)."
)
@click.option("--output", default=CurveConfig.output, help="One row per fit (CSV).")
@click.option("--plot", default=None, help="The curve's PNG [default: <output stem>.png].")
def command(heads, method_configs, test_split, shots, images, seeds, protocol, schedule, simulate,
            simulate_heads, batch, up_to, start, jobs, output, plot, **opts) -> None:  # fmt: skip
    """AP on the test split against labelled training images, for each head, seeded draws.

    Extract trainval and the test split first (and --grid whole for whole-svm: without it,
    the default heads leave whole-svm out and say so); --head is ignored: --heads names the
    methods.
    """
    from pipeline.training.budgets import parse_counts
    from pipeline.training.methods import method_names
    from stages import curve as stage

    k, all_shots = parse_counts(shots, "--shots")
    n, all_images = parse_counts(images, "--images")
    strategies = tuple(dict.fromkeys(s.strip() for s in simulate.split(",") if s.strip()))
    config = CurveConfig(
        base=fit_config(opts),
        methods=method_names(heads or DEFAULT_HEADS, "--heads"),
        method_settings=method_settings(method_configs),
        test_split=test_split,
        skip_unextracted=heads is None,
        shots=k,
        images=n,
        all_data=all_shots or all_images,
        seeds=seeds,
        protocol=protocol,
        schedule=schedule,
        simulate=strategies,
        simulate_methods=(
            method_names(simulate_heads, "--simulate-heads") if simulate_heads else None
        ),
        batch=batch,
        up_to=up_to,
        start=start,
        jobs=jobs,
        output=output,
        plot=plot,
    )
    summary = stage.run(config)
    from pipeline.reporting.curves import curve_table

    click.echo(curve_table(summary.points))
    for line in summary.verdict:
        click.echo(line)
    click.echo(summary.line())
