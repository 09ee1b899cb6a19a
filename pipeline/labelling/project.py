"""One Label Studio project as the backend sees it: its tasks' features cached once (the split
`tasks` of its own Label Studio export), a head refitted from that cache as annotations
arrive, and every task's prediction computed once per head: pre-labels and a priority."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.config import ExtractConfig, FitConfig, same_cache
from pipeline.errors import MidlevelError
from pipeline.io import write_atomically
from pipeline.labelling.schema import LabelingSchema
from pipeline.store.head_files import record_path

SPLIT = "tasks"  # the Label Studio reader's split of every task, annotated or not
COLD_START = "cold-start"  # model_version before any head: a label-free priority, no labels
# images per shard: an annotation relabels its task's shard, rewriting the rows of 8 tasks
# (not extract's 64); tasks imported later run the net alone, the rows of the others reused
SHARD_IMAGES = 8
log = logging.getLogger("midlevel.label_studio")


@dataclass(frozen=True)
class ProjectSettings:
    """What every project of one backend shares."""

    workdir: Path
    features: ExtractConfig  # backbone, grid, device...; data, split and cache_dir per project
    threshold: float = 0.5  # a class is pre-labelled at this image score or above
    strategy: str = "auto"  # suggest's strategy: the labelling priority


@dataclass(frozen=True)
class Predictions:
    """Every task's prediction as Label Studio takes it, for one model_version."""

    version: str
    by_task: dict[int, dict]
    annotated: int = 0


class ProjectModel:
    """A project's files (`<workdir>/project-<id>/`: export.json, media/, cache/) and the
    predictions of its current head; `refresh` runs in the backend's one worker thread."""

    def __init__(self, project: int, schema: LabelingSchema, settings: ProjectSettings, remote):
        self.project, self.schema, self.settings, self.remote = project, schema, settings, remote
        self.folder = Path(settings.workdir) / f"project-{project}"
        self.export_file, self.media = self.folder / "export.json", self.folder / "media"
        self.predictions = Predictions(COLD_START, {})
        self.head_path: Path | None = None  # the head serving (kept when a refit fails)
        self.fit_problem: str | None = None  # why the last refit made no head
        self.fitted_on = b""  # digest of the annotations the last fit saw
        self.published: tuple[str, set[int]] = ("", set())  # version, tasks Label Studio has
        self.head = "mlp" if schema.boxes else "weak"  # boxes train the paper's head

    def extract_config(self) -> ExtractConfig:
        return replace(
            self.settings.features, data=f"labelstudio:{self.export_file}", split=SPLIT,
            image_dir=str(self.media), cache_dir=str(self.folder / "cache"), keep="all",
            on_error="skip", images_per_shard=SHARD_IMAGES,
        )  # fmt: skip

    def refresh(self) -> Predictions:
        """Label Studio's tasks now -> their images fetched, features extracted (new images
        only; new annotations relabel shards), the head refitted, every task predicted."""
        from pipeline.features.engine import extract_split

        started = time.perf_counter()
        tasks = self.remote.export(self.project)
        unfetched = self._fetch_images(tasks)
        write_atomically(self.export_file, _json_bytes(tasks))
        dataset = self.dataset()
        extracted = extract_split(self.extract_config(), dataset=dataset)
        annotated = len(dataset.tasks) - len(dataset.skipped)  # the reader's rule, no image read
        labels = hashlib.sha256(_json_bytes([[t.get("id"), t.get("annotations")] for t in tasks]))
        changed = extracted.images or extracted.relabelled or labels.digest() != self.fitted_on
        if annotated and (changed or self.head_path is None):  # the same data: the same head
            self._fit(dataset)
            self.fitted_on = labels.digest()
        self.predictions = self._predict(dataset, self.head_path, annotated)
        self._publish()
        log.info(
            "project %d: %d tasks (%d annotated%s), %d images extracted, %d shards relabelled, "
            "model_version %s, in %.1f s",
            self.project, len(tasks), annotated,
            f", {unfetched} images not fetched" if unfetched else "",
            extracted.images, extracted.relabelled, self.predictions.version,
            time.perf_counter() - started,
        )  # fmt: skip
        return self.predictions

    def _publish(self) -> None:
        """Push the predictions Label Studio has not got yet (all of them for a new head, else
        the new tasks'); Label Studio gone: one log line, they follow the next refresh."""
        version, by_task = self.predictions.version, self.predictions.by_task
        if version != self.published[0]:
            self.published = (version, set())
        fresh = {task: made for task, made in by_task.items() if task not in self.published[1]}
        if not fresh:
            return
        try:
            self.remote.publish(self.project, version, fresh)
        except MidlevelError as exc:
            log.warning("project %d: %s; /predict still answers", self.project, exc)
            return
        self.published[1].update(fresh)

    def dataset(self):
        from pipeline.datasets.labelstudio import LabelStudioDataset

        return LabelStudioDataset(
            self.export_file, self.media, classes=self.schema.classes,
            image_key=self.schema.image_key, boxes=self.schema.boxes,
        )  # fmt: skip

    def _fetch_images(self, tasks: list[dict]) -> int:
        """Download every task's image not fetched yet; those refused or failing are logged
        and left out (the reader skips them), never fatal."""
        failed = 0
        for task in tasks:
            reference = _image_reference(task, self.schema.image_key)
            try:
                self.remote.fetch_image(reference, self.media)
            except MidlevelError as exc:
                failed += 1
                log.warning("project %d: task %s: %s", self.project, task.get("id"), exc)
        return failed

    def _fit(self, dataset) -> None:
        """The head refitted on the annotated tasks, saved beside their features (a file of
        its own per fit: the serving one is never overwritten); when it cannot learn yet
        (every annotation names one class...) the previous head serves, and why is kept."""
        from pipeline.training.fit import fit_head

        config = self.fit_config()
        path = self.folder / "heads" / f"{self.head}-{time.time_ns()}.safetensors"
        try:
            fit_head(config, dataset=dataset, path=path)
        except MidlevelError as exc:
            self.fit_problem = str(exc)
            log.warning("project %d: no new head, the previous one serves: %s", self.project, exc)
            return
        previous, self.head_path, self.fit_problem = self.head_path, path, None
        if previous is not None:
            previous.unlink(missing_ok=True)
            record_path(previous).unlink(missing_ok=True)

    def fit_config(self) -> FitConfig:
        return FitConfig(**same_cache(self.extract_config()), split=SPLIT, head=self.head)

    def _predict(self, dataset, head_path: Path | None, annotated: int) -> Predictions:
        """Each task's pre-labels (by the head) and priority (suggest's strategy)."""
        from pipeline.labelling.predictions import task_predictions

        version = COLD_START
        if head_path is not None:
            digest = hashlib.sha256(head_path.read_bytes()).hexdigest()[:12]
            version = f"midlevel-{self.head}-{digest}"
        by_task = task_predictions(
            self.fit_config(), dataset, head_path, self.schema, version,
            threshold=self.settings.threshold, strategy=self.settings.strategy,
        )  # fmt: skip
        return Predictions(version, by_task, annotated)


def _image_reference(task: dict, key: str) -> str:
    data = task.get("data") if isinstance(task, dict) else None
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, str) else ""


def _json_bytes(tasks: list[dict]) -> bytes:
    return json.dumps(tasks, ensure_ascii=False).encode()
