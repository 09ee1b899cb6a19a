"""A real Label Studio for tests: started offline from the executable MIDLEVEL_LABEL_STUDIO names,
on a free local port with its own SQLite data, and driven through label_studio_sdk as a user would."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pytest

EXECUTABLE_VARIABLE = "MIDLEVEL_LABEL_STUDIO"
START_TIMEOUT_S = 300
STOP_TIMEOUT_S = 20
LOG_TAIL_CHARS = 4000
ADMIN_EMAIL = "admin@midlevel.test"
ADMIN_PASSWORD = "midlevel-harness"
# A legacy token ("Authorization: Token ..."): the one LS hands an ML backend in /setup's
# access_token, so the backend fetches /data/local-files/ with it. `start --user-token` sets it,
# `--enable-legacy-api-token` lets the organisation accept it.
ADMIN_TOKEN = "midlevel0harness0token"

# Label Studio reads every setting X from LABEL_STUDIO_X first, so these win over a bare X in the
# caller's environment; any LABEL_STUDIO_* or HEARTEX_* already there is left out.
OFFLINE_SETTINGS = {
    "SENTRY_DSN": "",  # no crash reports (the sentry-sdk it installs also rejects its options)
    "FRONTEND_SENTRY_DSN": "",
    "LATEST_VERSION_CHECK": "false",  # no PyPI query while its modules load
    "COLLECT_ANALYTICS": "false",
    "CONVERTER_DOWNLOAD_RESOURCES": "false",
    "ML_BLOCK_LOCAL_IP": "false",  # the backends under test listen on 127.0.0.1 ...
    "SSRF_PROTECTION_ENABLED": "false",  # ... and so does their /webhook
    "LOCAL_FILES_SERVING_ENABLED": "true",
}
# Settings read without a prefix that a caller's shell may hold (HOST would make task URLs absolute).
UNPREFIXED_SETTINGS = ("HOST", "PORT", "USERNAME", "PASSWORD", "USER_TOKEN", "DATABASE_NAME")


def label_studio_executable() -> Path:
    """The executable MIDLEVEL_LABEL_STUDIO names (a path, or a name on PATH); the test is
    skipped without one."""
    named = os.environ.get(EXECUTABLE_VARIABLE)
    if not named:
        pytest.skip(
            f"{EXECUTABLE_VARIABLE} is not set (the label-studio executable to test against)"
        )
    found = shutil.which(named)
    if found is None:
        pytest.skip(f"{EXECUTABLE_VARIABLE}={named} is not an executable")
    return Path(found).resolve()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class LabelStudioServer:
    """A running Label Studio: its URL, the admin's token, an SDK client, and the few things a
    test does with it, each through the same API the web app calls."""

    url: str
    token: str
    files_root: Path

    @cached_property
    def client(self):
        from label_studio_sdk import LabelStudio

        return LabelStudio(base_url=self.url, api_key=self.token)

    def create_project(self, title: str, label_config: str) -> int:
        return self.client.projects.create(title=title, label_config=label_config).id

    def import_local_files(self, project_id: int, folder: Path) -> list[int]:
        """Tasks for the files in `folder` (a subfolder of files_root, as LS demands) through a
        synced local-files import storage; each task's data points at /data/local-files/?d=..."""
        folder = Path(folder).resolve()
        if self.files_root not in folder.parents:
            raise ValueError(
                f"{folder} is not a subfolder of the served files root {self.files_root}"
            )
        existing = set(self.task_ids(project_id))
        storage = self.client.import_storage.local.create(
            project=project_id,
            path=str(folder),
            use_blob_urls=True,  # "Treat every bucket object as a source file"
            title=folder.name,
        )
        synced = self.client.import_storage.local.sync(id=storage.id)
        if synced.status != "completed":
            raise RuntimeError(f"local storage sync ended {synced.status}: {synced.traceback}")
        return [task_id for task_id in self.task_ids(project_id) if task_id not in existing]

    def annotate(self, task_id: int, result: list[dict]) -> int:
        return self.client.annotations.create(id=task_id, result=result).id

    def connect_backend(self, project_id: int, url: str) -> int:
        """Settings -> Model: add the backend (LS calls its /health and /setup and adds a /webhook
        for every action), then "Start model training on annotation submission" (stored as
        min_annotations_to_start_training=1), which makes each saved annotation call the backend's
        training (POST /webhook, action START_TRAINING)."""
        backend = self.client.ml.create(project=project_id, url=url, title="midlevel")
        self.client.projects.update(id=project_id, min_annotations_to_start_training=1)
        return backend.id

    def retrieve_predictions(self, project_id: int, task_ids: list[int]) -> None:
        """The data manager's "Retrieve Predictions" on the given tasks."""
        self.client.actions.create(
            id="retrieve_tasks_predictions",
            project=project_id,
            selected_items={"all": False, "included": list(task_ids)},
        )

    def tasks(self, project_id: int) -> list:
        """The project's tasks with their annotations and predictions."""
        return list(self.client.tasks.list(project=project_id, fields="all"))

    def task_ids(self, project_id: int) -> list[int]:
        return [task.id for task in self.client.tasks.list(project=project_id)]


def label_studio_environment(data_dir: Path, files_root: Path) -> dict[str, str]:
    settings = {
        **OFFLINE_SETTINGS,
        "BASE_DATA_DIR": str(data_dir),
        "LOCAL_FILES_DOCUMENT_ROOT": str(files_root),
    }
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("LABEL_STUDIO_", "HEARTEX_")) and name not in UNPREFIXED_SETTINGS
    }
    return inherited | {f"LABEL_STUDIO_{name}": value for name, value in settings.items()}


def log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-LOG_TAIL_CHARS:] if log.exists() else "(no log)"


def wait_until_up(process: subprocess.Popen, url: str, log: Path) -> None:
    """Poll /health until it answers UP; fail with the log's tail on exit or after the timeout."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"Label Studio exited with {process.returncode} while starting:\n{log_tail(log)}"
            )
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(f"{url}/health", timeout=5) as response,
        ):
            if response.status == 200:
                return
        time.sleep(1)
    raise RuntimeError(f"Label Studio did not answer in {START_TIMEOUT_S} s:\n{log_tail(log)}")


def stop(process: subprocess.Popen) -> None:
    """Terminate the whole process group; kill it when it does not go in STOP_TIMEOUT_S."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def running_label_studio(workdir: Path, files_root: Path) -> Iterator[LabelStudioServer]:
    """A real Label Studio on 127.0.0.1 with its data under `workdir` and local files served from
    `files_root`, stopped on exit however the block ends."""
    executable = label_studio_executable()
    data_dir = Path(workdir) / "label-studio-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    files_root = Path(files_root).resolve()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = Path(workdir) / "label-studio.log"
    command = [
        str(executable),
        "start",
        "--no-browser",
        "--internal-host",
        "127.0.0.1",
        "--port",
        str(port),
        "--username",
        ADMIN_EMAIL,
        "--password",
        ADMIN_PASSWORD,
        "--user-token",
        ADMIN_TOKEN,
        "--enable-legacy-api-token",
    ]
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            command,
            env=label_studio_environment(data_dir, files_root),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_up(process, url, log)
        yield LabelStudioServer(url=url, token=ADMIN_TOKEN, files_root=files_root)
    finally:
        stop(process)
