"""The ML backend's state behind its endpoints: the projects Label Studio set up, and one
worker thread that refreshes them (fetch, extract, refit, predict). Events coalesce: however
many arrive while a refresh runs, one more refresh follows; a refresh that fails leaves the
previous predictions serving and says why (the log, /health)."""

from __future__ import annotations

import logging
import threading
import time

from pipeline.errors import DataError, MidlevelError
from pipeline.labelling.project import COLD_START, ProjectModel, ProjectSettings
from pipeline.labelling.schema import read_schema

# the events that change the tasks or what the head learns from: Label Studio 1.23 sends each
# annotation's save as START_TRAINING then ANNOTATION_CREATED/UPDATED (one refresh: they
# coalesce), a deletion as ANNOTATIONS_DELETED, an import as TASKS_CREATED, a new labeling
# config as PROJECT_UPDATED (tests/label_studio/recorded/)
REFRESH_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATION_DELETED",
                  "ANNOTATIONS_CREATED", "ANNOTATIONS_DELETED", "START_TRAINING",
                  "TASKS_CREATED", "TASKS_DELETED", "PROJECT_UPDATED")  # fmt: skip
log = logging.getLogger("midlevel.label_studio")


class Backend:
    """Projects by id; `predict` answers from the current predictions, waiting up to
    `predict_wait` seconds for a refresh to reach tasks it has not seen."""

    def __init__(self, settings: ProjectSettings, remote, *, predict_wait: float = 30.0):
        self.settings, self.remote, self.predict_wait = settings, remote, predict_wait
        self.projects: dict[int, ProjectModel] = {}
        self.status: dict[int, dict] = {}
        self._wanted: set[int] = set()
        self._started: dict[int, int] = {}
        self._finished: dict[int, int] = {}
        self._change = threading.Condition()
        self._stopping = False
        self._worker = threading.Thread(target=self._work, name="label-studio-fit", daemon=True)

    def start(self) -> Backend:
        self._worker.start()
        return self

    def stop(self) -> None:
        with self._change:
            self._stopping = True
            self._change.notify_all()
        if self._worker.is_alive():
            self._worker.join()

    def setup(self, project: int, label_config: str) -> str:
        """The project's model (made, or made again for a changed config) and its version;
        DataError for a config it cannot serve."""
        return self._project(project, label_config).predictions.version

    def predict(self, project: int, label_config: str | None, tasks: list[dict]) -> list:
        """One entry per task, in order: [prediction] where known, [] where not (yet)."""
        model = self._project(project, label_config)
        ids = [_task_id(task) for task in tasks]
        if any(i not in model.predictions.by_task for i in ids):
            ticket = self.want(project)
            self._wait(project, ticket, self.predict_wait)
        by_task = model.predictions.by_task
        missing = sum(i not in by_task for i in ids)
        if missing:
            log.info("project %d: %d of %d tasks not predicted yet (their images are being "
                     "fetched and extracted); retrieve predictions again later",
                     project, missing, len(ids))  # fmt: skip
        return [[by_task[i]] if i in by_task else [] for i in ids]

    def event(self, action: str, project: int, label_config: str | None) -> bool:
        """A webhook event: those that change the annotations refresh the project (after
        the running refresh, once however many arrive); others are ignored (False)."""
        if action not in REFRESH_EVENTS:
            return False
        if project not in self.projects and label_config is None:
            raise DataError(f"project {project}: not set up; connect the model in Label Studio")
        self._project(project, label_config)
        self.want(project)
        return True

    def health(self) -> dict:
        return {
            str(p): {
                **self.status.get(p, {}),
                "queued": p in self._wanted,
                "model_version": m.predictions.version,
                "tasks_predicted": len(m.predictions.by_task),
                "tasks_annotated": m.predictions.annotated,
            }
            for p, m in self.projects.items()
        }

    def want(self, project: int) -> int:
        """Ask for a refresh of `project`; the number of the refresh that will see this ask."""
        with self._change:
            self._wanted.add(project)
            self._change.notify_all()
            return self._started.get(project, 0) + 1

    def wait_idle(self, timeout: float) -> bool:
        """Whether every asked refresh finished within `timeout` s (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        with self._change:
            while self._wanted or any(
                self._started.get(p, 0) > self._finished.get(p, 0) for p in self.projects
            ):
                if not self._change.wait(deadline - time.monotonic()):
                    return False
        return True

    def _wait(self, project: int, ticket: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._change:
            while self._finished.get(project, 0) < ticket and not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0 or not self._change.wait(left):
                    return

    def _project(self, project: int, label_config: str | None) -> ProjectModel:
        model = self.projects.get(project)
        if label_config is None:
            if model is None:
                raise DataError(f"project {project}: not set up; connect the model in Label Studio")
            return model
        schema = read_schema(label_config)
        if model is None or model.schema != schema:
            model = ProjectModel(project, schema, self.settings, self.remote)
            with self._change:
                self.projects[project] = model
                self.status[project] = {"state": "waiting", "refreshes": 0, "last_error": None}
            self.want(project)
        return model

    def _work(self) -> None:
        while True:
            with self._change:
                while not self._wanted and not self._stopping:
                    self._change.wait()
                if self._stopping:
                    return
                project = min(self._wanted)
                self._wanted.discard(project)
                self._started[project] = self._started.get(project, 0) + 1
                model, status = self.projects[project], self.status[project]
                status["state"] = "refreshing"
            self._refresh(project, model, status)
            with self._change:
                self._finished[project] = self._started[project]
                status["state"] = "idle"
                self._change.notify_all()

    def _refresh(self, project: int, model: ProjectModel, status: dict) -> None:
        """One refresh; whatever fails, the previous predictions keep serving."""
        try:
            model.refresh()
            status["last_error"] = model.fit_problem
            status["refreshes"] += 1
        except MidlevelError as exc:
            status["last_error"] = " ".join(str(exc).split())
            log.error("project %d: refresh failed, %s still serves: %s", project,
                      model.predictions.version or COLD_START, status["last_error"])  # fmt: skip
        except Exception as exc:  # a bug: its traceback in the log, the server goes on
            status["last_error"] = f"internal error: {type(exc).__name__}: {exc}"
            log.exception("project %d: refresh failed", project)


def _task_id(task) -> int:
    value = task.get("id") if isinstance(task, dict) else None
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(
            f"a task without an integer 'id' ({str(task)[:80]}); send Label Studio's tasks"
        )
    return value


def project_id(value) -> int:
    """Label Studio's project reference: 3, "3", "3.1733577600" (id.timestamp) or {"id": 3}."""
    if isinstance(value, dict):
        value = value.get("id")
    text = str(value) if isinstance(value, int | str) and not isinstance(value, bool) else ""
    head = text.split(".", 1)[0]
    if not head.isdigit() or len(head) > 12:
        raise DataError(f"project {str(value)[:40]!r}: not a Label Studio project id")
    return int(head)
