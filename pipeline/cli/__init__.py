"""`pipeline` command line: each verb parses its options and calls one stage.

Only click and the settings are imported here: torch loads in the verbs that run a net, so
`--help` and a refusal answer at once.
"""

from __future__ import annotations

import errno
import os
import sys

import click

from pipeline.config import (
    GRID_KINDS,
    KEEP_CHOICES,
    BackboneConfig,
    CompareConfig,
    ExtractConfig,
    FitConfig,
    GridConfig,
    LabelRule,
    LocalizeConfig,
    MLPConfig,
    PredictConfig,
    ReportConfig,
    ScoreConfig,
    SVMConfig,
    SweepConfig,
    TaskConfig,
    WeakConfig,
)
from pipeline.errors import MidlevelError
from pipeline.features.registry import RANDOM, REGISTRY, RUNTIMES, get_spec
from pipeline.training.classes import parse_classes

DATA_HELP = (
    "Dataset: KIND:PATH, KIND one of voc, coco, imagefolder, csv, images; or a PATH whose "
    "kind is detected. Env: MIDLEVEL_DATA."
)

DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES)


class UserError(click.ClickException):
    """One red line and exit code 2: bad input is the user's to fix, not a crash."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.secho(f"error: {self.message}", fg="red", err=True)


class Cli(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MidlevelError as exc:
            raise UserError(str(exc)) from None
        except OSError as exc:  # shards write safely on their own; this covers every other file
            if exc.errno not in DISK_ERRORS:
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            raise UserError(
                f"{where}cannot write ({os.strerror(exc.errno)}); free space or fix the permissions "
                "and rerun the same command: finished work (shards, heads, sweep rows) is kept"
            ) from None
        except KeyboardInterrupt:
            click.secho(
                "interrupted: finished work (shards, sweep rows) is kept; rerun the same command to resume",
                err=True,
            )
            sys.exit(130)


def _options(*decorators):
    def apply(func):
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


common = _options(
    click.option("--data", envvar="MIDLEVEL_DATA", default=None, help=DATA_HELP),
    click.option("--voc-root", envvar="MIDLEVEL_VOC_ROOT", type=click.Path(file_okay=False),
                 help="A VOC tree (year dir or its VOCdevkit parent): --data voc:DIR. Env: MIDLEVEL_VOC_ROOT."),
    click.option("--image-dir", default=None, type=click.Path(file_okay=False),
                 help="Where a COCO JSON's or a labels CSV's images are [default: beside it]."),
    click.option("--cache-dir", envvar="MIDLEVEL_CACHE_DIR", default="cache", show_default=True,
                 help="Root of feature shards and trained heads. Env: MIDLEVEL_CACHE_DIR."),
    click.option("--classes", default=None,
                 help="Comma-separated classes (or actions) to train/score (default: all with labels)."),
)  # fmt: skip


def _check_backbone(ctx: click.Context, param: click.Parameter, name: str) -> str:
    """A typo is one line before any work; the table's names are checked without torch."""
    try:
        get_spec(name)
    except MidlevelError as exc:
        raise UserError(str(exc)) from None
    return name


BACKBONE_HELP = (
    f"Frozen net: {', '.join(REGISTRY)}, any torchvision classification model (convnext_tiny, "
    "vit_b_16...), or timm:NAME (pip install 'midlevel[timm]')."
)

features = _options(
    click.option("--backbone", default=BackboneConfig.name, show_default=True, callback=_check_backbone,
                 help=BACKBONE_HELP),
    click.option("--weights", default=None,
                 help=f"Local state-dict FILE, or '{RANDOM}' (untrained, plumbing only). Default: ImageNet."),
    click.option("--input-size", type=int, default=None, help="Patch side fed to the net [default: the net's]."),
    click.option("--mode", type=click.Choice(["crop", "shared"]), default=BackboneConfig.mode, show_default=True,
                 help="'crop': each patch through the whole net (the paper); 'shared': the trunk once per image and scale, patches pooled from its map (faster)."),
    click.option("--task", "task_name", type=click.Choice(["object", "action"]), default=TaskConfig.name, show_default=True,
                 help="'object': VOC classification; 'action': VOC 2012 Action, one sample per person."),
    click.option("--context", type=float, default=TaskConfig.context, show_default=True,
                 help="Action: the person box grows by this times its size (half per side) for its patches."),
    click.option("--grid", "grid_kind", type=click.Choice(GRID_KINDS), default=GridConfig.kind, show_default=True,
                 help="'patches': the paper's multi-scale grid; 'whole': one feature per image (baseline)."),
    click.option("--scales", type=int, default=GridConfig.scales, show_default=True, help="Patch scales."),
    click.option("--min-scale", type=float, default=GridConfig.min_scale, show_default=True,
                 help="Smallest patch side / min(W, H)."),
    click.option("--overlap", type=float, default=GridConfig.overlap, show_default=True,
                 help="Minimum overlap of neighbouring patches."),
    click.option("--min-patch-cover", type=float, default=LabelRule.min_patch_cover, show_default=True,
                 help="Label rule: |P∩B| >= this * |P|."),
    click.option("--min-box-cover", type=float, default=LabelRule.min_box_cover, show_default=True,
                 help="Label rule: |P∩B| >= this * |B|."),
    click.option("--background-ratio", type=float, default=LabelRule.background_ratio, show_default=True,
                 help="Share of background patches kept in train/trainval."),
    click.option("--seed", type=int, default=LabelRule.seed, show_default=True,
                 help="Seed of background subsampling and head training."),
)  # fmt: skip


compute = _options(
    click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                 help="Compute device."),
    click.option("--runtime", type=click.Choice(RUNTIMES), default="auto", show_default=True,
                 envvar="MIDLEVEL_RUNTIME",
                 help="Frozen net's runtime: auto is ONNX Runtime on a CPU, torch on CUDA."),
    click.option("--batch-size", type=int, default=None,
                 help="Patches per forward pass [default: the backbone's fastest for the runtime]."),
    click.option("--workers", type=int, default=ExtractConfig.workers,
                 help="DataLoader decode workers."),
)  # fmt: skip


def _feature_kwargs(opts: dict) -> dict:
    """Pop the feature options into the three config objects every stage takes."""
    if opts["weights"] == RANDOM:
        click.secho(
            "warning: --weights random: untrained network, features are NOT pretrained",
            fg="yellow",
            err=True,
        )
    return {
        "backbone": BackboneConfig(
            opts.pop("backbone"), opts.pop("weights"), opts.pop("input_size"), opts.pop("mode")
        ),
        "grid": GridConfig(
            opts.pop("scales"), opts.pop("min_scale"), opts.pop("overlap"), opts.pop("grid_kind")
        ),
        "labels": LabelRule(
            opts.pop("min_patch_cover"),
            opts.pop("min_box_cover"),
            opts.pop("background_ratio"),
            opts["seed"],
        ),
        "task": TaskConfig(opts.pop("task_name"), opts.pop("context")),
    }


def _data(opts: dict) -> str:
    """Pop --data and --voc-root into one dataset spec ("" when neither is given). --data
    wins over a --voc-root taken from the environment; both on the command line is refused."""
    data, voc_root = opts.pop("data"), opts.pop("voc_root")
    if data and voc_root:
        source = click.get_current_context().get_parameter_source("voc_root")
        if source == click.core.ParameterSource.COMMANDLINE:
            raise UserError("--data and --voc-root both name a dataset; pass one of them")
    return data or (f"voc:{voc_root}" if voc_root else "")


def _need_data(opts: dict) -> str:
    data = _data(opts)
    if not data:
        raise UserError(
            "no dataset: pass --data KIND:PATH or --voc-root DIR (env MIDLEVEL_DATA, "
            "MIDLEVEL_VOC_ROOT); try pipeline demo-data"
        )
    return data


@click.group(
    cls=Cli, context_settings={"help_option_names": ["-h", "--help"], "show_default": True}
)
def cli() -> None:
    """midlevel: frozen-CNN patch features, cached once, transferred to new tasks.

    Typical run: extract --split trainval, extract --split test, fit --head mlp, score.
    """


@cli.command("demo-data")
@click.option("--output", default="data/demo", help="Where to write the demo VOC tree.")
@click.option("--trainval", "n_trainval", type=int, default=48, help="Trainval images.")
@click.option("--test", "n_test", type=int, default=32, help="Test images.")
@click.option("--seed", type=int, default=0, help="Layout seed.")
@click.option("--overwrite", is_flag=True, help="Rebuild the tree if it exists.")
def demo_data(output: str, n_trainval: int, n_test: int, seed: int, overwrite: bool) -> None:
    """Build a small VOC-format tree from sample photos that installed packages ship."""
    import shutil
    from pathlib import Path

    from pipeline.datasets.demo import build_demo_tree

    year_dir = Path(output) / "VOC2007"
    if year_dir.exists() and not overwrite:
        click.echo(f"demo-data: {year_dir} already exists, kept (--overwrite rebuilds it)")
        return
    staging = Path(output) / ".demo-data-tmp"  # the old tree stays until the new one is whole
    shutil.rmtree(staging, ignore_errors=True)
    try:
        built = build_demo_tree(staging, n_trainval=n_trainval, n_test=n_test, seed=seed)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    shutil.rmtree(year_dir, ignore_errors=True)
    built.rename(year_dir)
    staging.rmdir()
    click.echo(f"demo-data: {n_trainval} trainval + {n_test} test images -> {year_dir}")


@cli.command()
@common
@features
@click.option(
    "--split", default="trainval", help="ImageSets/Main split: train, val, trainval, test."
)
@compute
@click.option(
    "--images-per-shard",
    type=int,
    default=ExtractConfig.images_per_shard,
    help="Images per HDF5 shard.",
)
@click.option("--limit", type=int, default=None, help="Only the first N images of the split.")
@click.option(
    "--keep",
    type=click.Choice(KEEP_CHOICES),
    default=ExtractConfig.keep,
    show_default=True,
    help="Patches stored: 'sample' (object patches + a label-blind sample: training), 'all' "
    "(evaluation); 'auto' by the split's role (a name starting with 'train' samples).",
)
@click.option(
    "--overwrite", is_flag=True, help="Rebuild the cache for these settings from scratch."
)
@click.option(
    "--on-error",
    type=click.Choice(["stop", "skip"]),
    default=ExtractConfig.on_error,
    show_default=True,
    help="A bad image (unreadable JPEG, bad XML...) stops the run, or is skipped: logged, "
    "listed in its shard's 'skipped' attribute and counted in the summary.",
)
def extract(**opts) -> None:
    """Stage one: run the frozen backbone over every patch; write HDF5 shards."""
    from pipeline.features.ranks import from_environment
    from stages import extract as stage

    opts.pop("classes")
    feature = _feature_kwargs(opts)
    opts.pop("seed")
    config = ExtractConfig(data=_need_data(opts), **opts, **feature)
    summary = stage.run(config)
    if from_environment().main:  # under torchrun, one summary for the run
        click.echo(summary.line(config.split))


def _load_config_file(ctx: click.Context, param, value) -> None:
    """--config FILE: its values become this command's defaults; options given win."""
    if value:
        from pathlib import Path

        from pipeline.training.settings import read_options_file

        known = {p.name for p in ctx.command.params}
        try:
            ctx.default_map = {**(ctx.default_map or {}), **read_options_file(Path(value), known)}
        except MidlevelError as exc:
            raise UserError(str(exc)) from None


config_file = click.option(
    "--config", type=click.Path(exists=True, dir_okay=False), is_eager=True, expose_value=False,
    callback=_load_config_file, help="TOML file of option values (e.g. a sweep's best config).",
)  # fmt: skip

head_options = _options(
    click.option("--split", default="trainval", help="Split whose cached features train the head."),
    click.option("--head", type=click.Choice(["mlp", "svm", "weak"]), default="mlp",
                 help="Adaptation layers on box labels (mlp), the SVM baseline, or the adaptation layers on image labels alone (weak)."),
    click.option("--hidden", type=int, default=MLPConfig.hidden, help="MLP: FCa units."),
    click.option("--dropout", type=float, default=MLPConfig.dropout, help="MLP: dropout after FCa."),
    click.option("--lr", type=float, default=MLPConfig.lr, help="MLP: SGD learning rate (cosine decay)."),
    click.option("--momentum", type=float, default=MLPConfig.momentum, help="MLP: SGD momentum."),
    click.option("--weight-decay", type=float, default=MLPConfig.weight_decay, help="MLP: L2 weight decay."),
    click.option("--epochs", type=int, default=MLPConfig.epochs, help="MLP: epochs over the shards."),
    click.option("--batch-size", type=int, default=MLPConfig.batch_size, help="MLP: minibatch size."),
    click.option("--background-weight", type=float, default=1.0, help="Loss weight of the background class."),
    click.option("--svm-c", type=float, default=SVMConfig.C, help="SVM: regularisation C."),
    click.option("--svm-epochs", type=int, default=SVMConfig.epochs, help="SVM: SGD epochs over the shards (patch grid)."),
    click.option("--pool", type=click.Choice(["max", "lse", "topk", "mean-pk"]), default=WeakConfig.pool,
                 help="Weak: how patch scores pool into the image score it learns from."),
    click.option("--lse-r", type=float, default=WeakConfig.r, help="Weak, lse: sharpness r."),
    click.option("--top-fraction", type=float, default=WeakConfig.top_fraction, help="Weak, topk: share of patches averaged at the top."),
    click.option("--bottom-fraction", type=float, default=WeakConfig.bottom_fraction, help="Weak, topk: share averaged at the bottom (0: none)."),
    click.option("--bottom-weight", type=float, default=WeakConfig.bottom_weight, help="Weak, topk: weight of the bottom term."),
    click.option("--batch-images", type=int, default=WeakConfig.batch_images, help="Weak: images per SGD step."),
    click.option("-k", "--k", "k", type=float, default=FitConfig.k, help="Pooling exponent recorded with the head (score's default; weak mean-pk's power)."),
    click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", help="MLP training device."),
)  # fmt: skip


def _fit_config(opts: dict) -> FitConfig:
    """Pop the feature and head options of `opts` into a FitConfig."""
    feature = _feature_kwargs(opts)
    mlp = MLPConfig(
        **{
            k: opts.pop(k)
            for k in ("hidden", "dropout", "lr", "momentum", "weight_decay", "epochs", "batch_size")
        },
        background_weight=opts["background_weight"],
    )
    svm = SVMConfig(
        C=opts.pop("svm_c"),
        epochs=opts.pop("svm_epochs"),
        background_weight=opts.pop("background_weight"),
    )
    weak = WeakConfig(
        pool=opts.pop("pool"),
        r=opts.pop("lse_r"),
        **{k: opts.pop(k) for k in ("top_fraction", "bottom_fraction", "bottom_weight")},
        batch_images=opts.pop("batch_images"),
    )
    head = {k: opts.pop(k) for k in ("split", "head", "k", "device", "seed")}
    return FitConfig(
        data=_data(opts),
        image_dir=opts.pop("image_dir"),
        cache_dir=opts.pop("cache_dir"),
        classes=parse_classes(opts.pop("classes")),
        mlp=mlp,
        svm=svm,
        weak=weak,
        **head,
        **feature,
    )


@cli.command()
@config_file
@common
@features
@head_options
@click.option("--cv", "cv_folds", type=int, default=None,
              help="First report the mAP of K-fold cross-validation over the split's images.")  # fmt: skip
def fit(**opts) -> None:
    """Stage two: train the head from cached features only (never reads a JPEG)."""
    from stages import fit as stage

    cv_folds = opts.pop("cv_folds")
    config = _fit_config(opts)
    if cv_folds:
        import numpy as np

        from pipeline.training.crossval import cross_validate

        scores = 100 * np.asarray(cross_validate(config, cv_folds))
        click.echo(
            f"cv {config.head}: mAP {scores.mean():.2f} ± {scores.std():.2f} over {cv_folds} "
            f"folds of {config.split} images ({' '.join(f'{v:.2f}' for v in scores)})"
        )

    def progress(epoch: int, loss: float) -> None:
        click.echo(f"  epoch {epoch + 1}: loss {loss:.4f}", err=True)

    click.echo(stage.run(config, progress=progress).line(config.head))


@cli.command()
@common
@features
@head_options
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
def sweep(**opts) -> None:
    """Score head settings by K-fold cross-validation on the cached training split, in parallel."""
    from pathlib import Path

    from pipeline.training.settings import grid_settings, parse_params, read_sweep_file
    from stages import sweep as stage

    params, sweep_file = opts.pop("params"), opts.pop("sweep_file")
    settings = grid_settings(parse_params(params), "--param") if params else []
    if sweep_file:
        from_file, extra = read_sweep_file(Path(sweep_file))
        settings += from_file
        unknown = sorted(set(extra) - {"folds", "jobs"})
        if unknown:
            raise UserError(
                f"{sweep_file}: unknown top-level key(s) {', '.join(unknown)}; "
                "use folds, jobs, [grid], [[settings]]"
            )
        opts.update(extra)
    run_opts = {k: opts.pop(k) for k in ("folds", "jobs", "output", "best_output")}
    config = SweepConfig(base=_fit_config(opts), settings=tuple(settings), **run_opts)
    click.echo(stage.run(config).line(config.folds))


@cli.command()
@config_file
@common
@features
@click.option("--split", default="test", help="Split to score (its features must be extracted).")
@click.option("--train-split", default="trainval", help="Split the head was fitted on.")
@click.option(
    "--head",
    default="mlp",
    help="Which fitted head: mlp, svm, weak, or a head FILE (heads/<name>.joblib).",
)
@click.option("-k", "--k", "k", type=float, default=None,
              help="Pooling exponent: mean of p^k [default: the head's, 5 unless fit set it].")  # fmt: skip
@click.option("--output", default=ScoreConfig.output, help="Per-class AP table (CSV).")
@click.option(
    "--scores-output", default=None, help="Per-image scores CSV [default: <output>-scores.csv]."
)
@click.option("--export", type=click.Path(file_okay=False), default=None,
              help="Write the VOC evaluation server's comp1_cls_<split>_<class>.txt files under DIR/results/.")  # fmt: skip
def score(**opts) -> None:
    """Pool patch scores per image and write per-class AP (VOC07 11-point and area)."""
    from pipeline.evaluation.scoring import scores_path
    from pipeline.reporting.provenance import sidecar_path
    from stages import score as stage

    feature = _feature_kwargs(opts)
    opts.pop("seed")
    opts["classes"] = parse_classes(opts["classes"])
    config = ScoreConfig(data=_data(opts), **opts, **feature)
    result = stage.run(config)
    left_out = len(result.left_out)
    if left_out:
        click.secho(
            f"warning: {left_out} images that extract skipped (--on-error skip) are not scored "
            f"and not in the AP; listed in {sidecar_path(config.output)}",
            fg="yellow",
            err=True,
        )
    if config.export:
        click.echo(f"export: {len(result.classes)} comp1 files -> {config.export}/results/")
        if left_out:
            click.secho(
                f"warning: the export is INCOMPLETE: {left_out} images of split {config.split} "
                f"have no score in any file (listed in {config.export}/missing-images.txt); "
                "the evaluation server refuses it: fix the images, extract again without "
                "--on-error skip, and score again",
                fg="red",
                err=True,
            )
    if not result.labelled:
        click.echo(
            f"score {config.split}: {len(result.images.image_ids)} images, no labels in this split "
            f"(no AP) in {result.seconds:.1f} s -> {scores_path(config)}"
        )
        return
    rows = result.table()
    click.echo(f"{'class':<14}{'AP voc07':>10}{'AP area':>10}{'pos':>7}{'images':>8}")
    for row in rows:
        click.echo(
            f"{row['class']:<14}{row['ap_voc07']:>10.2f}{row['ap_area']:>10.2f}{row['positives']:>7}{row['images']:>8}"
        )
    skipped = f" ({left_out} skipped at extract, not scored)" if left_out else ""
    click.echo(
        f"score {config.split}: {len(result.images.image_ids)} images{skipped}, {len(result.classes)} classes, "
        f"{result.pooling}, mAP {rows[-1]['ap_voc07']:.2f} (VOC07 11-point), {rows[-1]['ap_area']:.2f} (area) "
        f"in {result.seconds:.1f} s -> {config.output}, {scores_path(config)}"
    )


@cli.command()
@config_file
@common
@features
@head_options
@click.option("--test-split", default=CompareConfig.test_split, help="Split to score.")
@click.option(
    "--output", default=CompareConfig.output, help="Directory for the runs and the report."
)
@click.option("--method-config", "method_configs", multiple=True,
              help="METHOD=FILE: head settings of one method (whole-svm, patches-svm, patches-mlp, patches-weak) "
              "from a config file such as a sweep's best; repeatable.")  # fmt: skip
def compare(**opts) -> None:
    """Whole-image SVM vs patches + SVM vs patches + MLP (the paper's comparison) vs the weak
    head (patches, image labels only), one report.

    Extract --grid whole and the patch grid of both splits first; --head is ignored.
    """
    from pathlib import Path

    from pipeline.training.settings import read_head_setting
    from stages import compare as stage

    methods = [name for name, _, _ in stage.METHODS]
    settings = {}
    for text in opts.pop("method_configs"):
        method, _, path = text.partition("=")
        if method not in methods or not path:
            raise UserError(
                f"--method-config {text!r}: write METHOD=FILE, METHOD one of {', '.join(methods)}"
            )
        if not Path(path).is_file():
            raise UserError(f"{path}: config file not found; pass an existing file")
        settings[method] = read_head_setting(Path(path))
    run_opts = {k: opts.pop(k) for k in ("test_split", "output")}
    config = CompareConfig(base=_fit_config(opts), method_settings=settings, **run_opts)
    click.echo(stage.run(config).line())


@cli.command()
@common
@features
@click.option(
    "--split",
    default=LocalizeConfig.split,
    help="Split to localize (its features must be extracted).",
)
@click.option(
    "--train-split", default=LocalizeConfig.train_split, help="Split the head was fitted on."
)
@click.option("--head", default="mlp", help="Which fitted head: mlp, svm, weak, or a head FILE.")
@click.option(
    "--output", default=LocalizeConfig.output, help="Directory: maps.h5, overlays/, pointing.csv."
)
@click.option(
    "--reduce",
    type=click.Choice(["mean", "max"]),
    default=LocalizeConfig.reduce,
    help="How the patches covering a pixel combine into its score.",
)
@click.option("--top", type=int, default=LocalizeConfig.top, help="Classes overlaid per image.")
@click.option(
    "--overlays",
    type=int,
    default=LocalizeConfig.overlays,
    help="Overlay PNGs to write (first N images; 0: none).",
)
def localize(**opts) -> None:
    """Per-class score maps from the patch scores, overlays, and pointing accuracy."""
    from stages import localize as stage

    feature = _feature_kwargs(opts)
    opts.pop("seed")
    opts["classes"] = parse_classes(opts["classes"])
    config = LocalizeConfig(data=_need_data(opts), **opts, **feature)
    click.echo(stage.run(config).line())


@cli.command()
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
def report(runs, output, names, data, voc_root, top) -> None:
    """Figures and a paper-ready table from scored runs (the ap.csv files of pipeline score)."""
    from stages import report as stage

    split_names = tuple(n.strip() for n in names.split(",")) if names else None
    if split_names and len(split_names) != len(runs):
        raise UserError(
            f"--names has {len(split_names)} names for {len(runs)} runs; give one per run"
        )
    data = _data({"data": data, "voc_root": voc_root}) or None
    config = ReportConfig(tuple(runs), output, split_names, data, top)
    click.echo(stage.run(config).line())


@cli.command()
@click.argument("sources", nargs=-1, required=True)
@click.option(
    "--head",
    required=True,
    help="A head FILE (cache/<split>-<digest>/heads/mlp.joblib) or the name of a head in --cache-dir.",
)
@click.option(
    "--cache-dir",
    envvar="MIDLEVEL_CACHE_DIR",
    default="cache",
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
@click.option(
    "--cache/--no-cache",
    "cached",
    default=None,
    help="Features through the cache (resumable) [default: for more than 200 images].",
)
@click.option("--on-error", type=click.Choice(["skip", "stop"]), default=PredictConfig.on_error,
              show_default=True, help="A bad photo is skipped with a logged line, or stops the run.")  # fmt: skip
def predict(sources, **opts) -> None:
    """A fitted head on new photos (files, folders, globs): scores, top classes, maps."""
    from stages import predict as stage

    config = PredictConfig(sources=tuple(sources), **opts)
    click.echo(stage.run(config).line())


def main() -> None:
    cli(prog_name="pipeline")
