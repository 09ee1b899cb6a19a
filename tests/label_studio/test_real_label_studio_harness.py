"""The real-Label-Studio harness works (one Label Studio for the module: it takes a minute to
start), and the recorded requests in recorded/ still describe what this Label Studio sends."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import pytest
from label_studio_server import running_label_studio
from record_requests import CHOICES_CONFIG, PHOTOS, RECORDED, choices_result, record

pytestmark = pytest.mark.label_studio


@pytest.fixture(scope="module")
def files_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("label-studio-files")


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory, files_root):
    if not PHOTOS.is_dir():
        pytest.skip(f"no VOC photos at {PHOTOS}")
    with running_label_studio(tmp_path_factory.mktemp("label-studio"), files_root) as server:
        yield server


def test_a_project_of_local_photos_is_imported_and_annotated(label_studio, files_root):
    folder = files_root / "photos"
    folder.mkdir()
    photos = sorted(PHOTOS.glob("*.jpg"))[:3]
    for photo in photos:
        shutil.copy(photo, folder / photo.name)
    project = label_studio.create_project("harness", CHOICES_CONFIG)

    task_ids = label_studio.import_local_files(project, folder)
    annotation = label_studio.annotate(task_ids[0], choices_result(["cat"]))

    tasks = {task.id: task for task in label_studio.tasks(project)}
    assert sorted(tasks) == sorted(task_ids) and len(tasks) == 3
    assert sorted(task.data["image"] for task in tasks.values()) == [
        f"/data/local-files/?d=photos/{photo.name}" for photo in photos
    ]
    (annotated,) = tasks[task_ids[0]].annotations
    assert annotated["id"] == annotation
    assert annotated["result"][0]["value"] == {"choices": ["cat"]}
    assert all(not tasks[task_id].annotations for task_id in task_ids[1:])
    request = urllib.request.Request(
        label_studio.url + tasks[task_ids[0]].data["image"],
        headers={"Authorization": f"Token {label_studio.token}"},
    )
    with urllib.request.urlopen(request, timeout=30) as served:
        assert served.read() == (folder / photos[0].name).read_bytes()


def shape(requests: list[dict]) -> list[tuple]:
    """What a replay relies on: the order of steps, methods, paths and webhook actions, and the
    top-level fields of each body."""
    return [
        (
            request["step"],
            request["method"],
            request["path"],
            (request["body"] or {}).get("action"),
            sorted(request["body"] or {}),
        )
        for request in requests
    ]


def test_the_recorded_requests_still_describe_this_label_studio(label_studio, files_root, tmp_path):
    record(label_studio, files_root / "recording", tmp_path)

    fresh = {path.name: json.loads(path.read_text()) for path in tmp_path.glob("*.json")}
    committed = {path.name: json.loads(path.read_text()) for path in RECORDED.glob("*.json")}
    assert sorted(fresh) == sorted(committed)
    for name, recording in committed.items():
        assert fresh[name]["label_studio_version"] == recording["label_studio_version"], (
            f"{name}: recorded against another Label Studio; run record_requests.py again"
        )
        assert shape(fresh[name]["requests"]) == shape(recording["requests"]), name
