"""The kinds of head stage two trains, one entry each, by the name compare and curve give it:
the feature grid it reads (patches, or one row per image), the labels it learns from (patch
labels that boxes give, or image labels), what a fold's or a budget's images must hold for
it, its estimator from a FitConfig, and how it trains on the cache. A new head is one entry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pipeline.config import FitConfig
from pipeline.training.rows import image_rows, patch_chunks, sample_chunks

SAMPLED = " with a patch in its label-blind sample"  # what a weak head's positive image needs


@dataclass(frozen=True)
class HeadKind:
    """One kind of head; `build(config, n_classes, background)` makes its estimator (the
    background's loss weight as a class weight where there are background rows), and
    `train(head, config, cache, classes, exclude, class_images, progress)` fits it."""

    grid: str  # the feature grid it reads: "patches", or "whole" (one row per image)
    head: str  # its --head
    image_labels: bool  # learns from image labels (no box needed), not from patch labels
    sampled: bool  # learns an image's labels from its label-blind sample of patches only
    per_class: bool  # one binary SVM per class: needs negative images, may see its own images
    sgd: bool  # trained in epochs of SGD (a curve's "steps" schedule scales them)
    build: Callable
    train: Callable

    @property
    def positive(self) -> str:
        """A row that teaches it a class, as a too small budget names it."""
        return f"positive image{self.sample_note}" if self.image_labels else "positive patch"

    @property
    def sample_note(self) -> str:
        """What a positive image needs besides its label (a patch to learn it from), or ""."""
        return SAMPLED if self.sampled else ""


def _layers(config: FitConfig) -> dict:
    """The MLP's layers and their training, which the weak head shares."""
    m = config.mlp
    return dict(
        hidden=m.hidden, dropout=m.dropout, lr=m.lr, momentum=m.momentum,
        weight_decay=m.weight_decay, epochs=m.epochs, seed=config.seed, device=config.device,
    )  # fmt: skip


def _mlp(config: FitConfig, n_classes: int, background: bool):
    from pipeline.heads.mlp import MLPHead

    m = config.mlp
    weight = {n_classes: m.background_weight} if background else None
    return MLPHead(batch_size=m.batch_size, class_weight=weight, **_layers(config))


def _svm(config: FitConfig, n_classes: int, background: bool):
    from pipeline.heads.linear_svm import LinearSVMHead

    s = config.svm
    weight = {n_classes: s.background_weight} if background else None
    return LinearSVMHead(C=s.C, epochs=s.epochs, class_weight=weight, seed=config.seed)


def _image_svm(config: FitConfig, n_classes: int, background: bool):
    from pipeline.heads.image_svm import ImageSVMHead

    return ImageSVMHead(C=config.svm.C, seed=config.seed)


def _weak(config: FitConfig, n_classes: int, background: bool):
    from pipeline.heads.weak import WeakPatchHead

    w = config.weak
    return WeakPatchHead(
        pool=w.pool, r=w.r, top_fraction=w.top_fraction, bottom_fraction=w.bottom_fraction,
        bottom_weight=w.bottom_weight, k=config.k, batch_images=w.batch_images, **_layers(config),
    )  # fmt: skip


def _on_patches(head, config, cache, classes, exclude, class_images, progress):
    return head.fit_stream(patch_chunks(config, cache, classes, exclude), progress=progress)


def _on_sample(head, config, cache, classes, exclude, class_images, progress):
    return head.fit_stream(sample_chunks(config, cache, classes, exclude), progress=progress)


def _on_images(head, config, cache, classes, exclude, class_images, progress):
    return head.fit(*image_rows(cache, classes, exclude, class_images))


HEAD_KINDS = {  # name -> kind, in the paper's order
    "whole-svm": HeadKind(  # the DeCAF baseline
        grid="whole",
        head="svm",
        image_labels=True,
        sampled=False,
        per_class=True,
        sgd=False,
        build=_image_svm,
        train=_on_images,
    ),
    "patches-svm": HeadKind(
        grid="patches",
        head="svm",
        image_labels=False,
        sampled=False,
        per_class=False,
        sgd=True,
        build=_svm,
        train=_on_patches,
    ),
    "patches-mlp": HeadKind(  # FCa, FCb (Oquab et al., CVPR 2014)
        grid="patches",
        head="mlp",
        image_labels=False,
        sampled=False,
        per_class=False,
        sgd=True,
        build=_mlp,
        train=_on_patches,
    ),
    "patches-weak": HeadKind(  # image labels alone (Oquab et al., CVPR 2015)
        grid="patches",
        head="weak",
        image_labels=True,
        sampled=True,
        per_class=False,
        sgd=True,
        build=_weak,
        train=_on_sample,
    ),
}
_BY_GRID_AND_HEAD = {(kind.grid, kind.head): kind for kind in HEAD_KINDS.values()}


def head_kind(config: FitConfig) -> HeadKind:
    """The kind of head `config` fits: its --head on its --grid (FitConfig refuses a pair
    no entry has)."""
    return _BY_GRID_AND_HEAD[config.grid.kind, config.head]
