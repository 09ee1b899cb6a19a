"""The backend with a real Label Studio (pytest -m label_studio, .ci/label-studio): a project of
real VOC photos through local-files storage, the backend connected as Settings -> Model does,
predictions with a score on every task, annotations through the API, a fit on their webhooks
and a new model_version, and the AP of its predictions on 40 other tasks higher after 20
annotations than after the first 5; for a <Choices> and a <RectangleLabels> project."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import VOC_SUBSET
from label_studio_files import (
    BOXES_CONFIG,
    CHOICES_CONFIG,
    boxes_result,
    choices_result,
    labeling_config,
    voc_objects,
)
from label_studio_server import running_label_studio

pytestmark = pytest.mark.label_studio
CLASSES = ("bus", "car", "cat", "person", "train")  # the subset's boxed classes
N_TASKS, FIRST, MORE = 60, 5, 20  # tasks; annotated first, then in all; the rest evaluate


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    if not (VOC_SUBSET / "Annotations").is_dir():
        pytest.skip(f"real VOC subset not found at {VOC_SUBSET}")
    files = tmp_path_factory.mktemp("files")
    with running_label_studio(tmp_path_factory.mktemp("label-studio"), files) as server:
        yield server


@pytest.fixture(scope="module")
def backend(label_studio, tmp_path_factory):
    """`pipeline label-studio` for that Label Studio: the offline ImageNet backbone, 3 scales."""
    args = [sys.executable, "-m", "pipeline", "label-studio", "--label-studio", label_studio.url,
            "--api-key", label_studio.token, "--port", "0", "--workdir",
            str(tmp_path_factory.mktemp("backend")), "--scales", "3", "--min-scale", "0.4",
            "--workers", "0"]  # fmt: skip
    server = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        assert " at http://" in line, line
        yield line.split(" at ")[1].split()[0].rstrip("/")
    finally:
        server.terminate()
        server.wait(60)


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"no {what} within {timeout:.0f} s")


def settled(url: str, project: int, other_than: str) -> str | None:
    """The backend's model_version for the project once it differs from `other_than` and no
    refresh runs or waits; None before."""
    state = httpx.get(f"{url}/health", timeout=10).json()["projects"].get(str(project))
    quiet = state and state["state"] == "idle" and not state["queued"]
    return state["model_version"] if quiet and state["model_version"] != other_than else None


def predictions(label_studio, project: int, task_ids, version: str) -> dict[int, dict]:
    """task id -> its prediction of `version`, retrieved until every task has one (the backend
    answers the tasks it has not extracted yet with none, Label Studio asks again)."""

    def retrieved():
        label_studio.retrieve_predictions(project, task_ids)
        found = {}
        for task in label_studio.tasks(project):
            for made in task.predictions or ():
                made = made if isinstance(made, dict) else made.model_dump()
                if task.id in task_ids and made["model_version"] == version:
                    found[task.id] = made
        return found if len(found) == len(task_ids) else None

    return wait_for(retrieved, 600, f"prediction of {version} on every task")


def truth_of(image_id: str) -> list[int]:
    main = VOC_SUBSET / "ImageSets" / "Main"
    return [
        next(int(v) for i, v in (line.split() for line in (main / f"{c}_trainval.txt").read_text().splitlines()) if i == image_id)
        for c in CLASSES
    ]  # fmt: skip


def class_scores(prediction: dict) -> list[float]:
    """Per class: the choices item's score of it, or its best box's; 0 where none."""
    scores = dict.fromkeys(CLASSES, 0.0)
    for item in prediction["result"]:
        if item["type"] == "choices":
            scores.update(item["scores"])
        else:
            (name,) = item["value"]["rectanglelabels"]
            scores[name] = max(scores[name], item["score"])
    return [scores[c] for c in CLASSES]


def mean_ap(found: dict, truth: dict) -> float:
    from sklearn.metrics import average_precision_score

    ids = sorted(found)
    t = np.array([truth[i] for i in ids]) == 1
    s = np.array([class_scores(found[i]) for i in ids])
    return float(np.mean([
        average_precision_score(t[:, c], s[:, c]) for c in range(len(CLASSES)) if 0 < t[:, c].sum() < len(ids)
    ]))  # fmt: skip


@pytest.mark.parametrize("kind", ["choices", "rectanglelabels"])
def test_the_labelling_loop_with_label_studio(label_studio, backend, kind):
    folder = label_studio.files_root / kind
    folder.mkdir()
    ids = (VOC_SUBSET / "ImageSets" / "Main" / "trainval.txt").read_text().split()[:N_TASKS]
    for image_id in ids:
        shutil.copy(VOC_SUBSET / "JPEGImages" / f"{image_id}.jpg", folder / f"{image_id}.jpg")
    template = CHOICES_CONFIG if kind == "choices" else BOXES_CONFIG
    project = label_studio.create_project(kind, labeling_config(template, CLASSES))
    tasks = label_studio.import_local_files(project, folder)
    image_of = {t.id: Path(t.data["image"]).stem for t in label_studio.tasks(project)}
    truth = {task: truth_of(image_of[task]) for task in tasks}
    label_studio.connect_backend(project, backend)

    cold = predictions(label_studio, project, tasks, "cold-start")
    scores = [cold[t]["score"] for t in tasks]
    assert all(0 < s <= 1 for s in scores) and len(set(scores)) == len(tasks)

    versions, aps, evaluated = ["cold-start"], [], tasks[MORE:]
    for annotated in (tasks[:FIRST], tasks[FIRST:MORE]):
        for task in annotated:
            objects, width, height = voc_objects(VOC_SUBSET, image_of[task], CLASSES)
            label_studio.annotate(task, choices_result(sorted({n for n, _ in objects}))
                                  if kind == "choices" else boxes_result(objects, width, height))  # fmt: skip
        versions.append(wait_for(lambda: settled(backend, project, versions[-1]), 600, "new head"))
        pushed = label_studio.client.projects.get(id=project).model_version  # the live head's
        assert pushed == versions[-1]
        found = predictions(label_studio, project, evaluated, versions[-1])
        aps.append(mean_ap(found, truth))
    assert versions[1] != versions[2] and all(v.startswith("midlevel-") for v in versions[1:])
    print(f"{kind}: mean AP on {len(evaluated)} tasks after {FIRST} annotations {aps[0]:.3f}, "
          f"after {MORE} {aps[1]:.3f}")  # fmt: skip
    assert aps[1] > aps[0], aps
