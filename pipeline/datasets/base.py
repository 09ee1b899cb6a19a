"""What every dataset reader gives the pipeline: a `Dataset` (one class list, its splits)
and per split a `SplitData` (samples, image-level truth), plus the helpers readers share.

Everything after the readers (patch grid, cache, heads, scores) sees only these.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import TaskConfig
from pipeline.datasets.pixels import image_size  # as shown (EXIF orientation); readers size by it
from pipeline.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
OBJECT_TASK = TaskConfig()  # the default task: whole images, their objects
# Boxes may overshoot the image by this much (pixels) and are clipped to it: tools disagree on
# 0- or 1-based corners (CVAT writes VOC's xmin 0-based) and round floats; beyond, refused.
BOX_SLACK = 1.0


@dataclass(frozen=True)
class Sample:
    sample_id: str
    image_path: Path
    width: int  # of the image
    height: int
    region: tuple[float, float, float, float]  # the patches cover this box of the image
    boxes: np.ndarray  # [M, 4] float32 x0, y0, x1, y1 (0-based, ends exclusive): label patches
    box_classes: np.ndarray  # [M] int, index into the dataset's classes
    difficult: np.ndarray  # [M] bool: never positive, never background (ignored)
    error: str | None = None  # its files are bad (load with skip_bad): extract skips it
    labelled: bool = True  # False: not annotated yet (a Label Studio task): labels no patch


def whole_image(sample_id: str, path: Path, width: int, height: int, objects=()) -> Sample:
    """A sample covering its whole image; `objects` are (class index, box, difficult)."""
    boxes = np.array([box for _, box, _ in objects], dtype=np.float32).reshape(-1, 4)
    return Sample(
        sample_id,
        path,
        width,
        height,
        (0.0, 0.0, float(width), float(height)),
        boxes,
        np.array([c for c, _, _ in objects], dtype=np.int64),
        np.array([d for _, _, d in objects], dtype=bool),
    )


def image_sample(sample_id: str, path: Path, *, skip_bad: bool, check=None) -> Sample:
    """The whole-image sample of an image file, its size from the header; an unreadable file
    (or one `check(path)` refuses: paths.contained) raises, or with `skip_bad` stands in its
    place as a broken sample."""
    try:
        if check is not None:
            check(path)
        return whole_image(sample_id, path, *image_size(path))
    except DataError as exc:
        if not skip_bad:
            raise
        return broken(sample_id, path, str(exc))


def broken(sample_id: str, path: Path, error: str) -> Sample:
    """The place of a sample whose files are bad: extract skips it (--on-error skip)."""
    empty = np.empty(0)
    return Sample(sample_id, path, 0, 0, (0.0, 0.0, 0.0, 0.0), empty.reshape(0, 4),
                  empty.astype(np.int64), empty.astype(bool), error=error)  # fmt: skip


@dataclass(frozen=True)
class SplitData:
    classes: tuple[str, ...]
    samples: list[Sample]
    truth: np.ndarray | None  # [n_samples, n_classes] int8 1 / -1 / 0; None: no labels
    boxes: bool  # whether boxes label the patches; False: image-level labels only

    def truth_or_unknown(self) -> np.ndarray:
        """The truth, or all 0 (unknown: what a shard of an unlabelled split records)."""
        if self.truth is not None:
            return self.truth
        return np.zeros((len(self.samples), len(self.classes)), dtype=np.int8)


class Dataset(abc.ABC):
    """A labelled (or unlabelled) image collection with a fixed class list.

    `kind` names the format (the KIND of --data KIND:PATH); `root` is where it was found.
    """

    kind: str = ""
    has_boxes: bool = True  # False for readers of image-level labels only

    def __init__(self, root: Path):
        self.root = root

    def __str__(self) -> str:
        return f"{self.kind}:{self.root}"

    @property
    @abc.abstractmethod
    def classes(self) -> tuple[str, ...]:
        """The class list of the whole dataset, the same for every split (a head trained on
        one split scores the others column for column)."""

    @abc.abstractmethod
    def splits(self) -> tuple[str, ...]:
        """The names of the splits this dataset has."""

    @abc.abstractmethod
    def load(
        self,
        split: str,
        *,
        task: TaskConfig = OBJECT_TASK,
        limit: int | None = None,
        skip_bad: bool = False,
    ) -> SplitData:
        """The samples of `split` (the first `limit`), their truth. With `skip_bad`, a sample
        whose files are bad stands in its place carrying the error (see `broken`), so that
        shard boundaries stay those of a clean run."""

    def task_classes(self, task: TaskConfig) -> tuple[str, ...]:
        """The classes a task's samples are labelled with (the dataset's, for objects)."""
        if task.name != "object":
            raise DataError(
                f"--task {task.name}: {self} is a {self.kind} dataset; the action task needs a "
                "VOC 2012 Action tree (--data voc:DIR)"
            )
        return self.classes

    def source(self) -> str:
        """Where the dataset is, resolved (and where its images are, when given apart): it
        tells two datasets' caches apart, so one never overwrites the other's shards."""
        image_dir = getattr(self, "image_dir", None)
        where = str(Path(self.root).resolve())
        return f"{where} (images: {Path(image_dir).resolve()})" if image_dir else where

    def data_key(self, task: TaskConfig) -> dict | None:
        """The dataset's part of the cache fingerprint: its kind and class list, so that two
        datasets never share a cache. None keeps the digests caches of PASCAL VOC had before
        datasets were keyed (see VocDataset)."""
        return {"kind": self.kind, "classes": list(self.task_classes(task))}

    def left_out(self, split: str) -> str:
        """What the reader left out of `split` and why, for the summary line ("" for nothing)."""
        return ""

    def attrs(self) -> dict:
        """Extra shard attributes (the VOC year, for the evaluation server's file names)."""
        return {}

    def check_split(self, split: str) -> None:
        """Refuse a split this dataset does not have, naming those it has."""
        if split not in self.splits():
            raise DataError(
                f"{self.root}: unknown split {split!r}; this {self.kind} dataset has "
                f"{', '.join(self.splits()) or 'none'}"
            )


def check_box(
    box: tuple[float, float, float, float],
    width: int,
    height: int,
    where: str,
    what: str,
    *,
    fix: str = "fix it",
) -> tuple[float, float, float, float]:
    """A 0-based box clipped to the image when it overshoots by at most BOX_SLACK pixels;
    DataError `<where>: box of <what> is empty or outside the WxH image; <fix>` otherwise."""
    x0, y0, x1, y1 = box
    inside = (
        -BOX_SLACK <= x0 < x1 <= width + BOX_SLACK and -BOX_SLACK <= y0 < y1 <= height + BOX_SLACK
    )
    clipped = (max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height)))
    if not inside or clipped[0] >= clipped[2] or clipped[1] >= clipped[3]:
        raise DataError(
            f"{where}: box of {what} is empty or outside the {width}x{height} image; {fix}"
        )
    return clipped


def labels_truth(
    labels: list[set[str]], classes: tuple[str, ...], difficult: list[set[str]] | None = None
) -> np.ndarray:
    """[n, C] int8 truth from the class names present in each image: 1 present, -1 absent,
    0 where only a difficult (crowd) instance is present."""
    truth = np.full((len(labels), len(classes)), -1, dtype=np.int8)
    index = {name: c for c, name in enumerate(classes)}
    for i, names in enumerate(labels):
        for name in (difficult[i] if difficult else set()) - names:
            truth[i, index[name]] = 0
        for name in names:
            truth[i, index[name]] = 1
    return truth


def keep_by_role(split: str, labelled: bool = True) -> str:
    """The patches "auto" keeps: "sample" (object patches and a label-blind sample of the
    rest) for a labelled training split by its name (train, trainval, train2017, training...),
    "all" for any other split (val, valid, test, test2017) or one without labels."""
    return "sample" if labelled and split.lower().startswith("train") else "all"


def find_images(folder: Path) -> list[Path]:
    """Image files under `folder` (recursively, by suffix), sorted."""
    return sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
