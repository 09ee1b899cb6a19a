"""Label Studio's own JSON export (its default "JSON": a list of tasks), one file, two splits:
`train`, the tasks with an annotation, and `tasks`, every task (those without an annotation
have unknown truth): what the Label Studio backend extracts once and predicts on.

A task's annotation is its most recently updated one that is not cancelled: `choices` label
the image, `rectanglelabels` are boxes (percent of the image) that make their class present;
other results are ignored. Every field the reader uses is checked when the file is read
(`_checked_tasks`); images resolve inside ROOT (docs/datasets.md#label-studio).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np

from pipeline.datasets.base import (
    OBJECT_TASK,
    Dataset,
    SplitData,
    broken,
    check_box,
    image_size,
    labels_truth,
    whole_image,
)
from pipeline.datasets.json_fields import KINDS, read_json, short, typed
from pipeline.datasets.paths import contained
from pipeline.errors import DataError

TRAIN, TASKS = "train", "tasks"
CHOICES, RECTANGLES = "choices", "rectanglelabels"
BOX_FIELDS = ("x", "y", "width", "height")
FIX = "fix it in Label Studio and export again"


@dataclass(frozen=True)
class ExportTask:
    """One task as the reader uses it: its id, its image (the data value), and the results of
    its annotation (None: no annotation, or every one cancelled)."""

    task_id: int | str
    image: str
    results: tuple[dict, ...] | None

    @property
    def name(self) -> str:
        return f"task {self.task_id}"


def _read(path: Path) -> list:
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: not a list of tasks; export the project as Label Studio's JSON")
    return data


class _Checker:
    """One line naming the file, the task and the fix for a field of the wrong type."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, where: str, problem: str, fix: str = "fix or re-export the file"):
        raise DataError(f"{self.path}: {where} {problem}; {fix}")

    def field(self, entry: dict, key: str, kind: str, where: str, default=None):
        """Field `key` of `entry` as `kind` (json_fields.typed); `default` where it is absent
        or null (None: it must be there)."""
        value = entry.get(key)
        if value is None and default is not None:
            return default
        checked = typed(value, kind)
        if checked is None:
            self.fail(where, f"{key!r} is {short(value)}, not {KINDS[kind]}")
        return checked

    def objects(self, entry: dict, key: str, where: str) -> list[dict]:
        """The list of objects `entry[key]` (absent or null: empty)."""
        items = entry.get(key) or []
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            self.fail(where, f"{key!r} is {short(items)}, not a list of objects")
        return items


def _image_value(data: dict, image_key: str | None, check: _Checker, where: str) -> str:
    """The task's image: `data[image_key]`; by default `data["image"]`, else its only string."""
    if image_key is None:
        strings = [k for k, v in data.items() if isinstance(v, str)]
        if "image" not in data and len(strings) != 1:
            listed = ", ".join(map(repr, strings)) or "none"
            check.fail(
                where,
                f"data has no 'image' field and its strings ({listed}) do not tell which is",
                "pass image_key, the field of the image in the labeling config",
            )
        image_key = "image" if "image" in data else strings[0]
    value = data.get(image_key)
    if not isinstance(value, str) or not value.strip():
        check.fail(where, f"data {image_key!r} is {short(value)}, not an image path or URL")
    return value.strip()


def _checked_results(annotation: dict, check: _Checker, where: str) -> tuple[dict, ...]:
    """The choices and rectangles of an annotation, their fields checked and typed."""
    results = []
    for result in check.objects(annotation, "result", where):
        kind = result.get("type")
        if kind not in (CHOICES, RECTANGLES):
            continue
        value = result.get("value")
        if not isinstance(value, dict):
            check.fail(where, f"a {kind} result's 'value' is {short(value)}, not an object")
        names = value.get(kind)
        if not isinstance(names, list) or any(typed(n, "name") is None for n in names):
            check.fail(where, f"a {kind} result's {kind!r} is {short(names)}, not a list of names")
        checked = {"type": kind, "labels": [typed(n, "name") for n in names]}
        if kind == RECTANGLES:
            checked |= {k: check.field(value, k, "number", where) for k in BOX_FIELDS}
            checked["rotation"] = check.field(value, "rotation", "number", where, default=0.0)
        results.append(checked)
    return tuple(results)


def _updated(annotation: dict) -> str:
    """When an annotation was last changed: its ISO time (updated, else created; "" if none)."""
    times = (annotation.get("updated_at"), annotation.get("created_at"))
    return next((t for t in times if isinstance(t, str)), "")


def _chosen(annotations: list[dict]) -> dict | None:
    """The most recently updated annotation that is not cancelled (the last listed of a tie)."""
    kept = [(_updated(a), i, a) for i, a in enumerate(annotations) if not a.get("was_cancelled")]
    return max(kept, key=lambda entry: entry[:2])[2] if kept else None


def _checked_tasks(entries: list, path: Path, image_key: str | None) -> list[ExportTask]:
    """The tasks of an export in task-id order, every field the reader uses checked; a task id
    appears once."""
    check = _Checker(path)
    tasks, seen = [], {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            check.fail(f"tasks[{i}]", f"is {short(entry)}, not an object")
        task_id = check.field(entry, "id", "id", f"tasks[{i}]")
        where = f"task {task_id}"
        first = seen.setdefault(str(task_id), i)  # its sample id: 4 and "4" are one
        if first != i:
            check.fail(
                where, f"appears twice (tasks[{first}] and tasks[{i}])", "give each task its own id"
            )
        data = entry.get("data")
        if not isinstance(data, dict):
            check.fail(where, f"'data' is {short(data)}, not an object")
        image = _image_value(data, image_key, check, where)
        annotation = _chosen(check.objects(entry, "annotations", where))
        results = None if annotation is None else _checked_results(annotation, check, where)
        tasks.append(ExportTask(task_id, image, results))
    return sorted(tasks, key=lambda t: (isinstance(t.task_id, str), t.task_id))


def image_file(value: str, root: Path, listed_in: Path, where: str) -> Path:
    """The file of a task's image under `root`: `/data/local-files/?d=REL` is ROOT/REL,
    `/data/upload/REST` ROOT/upload/REST (else ROOT/REST), a Label Studio URL of any host the
    same by its path, a relative path ROOT/path; other URLs are refused (not downloaded)."""
    url = urlparse(value)
    if "://" in value:
        if url.scheme in ("http", "https") and url.path.startswith("/data/"):
            return image_file(value[value.index(url.path) :], root, listed_in, where)
        raise DataError(
            f"{listed_in}: {where} image {value} is not a local file; download the images "
            f"under {root} and export with their paths (or local-files URLs)"
        )
    if url.path.rstrip("/") == "/data/local-files":
        relative = parse_qs(url.query, keep_blank_values=True).get("d", [""])[-1]
        if not relative:
            raise DataError(f"{listed_in}: {where} image {value} names no file (?d=); {FIX}")
        return root / relative
    if value.startswith("/data/upload/"):
        rest = unquote(url.path.removeprefix("/data/upload/"))
        uploaded = root / "upload" / rest
        return uploaded if uploaded.is_file() else root / rest
    return root / value.replace("\\", "/")


class LabelStudioDataset(Dataset):
    kind = "labelstudio"

    def __init__(
        self,
        path: str | Path,
        image_dir: str | Path | None = None,
        *,
        classes: tuple[str, ...] | list[str] | None = None,
        image_key: str | None = None,
        boxes: bool | None = None,
    ):
        """`classes`: the labeling config's labels (default: the labels annotated);
        `image_key`: the data field of the image (default "image", else the only string);
        `boxes`: whether the config draws boxes (default: whether an annotation has one)."""
        super().__init__(Path(path).expanduser())
        if not self.root.is_file():
            raise DataError(f"{self.root}: Label Studio JSON export not found; check --data")
        self.image_dir = Path(image_dir).expanduser() if image_dir else None
        self.given_classes = tuple(classes) if classes is not None else None
        self.image_key, self.given_boxes = image_key, boxes

    @property
    def images_root(self) -> Path:
        """ROOT: where the images are, none outside it (image_dir, else the export's folder)."""
        return self.image_dir or self.root.parent

    @cached_property
    def tasks(self) -> list[ExportTask]:
        return _checked_tasks(_read(self.root), self.root, self.image_key)

    @cached_property
    def skipped(self) -> tuple[str, ...]:
        """The ids of the tasks `train` leaves out: no annotation, or every one cancelled."""
        return tuple(str(t.task_id) for t in self.tasks if t.results is None)

    def left_out(self, split: str) -> str:
        if split != TRAIN or not self.skipped:
            return ""
        n = len(self.skipped)
        return (f"{n} task{'s' if n != 1 else ''} without an annotation left out "
                f"(split {TASKS!r} has every task)")  # fmt: skip

    def _results(self) -> list[dict]:
        return [r for t in self.tasks for r in t.results or ()]

    @cached_property
    def classes(self) -> tuple[str, ...]:
        if self.given_classes is not None:
            return self.given_classes
        names = sorted({name for result in self._results() for name in result["labels"]})
        if not names:
            raise DataError(
                f"{self.root}: no choice or rectangle label in any annotation; annotate "
                "tasks in Label Studio and export again"
            )
        return tuple(names)

    @cached_property
    def has_boxes(self) -> bool:
        """Whether rectangles label the patches (False: choices alone, image-level labels)."""
        if self.given_boxes is not None:
            return self.given_boxes
        return any(result["type"] == RECTANGLES for result in self._results())

    def splits(self) -> tuple[str, ...]:
        return (TRAIN, TASKS)

    def load(self, split, *, task=OBJECT_TASK, limit=None, skip_bad=False) -> SplitData:
        self.task_classes(task)
        self.check_split(split)
        tasks = [t for t in self.tasks if split == TASKS or t.results is not None][:limit]
        if not tasks:
            what = "no task" if split == TASKS else f"no annotated task of {len(self.tasks)}"
            raise DataError(
                f"{self.root}: split {split!r} has {what}; annotate tasks in Label Studio "
                "and export again"
            )
        samples, present = [], []
        for one in tasks:
            try:
                sample, labels = self._sample(one)
            except DataError as exc:
                if not skip_bad:
                    raise
                sample, labels = broken(str(one.task_id), self.images_root, str(exc)), set()
            samples.append(sample if one.results is not None else replace(sample, labelled=False))
            present.append(labels)
        truth = labels_truth(present, self.classes)
        truth[np.array([t.results is None for t in tasks])] = 0  # unknown: left out of AP
        return SplitData(self.classes, samples, truth, boxes=self.has_boxes)

    def _sample(self, one: ExportTask):
        """A task's whole-image sample and the class names its annotation makes present."""
        root, where = self.images_root, one.name
        fix = f"keep the images under {root} and fix the task's image"
        file = contained(image_file(one.image, root, self.root, where), root, self.root, fix)
        if not file.is_file():
            raise DataError(
                f"{file}: {where} of {self.root.name} names it but it is missing; pass "
                "--image-dir DIR where the images are, or restore the file"
            )
        width, height = image_size(file)
        objects, labels = [], set()
        for result in one.results or ():
            for name in result["labels"]:
                if name not in self.classes:
                    raise DataError(
                        f"{self.root}: {where} has the label {name!r}, not among the classes "
                        f"({', '.join(self.classes)}); add it to the labeling config or relabel"
                    )
                labels.add(name)
                if result["type"] == RECTANGLES:
                    box = self._box(result, width, height, where, name)
                    objects.append((self.classes.index(name), box, False))
        return whole_image(str(one.task_id), file, width, height, objects), labels

    def _box(self, result: dict, width: int, height: int, where: str, name: str):
        """A rectangle's percent of the image as pixels of the image as read, clipped."""
        if result["rotation"] != 0:
            raise DataError(
                f"{self.root}: {where}: rotated boxes are not supported (its box of {name!r} is "
                f"rotated {result['rotation']:g} degrees); redraw it unrotated in Label Studio "
                "and export again"
            )
        x, y, w, h = (result[k] for k in BOX_FIELDS)
        box = (x * width / 100, y * height / 100, (x + w) * width / 100, (y + h) * height / 100)
        return check_box(box, width, height, f"{self.root}: {where}", repr(name), fix=FIX)
