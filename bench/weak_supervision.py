"""The weak head (image labels only) against box supervision, on the real VOC 2007 subset.

One backbone and grid for every head (EfficientNet-Lite0, the paper's 8 scales, shared mode,
the default runtime), trainval -> test:

1. the pooling, chosen by a 4-fold cross-validated sweep on trainval (never test), on the
   classes with at least 15 positive trainval images;
2. on the five boxed classes: the weak head (from trainval's label-blind patch sample, and
   from every patch of a `--keep all` trainval cache), the box-supervised MLP and the
   whole-image SVM;
3. the weak head on every class with at least 15 positive test images, with the SVM;
4. pointing and location AP of the weak and MLP heads' maps, with the centre guess.

    python bench/weak_supervision.py --voc-root ../shared/voc2007-subset/VOC2007 --output runs/weak

Each step is a `pipeline` command (printed before it runs), so the tables are what a user
gets; a rerun reuses the caches and the sweep rows it finds.
"""

from __future__ import annotations

import csv
from pathlib import Path

import click
import numpy as np
from paper_grid import CLASSES, pipeline, read_ap

from pipeline.store.cache import SplitCache

MIN_POSITIVES = 15  # fewer positive images than this: AP too noisy to compare or to train on
POOLS = "max,lse,topk,mean-pk"


def read_rows(path: Path) -> list[dict]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def positives(cache: Path, split: str) -> dict[str, int]:
    """Positive images per class of a cached split (from its shards' image labels)."""
    directory = next(d for d in cache.glob(f"{split}-*") if (d / "manifest.json").is_file())
    features = SplitCache.load(directory)
    labels = np.concatenate([s.image_labels for s in features.iter_shards(features=False)])
    return dict(zip(features.class_names(), (labels == 1).sum(axis=0).tolist(), strict=True))


def head_file(cache: Path, head: str) -> str:
    return str(next(cache.glob(f"trainval-*/heads/{head}.safetensors")))


@click.command()
@click.option("--voc-root", required=True, help="VOC 2007 year directory.")
@click.option("--output", default="runs/weak", show_default=True, help="Directory of the runs.")
@click.option("--folds", default=4, show_default=True, help="Cross-validation folds of the sweep.")
@click.option("--jobs", default=2, show_default=True, help="Sweep processes.")
def main(voc_root: str, output: str, folds: int, jobs: int) -> None:
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    cache, every = out / "cache", out / "cache-all"
    common = ["--voc-root", voc_root, "--cache-dir", str(cache), "--mode", "shared"]
    for grid in ([], ["--grid", "whole"]):
        for split in ("trainval", "test"):
            pipeline("extract", "--split", split, *grid, *common)
    trained = [c for c, n in positives(cache, "trainval").items() if n >= MIN_POSITIVES]
    many = ["--classes", ",".join(trained)]
    sweep = out / "sweep-pool.csv"
    pipeline("sweep", "--head", "weak", "--param", f"pool={POOLS}", "--folds", str(folds),
             "--jobs", str(jobs), "--output", str(sweep), *many, *common)  # fmt: skip
    best = ["--config", str(sweep.with_name("sweep-pool-best.toml"))]
    five, whole = ["--classes", CLASSES], ["--grid", "whole"]

    def run(name: str, head: str, fit: list, score: list, fit_cache: Path = cache) -> Path:
        """Fit on `fit_cache`, score on test; its ap.csv."""
        fit_common = [*common[:2], "--cache-dir", str(fit_cache), "--mode", "shared"]
        pipeline("fit", "--head", head, *fit, *score, *fit_common)
        ap = out / f"ap-{name}.csv"
        scored = head_file(fit_cache, head) if fit_cache != cache else head
        pipeline("score", "--head", scored, "--output", str(ap), *score, *common)
        return ap

    def localize(name: str, head: str) -> dict:
        directory = out / f"localize-{name}"
        pipeline("localize", "--head", head, "--output", str(directory), *common)
        return {r["class"]: r for r in read_rows(directory / "pointing.csv")}

    ap_weak_many = run("weak-many", "weak", best, many)
    ap_whole_many = run("whole-svm-many", "svm", [], [*whole, *many])
    ap_whole = run("whole-svm", "svm", [], [*whole, *five])
    ap_mlp = run("mlp", "mlp", [], five)
    ap_weak = run("weak", "weak", best, five)  # replaces the head of many classes
    pipeline("extract", "--split", "trainval", "--keep", "all",
             *common[:2], "--cache-dir", str(every), "--mode", "shared")  # fmt: skip
    ap_weak_every = run("weak-every-patch", "weak", best, five, every)
    pointing = {
        "MLP (boxes)": localize("mlp", "mlp"),
        "weak (label-blind sample)": localize("weak", "weak"),
        "weak (every patch)": localize("weak-every-patch", head_file(every, "weak")),
    }

    print("\n## Pooling by 4-fold cross-validation on trainval (weak head)\n")
    print(f"classes: {', '.join(trained)}\n\n| pool | CV mAP | ± |\n|---|---:|---:|")
    for row in read_rows(sweep):
        print(f"| {row['pool']} | {row['map_mean']} | {row['map_std']} |")

    runs = {
        "weak, image labels (label-blind sample)": ap_weak,
        "weak, image labels (every patch)": ap_weak_every,
        "MLP, boxes": ap_mlp,
        "whole-image SVM, image labels": ap_whole,
    }
    names = CLASSES.split(",")
    print("\n## Five boxed classes (VOC07 AP %)\n")
    print("| head | " + " | ".join(names) + " | mean |\n|---|" + "---:|" * (len(names) + 1))
    for label, path in runs.items():
        ap = read_ap(path)
        cells = " | ".join(f"{ap[c]:.2f}" for c in names)
        print(f"| {label} | {cells} | **{ap['mean']:.2f}** |")

    weak_many, whole_many = read_rows(ap_weak_many), read_ap(ap_whole_many)
    kept = [r for r in weak_many if r["class"] != "mean" and int(r["positives"]) >= MIN_POSITIVES]
    print(f"\n## Classes with >= {MIN_POSITIVES} positive test images (VOC07 AP %)\n")
    print("| class | positives | weak (image labels) | whole-image SVM |\n|---|---:|---:|---:|")
    for r in kept:
        weak_ap, svm_ap = float(r["ap_voc07"]), whole_many[r["class"]]
        print(f"| {r['class']} | {r['positives']} | {weak_ap:.2f} | {svm_ap:.2f} |")
    weak_mean = np.mean([float(r["ap_voc07"]) for r in kept])
    svm_mean = np.mean([whole_many[r["class"]] for r in kept])
    print(f"| **mean** | | **{weak_mean:.2f}** | **{svm_mean:.2f}** |")

    print("\n## Localization on test, five boxed classes (%)\n")
    print(
        "| maps | pointing | centre | location AP | centre location AP |\n|---|---:|---:|---:|---:|"
    )
    for label, rows in pointing.items():
        m = rows["mean"]
        print(f"| {label} | {m['accuracy']} | {m['centre_accuracy']} | {m['location_ap']} | "
              f"{m['centre_location_ap']} |")  # fmt: skip


if __name__ == "__main__":
    main()
