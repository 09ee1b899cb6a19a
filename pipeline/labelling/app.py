"""The ML backend's HTTP side, as Label Studio 1.2x calls it (label-studio-ml-backend's
protocol): GET /health, POST /setup, POST /predict, POST /webhook, optional basic auth, the
same body limits as pipeline serve. Bad input is a 4xx with one line, never a 500."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from pipeline.deploy.server import UploadLimit
from pipeline.errors import MidlevelError
from pipeline.labelling.service import Backend, project_id

MAX_TASKS = 10_000  # tasks one /predict may name (Label Studio sends its batch size, 100)
log = logging.getLogger("midlevel.label_studio")


def create_app(
    backend: Backend, *, basic_auth: str | None = None, max_body_mb: float = 32.0,
    body_timeout_s: float = 60.0,
) -> FastAPI:  # fmt: skip
    """The app around `backend`; `basic_auth` "user:password" (Settings -> Model's basic
    auth) makes every endpoint but /health ask for it."""
    app = FastAPI(title="midlevel label studio backend", docs_url=None, redoc_url=None)
    app.add_middleware(
        UploadLimit, limit_mb=max_body_mb, timeout_s=body_timeout_s,
        verb="pipeline label-studio", body="batch of tasks",
    )  # fmt: skip

    @app.exception_handler(MidlevelError)
    async def refused(request: Request, exc: MidlevelError):
        line = " ".join(str(exc).split())
        log.warning("%s %s refused: %s", request.method, request.url.path, line)
        return JSONResponse({"detail": line}, status_code=400)

    def checked(request: Request) -> None:
        if basic_auth is not None and not _authorised(request, basic_auth):
            raise HTTPException(401, "wrong or missing basic auth; set it in Settings -> Model",
                                headers={"WWW-Authenticate": 'Basic realm="midlevel"'})  # fmt: skip

    @app.get("/health")
    def health() -> dict:
        return {"status": "UP", "model_class": "midlevel", "projects": backend.health()}

    @app.post("/setup")
    async def setup(request: Request) -> dict:
        checked(request)
        body = await _body(request)
        project = project_id(body.get("project"))
        return {"model_version": backend.setup(project, _text(body, "schema"))}

    @app.post("/predict")
    async def predict(request: Request) -> dict:
        checked(request)
        body = await _body(request)
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not 0 < len(tasks) <= MAX_TASKS:
            raise HTTPException(422, f"'tasks': a list of 1 to {MAX_TASKS} tasks")
        if not all(isinstance(task, dict) for task in tasks):
            raise HTTPException(422, "'tasks': each task an object, as Label Studio sends it")
        project = project_id(body.get("project") or tasks[0].get("project"))
        config = body.get("label_config")
        answer = await _in_thread(backend.predict, project, config if config else None, tasks)
        return {"results": answer}

    @app.post("/webhook", status_code=201)
    async def webhook(request: Request) -> dict:
        checked(request)
        body = await _body(request)
        action = body.get("action")
        if not isinstance(action, str):
            raise HTTPException(422, "'action': the event's name, as Label Studio sends it")
        project = body.get("project")
        config = project.get("label_config") if isinstance(project, dict) else None
        taken = backend.event(action, project_id(project), config if config else None)
        return {"action": action, "refresh": taken}

    return app


async def _body(request: Request) -> dict:
    """The request's JSON object, or 400 in one line."""
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPException(
            400, f"the body is not JSON ({exc}); send Label Studio's request"
        ) from None
    if not isinstance(body, dict):
        raise HTTPException(400, "the body is not a JSON object; send Label Studio's request")
    return body


def _text(body: dict, key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        raise HTTPException(422, f"{key!r}: the project's labeling config, as text")
    return value


async def _in_thread(function, *args):
    """Blocking work (waiting on the worker) off the event loop, so /health stays quick."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(function, *args)


def _authorised(request: Request, expected: str) -> bool:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    return hmac.compare_digest(given.encode(), expected.encode())
