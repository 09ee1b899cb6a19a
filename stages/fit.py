"""`pipeline fit`: stage two, a head trained from the cached features of a split (never a
JPEG), saved beside them; with `cv_folds`, first its K-fold cross-validated mAP."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.config import FitConfig
from pipeline.training.crossval import cross_validate
from pipeline.training.fit import FitResult, fit_head


@dataclass(frozen=True)
class FitSummary:
    result: FitResult
    config: FitConfig
    cv: tuple[float, ...] = ()  # mAP of each held-out fold, fractions

    def line(self) -> str:
        lines = [self._cv_line()] if self.cv else []
        return "\n".join([*lines, self._fit_line()])

    def _cv_line(self) -> str:
        scores, config = 100 * np.asarray(self.cv), self.config
        return (
            f"cv {config.head}: mAP {scores.mean():.2f} ± {scores.std():.2f} over {len(scores)} "
            f"folds of {config.split} images ({' '.join(f'{v:.2f}' for v in scores)})"
        )

    def _fit_line(self) -> str:
        r, head = self.result, self.config.head
        if r.pool is not None:
            return (
                f"fit {head}: {len(r.classes)} classes from image labels ({r.pool} "
                f"pooling), {r.patches} patches of {r.images} images, {r.epochs} epochs "
                f"in {r.seconds:.1f} s, final loss {r.final_loss:.4f} -> {r.head_path}"
            )
        if not r.epochs:  # the whole-image SVM: solved exactly, one row per image
            return (
                f"fit {head}: {len(r.classes)} classes, one SVM each on {r.patches} images "
                f"in {r.seconds:.1f} s -> {r.head_path}"
            )
        return (
            f"fit {head}: {len(r.classes)} classes + background, {r.patches} patches, "
            f"{r.epochs} epochs in {r.seconds:.1f} s, final loss {r.final_loss:.4f} "
            f"-> {r.head_path}"
        )


def run(config: FitConfig, *, cv_folds: int | None = None, progress=None) -> FitSummary:
    cv = tuple(cross_validate(config, cv_folds)) if cv_folds else ()
    return FitSummary(fit_head(config, progress=progress), config, cv)
