"""The Label Studio ML backend over HTTP (FastAPI's test client), replaying what Label Studio
1.23 sent in a real run (tests/label_studio/recorded/), on real VOC photos held in a project of
files (tests/label_studio_files.py); hostile input gets a 4xx or a logged line, never a 500
and never a lost head. tests/label_studio/ drives a real Label Studio."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest
from cli_helpers import error_lines, invoke
from fastapi.testclient import TestClient
from label_studio_files import (
    CHOICES_CONFIG,
    FileProject,
    boxes_result,
    choices_result,
    labeling_config,
    voc_objects,
)

from pipeline.config import BackboneConfig, ExtractConfig, GridConfig
from pipeline.labelling.app import create_app
from pipeline.labelling.project import ProjectSettings
from pipeline.labelling.schema import read_schema
from pipeline.labelling.service import Backend

RECORDED = Path(__file__).parents[1] / "label_studio" / "recorded"
CLASSES = ("bus", "car", "cat", "person", "train")  # the subset's boxed classes
SMALL = ExtractConfig(
    backbone=BackboneConfig(name="resnet18", weights="random", input_size=64),
    grid=replace(GridConfig(), scales=3, min_scale=0.4), workers=0,
)  # fmt: skip


def photos(voc: Path, n: int) -> list[Path]:
    ids = (voc / "ImageSets" / "Main" / "trainval.txt").read_text().split()[:n]
    return [voc / "JPEGImages" / f"{i}.jpg" for i in ids]


def photos_of(voc: Path, classes, n: int) -> list[Path]:
    """The first `n` trainval photos that hold one of `classes`, alternating between them."""
    found = {c: [] for c in classes}
    for name in classes:
        for line in (voc / "ImageSets" / "Main" / f"{name}_trainval.txt").read_text().splitlines():
            image_id, label = line.split()
            if label == "1" and all(image_id not in f for f in found.values()):
                found[name].append(image_id)
    picked = [i for group in zip(*found.values(), strict=False) for i in group][:n]
    return [voc / "JPEGImages" / f"{i}.jpg" for i in picked]


def recorded(kind: str, request: str) -> list[dict]:
    return json.loads((RECORDED / f"{kind}-{request}.json").read_text())["requests"]


def served(tmp_path: Path, project: FileProject, features=SMALL, **app_options):
    backend = Backend(
        ProjectSettings(workdir=tmp_path / "work", features=features), project, predict_wait=120
    ).start()
    return backend, TestClient(create_app(backend, **app_options))


@pytest.fixture
def backend_of(tmp_path, voc_subset):
    started = []

    def make(images: list[Path] | int = 6, first_id: int = 1, **options):
        chosen = photos(voc_subset, images) if isinstance(images, int) else images
        project = FileProject(chosen, tmp_path / "files", first_id)
        backend, client = served(tmp_path, project, **options)
        started.append(backend)
        return project, backend, client

    yield make
    for backend in started:
        backend.stop()


@pytest.mark.parametrize("kind", ["choices", "rectanglelabels"])
def test_label_studio_s_recorded_requests_are_answered_then_a_fit_changes_the_version(
    backend_of, voc_subset, kind
):
    setup, body = recorded(kind, "setup")[0]["body"], recorded(kind, "predict")[0]["body"]
    tasks = [task["id"] for task in body["tasks"]]  # the recorded project's (2: tasks 5, 6, 7)
    images = photos_of(voc_subset, ("cat", "person"), 6)
    project, backend, client = backend_of(images, first_id=tasks[0])
    assert client.get("/health").json()["status"] == "UP"
    assert client.post("/setup", json=setup).json() == {"model_version": "cold-start"}
    answer = client.post("/predict", json=body)
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert len(results) == len(body["tasks"])  # one per task, in order: Label Studio zips them
    scores = [r[0]["score"] for r in results]
    assert all(r[0]["model_version"] == "cold-start" and r[0]["result"] == [] for r in results)
    assert all(0 < s <= 1 for s in scores) and len(set(scores)) == len(scores)  # an order
    classes = read_schema(setup["schema"]).classes  # the recorded project's
    for n, task in enumerate(tasks):
        image_id = Path(project.tasks[n]["data"]["image"]).stem
        objects, width, height = voc_objects(voc_subset, image_id, classes)
        project.annotate(task, boxes_result(objects, width, height) if kind != "choices"
                         else choices_result(sorted({name for name, _ in objects})))  # fmt: skip
    for event in recorded(kind, "webhook"):
        assert client.post("/webhook", json=event["body"]).status_code == 201
    assert backend.wait_idle(300)
    version = client.post("/setup", json=setup).json()["model_version"]
    assert version.startswith("midlevel-mlp-" if kind != "choices" else "midlevel-weak-")
    results = client.post("/predict", json=body).json()["results"]
    assert [r[0]["model_version"] for r in results] == [version] * 3
    assert [r[0]["score"] for r in results] == [0, 0, 0]  # annotated: nothing left to label
    pushed = {version: tasks for version, tasks in project.published}  # Label Studio got them
    assert pushed == {"cold-start": [p["id"] for p in project.tasks], version: pushed["cold-start"]}
    health = client.get("/health").json()["projects"][setup["project"].split(".")[0]]
    assert health["last_error"] is None and health["model_version"] == version


def test_hostile_input_is_refused_in_one_line_never_a_500(backend_of, caplog):
    project, backend, client = backend_of(4)
    config = labeling_config(CHOICES_CONFIG, CLASSES)
    keypoints = config.replace("Choices", "KeyPointLabels").replace("Choice ", "Label ")
    refused = client.post("/setup", json={"project": "1.17", "schema": keypoints})
    assert (
        refused.status_code == 400 and "<KeyPointLabels> is not served" in refused.json()["detail"]
    )
    assert client.post("/predict", content=b"{not json").status_code == 400
    assert client.post("/predict", json={"tasks": "all"}).status_code == 422
    assert client.post("/predict", json={"tasks": [1]}).status_code == 422
    assert client.post("/predict", json={"project": "x", "tasks": [{"id": 1}]}).status_code == 400
    assert (
        client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 9}}).status_code
        == 400
    )
    project.tasks[1]["data"]["image"] = "http://elsewhere.example/photo.jpg"
    project.tasks[2]["data"]["image"] = "/data/local-files/?d=../../../etc/hostname"
    project.annotate(4, choices_result(["car", "unicorn"]))  # a class the config does not have
    caplog.set_level(logging.WARNING, "midlevel.label_studio")
    assert client.post("/setup", json={"project": "1.17", "schema": config}).status_code == 200
    answer = client.post("/predict", json={"project": "1.17", "label_config": config,
                                           "tasks": [{"id": i} for i in (1, 2, 3, 4)]})  # fmt: skip
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert results[0] and results[1] == [] and results[2] == [] and results[3] == []
    logged = caplog.text
    assert (
        "task 2: image 'http://elsewhere.example/photo.jpg' is on elsewhere.example, not on"
        in logged
    )
    assert "task 3:" in logged and "outside the dataset" in logged
    assert not (backend.settings.workdir / "project-1" / "media" / "etc").exists()


def test_a_webhook_storm_coalesces_and_label_studio_gone_keeps_the_head(backend_of, voc_subset):
    project, backend, client = backend_of(6)
    config = labeling_config(CHOICES_CONFIG, CLASSES)
    client.post("/setup", json={"project": "1.17", "schema": config})
    for task, classes in ((1, ["car"]), (2, ["cat"]), (3, ["car", "person"])):
        project.annotate(task, choices_result(classes))
    event = {"action": "ANNOTATION_CREATED", "project": {"id": 1, "label_config": config}}
    started = time.perf_counter()
    answers = [client.post("/webhook", json=event).status_code for _ in range(100)]
    assert answers == [201] * 100 and time.perf_counter() - started < 10
    assert backend.wait_idle(300)
    assert project.exports <= 3  # the set-up's, the one running when the storm came, one more
    head = client.get("/health").json()["projects"]["1"]
    assert head["model_version"].startswith("midlevel-weak-") and head["last_error"] is None
    assert (head["tasks_annotated"], head["tasks_predicted"], head["state"]) == (3, 6, "idle")
    before = client.post("/predict", json={"project": 1, "tasks": [{"id": 5}]}).json()
    project.gone = True
    project.annotate(4, choices_result(["bus"]))
    assert client.post("/webhook", json=event).status_code == 201
    assert backend.wait_idle(300)
    health = client.get("/health").json()["projects"]["1"]
    assert health["model_version"] == head["model_version"]
    assert "Label Studio at http://127.0.0.1:1: export failed" in health["last_error"]
    assert client.post("/predict", json={"project": 1, "tasks": [{"id": 5}]}).json() == before
    assert [version for version, _ in project.published] == ["cold-start", head["model_version"]]


def test_basic_auth_is_asked_for_where_it_is_set(backend_of):
    project, backend, client = backend_of(2, basic_auth="studio:secret")
    body = {"project": "1.17", "schema": labeling_config(CHOICES_CONFIG, CLASSES)}
    assert client.get("/health").status_code == 200
    assert client.post("/setup", json=body).status_code == 401
    assert client.post("/setup", json=body, auth=("studio", "wrong")).status_code == 401
    assert client.post("/setup", json=body, auth=("studio", "secret")).status_code == 200


def test_a_body_over_the_limit_is_413_before_it_is_read(backend_of):
    project, backend, client = backend_of(2, max_body_mb=0.01)
    tasks = [{"id": 1, "data": {"image": "x" * 100}}] * 200  # about 24 KB
    answer = client.post("/predict", json={"project": 1, "tasks": tasks})
    assert answer.status_code == 413
    assert (
        "(pipeline label-studio --max-upload-mb); send a smaller batch" in answer.json()["detail"]
    )


def test_the_real_server_answers_and_says_label_studio_is_unreachable(tmp_path):
    """`pipeline label-studio` itself, on a free port; the Label Studio it names is not
    there, which /health says after the first refresh while the server keeps answering."""
    args = [sys.executable, "-m", "pipeline", "label-studio", "--label-studio",
            "http://127.0.0.1:9", "--api-key", "token", "--port", "0", "--workdir",
            str(tmp_path / "work"), "--backbone", "resnet18", "--weights", "random"]  # fmt: skip
    server = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        assert "ML backend for http://127.0.0.1:9 at http://127.0.0.1:" in line, line
        url = line.split(" at ")[1].split()[0].rstrip("/")
        setup = recorded("choices", "setup")[0]["body"]
        assert httpx.post(f"{url}/setup", json=setup).json() == {"model_version": "cold-start"}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            project = httpx.get(f"{url}/health").json()["projects"]["1"]
            if project["last_error"]:
                break
            time.sleep(0.2)
        assert (
            "Label Studio at http://127.0.0.1:9: export of project 1 failed"
            in project["last_error"]
        )
        assert project["model_version"] == "cold-start"
    finally:
        server.terminate()
        server.wait(30)
    assert "refresh failed, cold-start still serves" in server.stderr.read()


def mean_ap(results: list, truth: np.ndarray) -> float:
    """Mean over classes of the AP of the predictions' class scores (0 where none)."""
    from sklearn.metrics import average_precision_score

    scores = np.zeros(truth.shape)
    for row, predictions in enumerate(results):
        for item in predictions[0]["result"] if predictions else ():
            for c, name in enumerate(CLASSES):
                scores[row, c] = item.get("scores", {}).get(name, 0.0)
    present = [c for c in range(len(CLASSES)) if 0 < (truth[:, c] == 1).sum() < len(truth)]
    return float(
        np.mean([average_precision_score(truth[:, c] == 1, scores[:, c]) for c in present])
    )


def test_predictions_after_20_annotations_beat_those_after_5(tmp_path, voc_subset):
    """Real photos, the offline ImageNet backbone: the AP of the choices the backend predicts
    on 40 tasks nobody annotated rises from 5 annotated tasks to 20."""
    project = FileProject(photos(voc_subset, 60), tmp_path / "files")
    features = ExtractConfig(grid=replace(GridConfig(), scales=3, min_scale=0.4), workers=0)
    backend, client = served(tmp_path, project, features)
    try:
        config = labeling_config(CHOICES_CONFIG, CLASSES)
        client.post("/setup", json={"project": "1.17", "schema": config})
        image_ids = [Path(t["data"]["image"]).stem for t in project.tasks]
        truth = np.array([[_label(voc_subset, c, i) for c in CLASSES] for i in image_ids])
        others = [{"id": task} for task in range(21, 61)]
        aps = []
        for annotated in (range(1, 6), range(6, 21)):
            for task in annotated:
                present = [c for c, t in zip(CLASSES, truth[task - 1], strict=True) if t == 1]
                project.annotate(task, choices_result(present))
            client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
            assert backend.wait_idle(600)
            results = client.post("/predict", json={"project": 1, "tasks": others}).json()[
                "results"
            ]
            aps.append(mean_ap(results, truth[20:]))
        print(f"mean AP on 40 tasks after 5 annotations {aps[0]:.3f}, after 20 {aps[1]:.3f}")
        assert aps[1] > aps[0] + 0.05, aps
    finally:
        backend.stop()


def _label(voc: Path, name: str, image_id: str) -> int:
    lines = (voc / "ImageSets" / "Main" / f"{name}_trainval.txt").read_text().splitlines()
    return next(int(v) for i, v in (line.split() for line in lines) if i == image_id)


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--threshold", "2"], "--threshold 2.0: give a finite number in (0, 1]"),
        (["--label-studio", "ftp://studio"], "not an http(s) URL"),
        (["--keep", "sample"], "--keep: the backend keeps every patch of a task; leave it out"),
        (["--basic-auth", "nocolon"], "--basic-auth '***': write user:password"),
        (["--predict-wait", "600"], "--predict-wait 600.0"),
    ],
)  # fmt: skip
def test_a_bad_setting_is_one_line_before_anything_starts(extra, says):
    code, out = invoke("label-studio", "--label-studio", "http://127.0.0.1:9", "--api-key", "k",
                       "--port", "0", *extra)  # fmt: skip
    (line,) = error_lines(out)
    assert code == 2 and says in line, out
