"""A head fitted on the images a labelling budget buys and scored on the evaluation split: one
point of a label-budget curve; and the rounds of an active-labelling simulation, where a
strategy picks the next images from what unlabelled images give (pipeline/training/acquisition.py)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from pipeline.config import FIRST_BATCH, LABEL_FREE, FitConfig
from pipeline.errors import CacheError
from pipeline.evaluation.pooling import score_power
from pipeline.evaluation.scoring import average_precisions, blind_scores, score_images
from pipeline.features.caches import open_split
from pipeline.store.cache import SplitCache
from pipeline.store.head_files import check_int8_pair
from pipeline.training.acquisition import Embeddings, choose, image_embeddings
from pipeline.training.budgets import Budget, Draw, SplitTruth, draw, image_order, random_order
from pipeline.training.crossval import SplitLabels, shortfall, split_labels
from pipeline.training.fit import open_fit_cache, train_head, training_classes
from pipeline.training.head_kinds import head_kind

STEPS_CAP = 10  # the "steps" schedule runs at most this many times a head's epochs


@dataclass(frozen=True)
class CurveMethod:
    """One head of a curve: its fit config, its training and evaluation caches, and what each
    training image gives it to learn from."""

    name: str
    config: FitConfig
    train: SplitCache
    test: SplitCache
    labels: SplitLabels
    schedule: str = "epochs"  # SCHEDULES

    @property
    def classes(self) -> tuple[str, ...]:
        return self.config.classes


def open_method(
    name: str, config: FitConfig, test_split: str, schedule: str = "epochs"
) -> CurveMethod:
    """The caches of one head, refusing an evaluation split without labels (no AP)."""
    train = open_fit_cache(config)
    config = replace(config, classes=training_classes(config, train))
    test = open_split(config, test_split, train.dataset)
    check_int8_pair(train, test)
    if not test.labelled:
        raise CacheError(
            f"{test.directory}: split {test_split!r} has no labels, so no AP to draw a curve "
            "with; pass a labelled --test-split"
        )
    labels = split_labels(config, train, config.classes)
    return CurveMethod(name, config, train, test, labels, schedule)


def scheduled(method: CurveMethod, drawn: Draw) -> FitConfig:
    """The fit config of a draw, seeded by it; with the "steps" schedule, an SGD head on
    fewer images runs more epochs, as many SGD steps as on the whole split (up to
    STEPS_CAP times its epochs), so that a small budget is not also a short training."""
    config = replace(method.config, seed=method.config.seed + drawn.seed)
    if method.schedule != "steps" or not head_kind(config).sgd:
        return config
    factor = min(len(method.labels.image_ids) / max(len(drawn.images), 1), STEPS_CAP)
    mlp, svm = config.mlp, config.svm
    return replace(
        config,
        mlp=replace(mlp, epochs=math.ceil(mlp.epochs * factor)),
        svm=replace(svm, epochs=math.ceil(svm.epochs * factor)),
    )


def split_truth(cache: SplitCache, classes: tuple[str, ...]) -> SplitTruth:
    """The image labels of `classes` in a training cache, which draws are made from."""
    columns = [cache.class_names().index(c) for c in classes]
    ids, labels = [], []
    for shard in cache.iter_shards(features=False):
        ids += shard.image_ids
        labels.append(shard.image_labels[:, columns])
    return SplitTruth.of(ids, np.concatenate(labels), classes)


def budget_problem(method: CurveMethod, drawn: Draw) -> str | None:
    """Why the drawn images cannot train this head (a class without a positive, or without a
    negative for the whole-image SVM, no background row for a patch head: see shortfall), or
    None."""
    short = shortfall(
        method.labels, method.classes, drawn.mask(method.labels.image_ids, method.classes)
    )
    n = len(drawn.images)
    if short is None:
        return None
    if short.row == "background":
        return f"no background patch in the {n} drawn images"
    what = head_kind(method.config).positive if short.row == "positive" else "negative image"
    return f"no {what} of {', '.join(short.classes)} in the {n} drawn images"


@dataclass(frozen=True)
class Measured:
    """One fit on a draw: its evaluation APs (fractions), or why there are none."""

    drawn: Draw
    aps: np.ndarray | None
    note: str
    seconds: float


def fit_draw(method: CurveMethod, drawn: Draw):
    """(the head trained on the drawn images, or None, and what it measured on the evaluation
    split); the draw's seed seeds the head too, so that seeds give independent fits."""
    started = time.perf_counter()
    problem = budget_problem(method, drawn)
    if problem is not None:
        return None, Measured(drawn, None, problem, 0.0)
    config = scheduled(method, drawn)
    exclude = frozenset(method.labels.image_ids) - drawn.images
    try:
        head = train_head(
            config, method.train, method.classes, exclude=exclude, class_images=drawn.class_images
        )
    except CacheError as exc:
        return None, Measured(drawn, None, str(exc), time.perf_counter() - started)
    scored = score_images(head, method.test, method.classes, method.classes, config.k)
    aps = average_precisions(scored)[0]
    return head, Measured(drawn, aps, "", time.perf_counter() - started)


def simulate(
    method: CurveMethod, truth: SplitTruth, strategy: str, seed: int, batch: int, up_to: int,
    embeddings: Embeddings | None = None, start: str = "cold",
) -> Iterator[Measured]:  # fmt: skip
    """Rounds of active labelling, `batch` more images a round chosen by `strategy` until
    `up_to`: from no label (start "cold": the first batch is the strategy's too, random's
    random) or from one positive of every class. A round whose images cannot train a head
    yet picks by a strategy that needs none: typical and auto typical, the others diversity."""
    cold = start == "cold"
    order = random_order(truth, seed) if cold else image_order(truth, seed)
    labelled = [] if cold else list(draw(truth, Budget("shots", 1), seed).images)
    embeddings = embeddings or image_embeddings(method.train)
    embedded = set(embeddings.image_ids)
    while True:
        head = None
        if labelled:
            labelled_now = Draw(Budget("images", len(labelled)), seed, frozenset(labelled))
            head, measured = fit_draw(method, labelled_now)
            yield measured
        wanted = min(batch, up_to - len(labelled))
        if wanted <= 0:
            return
        taken = set(labelled)
        if strategy == "random":
            labelled += [i for i in order if i not in taken][:wanted]
            continue
        pool = [i for i in embeddings.image_ids if i not in taken]
        known = [i for i in labelled if i in embedded]
        if head is None or strategy in LABEL_FREE:  # no head yet, or none needed
            first = strategy if strategy in FIRST_BATCH else "diversity"
            picks = choose(
                first, embeddings.of(pool), embeddings.of(known), None, 1.0, wanted, seed
            )
        else:
            picks = choose(
                strategy, embeddings.of(pool), embeddings.of(known),
                blind_scores(head, method.train, method.classes, method.classes, method.config.k, pool),
                score_power(head, method.config.k), wanted, seed,
                [labelled_now.positives(truth)[c] for c in method.classes],
            )  # fmt: skip
        if not picks:
            return
        labelled += [pool[i] for i, _ in picks]
