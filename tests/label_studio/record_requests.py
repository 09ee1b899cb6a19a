"""Record what a real Label Studio sends an ML backend, for the protocol tests to replay.

A stand-in backend (FastAPI under uvicorn, in a thread) answers /health, /setup, /predict and
/webhook as an idle model would and keeps every request. A real Label Studio (see
label_studio_server.py) is driven against it for a <Choices> and a <RectangleLabels> project:
connect, retrieve predictions, create, update and delete an annotation, start training, import
one more photo. Each request kind of each project kind (health, setup, predict, webhook) is
written to recorded/<project>-<kind>.json: the Label Studio version, then every request in order
with the step that caused it, its method, path, headers (cookies dropped) and JSON body.

    MIDLEVEL_LABEL_STUDIO=/path/to/label-studio .venv/bin/python tests/label_studio/record_requests.py
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # label_studio_server, when run as a script

from conftest import VOC_SUBSET  # noqa: E402
from label_studio_server import (  # noqa: E402
    EXECUTABLE_VARIABLE,
    LabelStudioServer,
    free_port,
    running_label_studio,
)

RECORDED = HERE / "recorded"
PHOTOS = VOC_SUBSET / "JPEGImages"
PHOTO_COUNT = 4  # three imported before the model is connected, one after
ANSWERS = {
    "/health": {"status": "UP"},
    "/setup": {"model_version": "recorder"},
    "/predict": {"results": []},
    "/webhook": {},
}
DROPPED_HEADERS = {"cookie"}

CHOICES_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="label" toName="image" choice="multiple">
    <Choice value="cat"/><Choice value="dog"/><Choice value="person"/>
  </Choices>
</View>"""
RECTANGLES_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
    <Label value="cat"/><Label value="dog"/><Label value="person"/>
  </RectangleLabels>
</View>"""


def choices_result(labels: list[str]) -> list[dict]:
    return [
        {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": labels}}
    ]


def rectangles_result(labels: list[str]) -> list[dict]:
    return [
        {
            "from_name": "label",
            "to_name": "image",
            "type": "rectanglelabels",
            "original_width": 500,
            "original_height": 375,
            "image_rotation": 0,
            "value": {
                "x": 10.0 + 20 * index,
                "y": 15.0,
                "width": 25.0,
                "height": 40.0,
                "rotation": 0,
                "rectanglelabels": [label],
            },
        }
        for index, label in enumerate(labels)
    ]


PROJECTS = {
    "choices": (CHOICES_CONFIG, choices_result),
    "rectanglelabels": (RECTANGLES_CONFIG, rectangles_result),
}


class Recorder:
    """The requests the stand-in backend received, each tagged with the step that caused it."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.step = "start"
        self.lock = threading.Lock()

    def keep(self, method: str, path: str, headers: dict, body) -> None:
        kept = {name: value for name, value in headers.items() if name not in DROPPED_HEADERS}
        with self.lock:
            self.requests.append(
                {"step": self.step, "method": method, "path": path, "headers": kept, "body": body}
            )

    def taken(self) -> list[dict]:
        with self.lock:
            taken, self.requests = self.requests, []
        return taken


def recording_app(recorder: Recorder):
    app = FastAPI()

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def keep_request(request: Request, path: str) -> JSONResponse:
        raw = await request.body()
        recorder.keep(request.method, f"/{path}", dict(request.headers), json.loads(raw or "null"))
        answer = ANSWERS.get(f"/{path}")
        if answer is None:
            return JSONResponse({"error": f"the recorder does not answer /{path}"}, 404)
        return JSONResponse(answer)

    return app


@contextmanager
def recording_backend(recorder: Recorder) -> Iterator[str]:
    """The stand-in backend's URL while it serves in a thread."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(recording_app(recorder), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the recording backend did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def drive(
    ls: LabelStudioServer, recorder: Recorder, backend_url: str, kind: str, first: Path, later: Path
) -> None:
    """One project through what a user does with a connected model, each step tagged: the photos
    in `first` are imported before the model is connected, those in `later` after."""
    config, result = PROJECTS[kind]
    project = ls.create_project(f"record {kind}", config)
    task_ids = ls.import_local_files(project, first)

    recorder.step = "connect backend"
    backend = ls.connect_backend(project, backend_url)
    recorder.step = "retrieve predictions"
    ls.retrieve_predictions(project, task_ids)
    recorder.step = "create annotation"
    annotation = ls.annotate(task_ids[0], result(["cat"]))
    recorder.step = "update annotation"
    ls.client.annotations.update(id=annotation, result=result(["dog", "person"]))
    recorder.step = "delete annotation"
    ls.client.annotations.delete(id=annotation)
    recorder.step = "start training"
    ls.client.ml.train(id=backend)
    recorder.step = "import after connect"
    ls.import_local_files(project, later)
    recorder.step = "done"


def copy_photos(photos: list[Path], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for photo in photos:
        shutil.copy(photo, folder / photo.name)


def by_kind(requests: list[dict]) -> dict[str, list[dict]]:
    """Requests grouped by the backend path they went to (health, setup, predict, webhook)."""
    grouped: dict[str, list[dict]] = {}
    for request in requests:
        grouped.setdefault(request["path"].strip("/") or "root", []).append(request)
    return grouped


def record(ls: LabelStudioServer, files_root: Path, output: Path) -> list[Path]:
    """Drive each project kind against a fresh recorder; write one file per request kind."""
    photos = sorted(PHOTOS.glob("*.jpg"))[:PHOTO_COUNT]
    version = ls.client.versions.get().release
    written = []
    recorder = Recorder()
    with recording_backend(recorder) as backend_url:
        for kind in PROJECTS:
            first, later = files_root / kind, files_root / f"{kind}-later"
            copy_photos(photos[:-1], first)
            copy_photos(photos[-1:], later)
            drive(ls, recorder, backend_url, kind, first, later)
            for request_kind, requests in by_kind(recorder.taken()).items():
                path = output / f"{kind}-{request_kind}.json"
                path.write_text(
                    json.dumps(
                        {
                            "label_studio_version": version,
                            "project_kind": kind,
                            "request_kind": request_kind,
                            "requests": requests,
                        },
                        indent=2,
                        sort_keys=True,
                    )
                    + "\n"
                )
                written.append(path)
    return written


def main() -> int:
    if not os.environ.get(EXECUTABLE_VARIABLE):
        print(f"set {EXECUTABLE_VARIABLE} to the label-studio executable", file=sys.stderr)
        return 2
    if not PHOTOS.is_dir():
        print(f"no photos at {PHOTOS}", file=sys.stderr)
        return 2
    RECORDED.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        files_root = Path(scratch) / "files"
        files_root.mkdir()
        with running_label_studio(Path(scratch), files_root) as ls:
            for path in record(ls, files_root, RECORDED):
                print(path.relative_to(HERE))
    return 0


if __name__ == "__main__":
    sys.exit(main())
