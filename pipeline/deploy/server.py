"""The HTTP face of an exported model (`pipeline serve`): POST /predict scores a photo, GET /
is a page to try it in a browser, /health and /model describe what runs (docs/serve.md).

Bad input gets a 4xx with a one-line JSON reason ({"detail": "..."}), never a crash: an
upload over the limit (413, from its Content-Length before it is read, else counted while
it arrives), a body that does not arrive in time (408), a body that is no photo or no form
(415, 400), a file that does not decode or would cost too much work (422: by its header, or
the runtime's DataError), a full queue (503, counted once a body is in: a client that sends
headers and no body holds no slot).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import ctypes
import ctypes.util
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from pathlib import Path
from tempfile import SpooledTemporaryFile
from typing import BinaryIO

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from PIL import Image
from starlette.datastructures import Headers, UploadFile
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from pipeline.config import ServeConfig
from pipeline.cores import cpu_threads
from pipeline.datasets.pixels import READ_ERRORS
from pipeline.deploy.overlay import COLOURS, overlay_png
from pipeline.errors import DataError
from pipeline.features.work import MAX_WORK, check_photo_work, photo_work

PAGE = Path(__file__).with_name("page.html")
_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if ctypes.util.find_library("c") else None
_LIBC = _LIBC if _LIBC is not None and hasattr(_LIBC, "malloc_trim") else None
FIELD = "file"  # the multipart field of the photo
RAW_TYPES = ("image/", "application/octet-stream")  # a raw body of these is the photo itself
TOP = 5  # classes in "top" unless ?top= says otherwise
MB = 1 << 20
# A body still arriving holds no --max-pending slot, and at most 1 MB of memory (SPOOL); it
# must be in within ServeConfig.body_timeout seconds of its headers, else 408.
SPOOL = MB  # an upload's bytes past this go to a temporary file until it is admitted


def split_threads(threads: int | None = None) -> tuple[int, int]:
    """(prediction threads, ONNX Runtime threads per run) with their product <= the cores:
    more runs at once than cores only queue for them, and each slows the others.

    Default: two prediction threads of half the cores each (on 1 core, one of one), so that
    one request's decode, pooling and overlay (numpy and Pillow, mostly single-threaded)
    overlap another's net instead of leaving cores idle. On 2 busy cores it served ~30% more
    requests/s than 1 x 2, at 1 as at 16 clients (docs/serve.md#benchmarks).
    """
    available = cpu_threads()
    threads = threads or min(2, available)
    return threads, max(1, available // threads)


def create_app(
    model,
    *,
    max_upload_mb: float = ServeConfig.max_upload_mb,
    threads: int | None = None,
    max_pending: int = ServeConfig.max_pending,
    example: Path | None = None,
    body_timeout_s: float = ServeConfig.body_timeout,
) -> FastAPI:
    """The app serving `model` (a pipeline.deploy.runtime.Model).

    threads: predictions run at once, in a pool of that many threads sharing the model's
    one ONNX Runtime session (its run() is thread-safe); default: as many as the cores
    hold at model.threads each (split_threads). max_pending: requests admitted at once,
    running or waiting; a request is admitted once its body is in (one that never sends
    its body holds no slot), and more get 503, which bounds the photos held in memory
    (max_pending x max_upload_mb). body_timeout_s: a body not in by then gets 408.
    example: a photo served at /example, for the page's "try the example" button.
    Predictions run at once only while their work (features/work.py) sums to MAX_WORK 4:3
    photos at most: a wide photo waits to run alone, so memory peaks at one such photo's.
    """
    threads = threads or max(1, cpu_threads() // model.threads)
    # no /docs: FastAPI's Swagger page loads its scripts from a CDN, and the server may be
    # offline; /openapi.json describes the endpoints all the same
    app = FastAPI(title="midlevel", docs_url=None, redoc_url=None)
    app.add_middleware(UploadLimit, limit_mb=max_upload_mb, timeout_s=body_timeout_s)
    app.exception_handler(RequestValidationError)(_one_line_validation_error)
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="predict")
    budget = WorkBudget(MAX_WORK)
    page = PAGE.read_text()
    state = app.state.counts = {"reading": 0, "pending": 0, "predictions": 0, "refused": 0}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    @app.get("/health")
    def health() -> dict:
        """Liveness and load: what a probe or a dashboard reads."""
        return {
            "status": "ok",
            "classes": len(model.classes),
            "threads": threads,
            "onnxruntime_threads": model.threads,
            "reading": state["reading"],
            "pending": state["pending"],
            "predictions": state["predictions"],
            "refused": state["refused"],
        }

    @app.get("/model")
    def model_info() -> dict:
        """What the model is: its classes, fingerprint and export settings, and the limits."""
        info = model.info
        return {
            "classes": list(model.classes),
            "colours": ["#{:02x}{:02x}{:02x}".format(*c) for c in COLOURS],
            **{
                key: info.get(key) for key in ("fingerprint", "digest", "precision", "mode", "head")
            },
            "max_upload_mb": max_upload_mb,
            "example": example is not None,
        }

    if example is not None:

        @app.get("/example", include_in_schema=False)
        def example_photo() -> FileResponse:
            return FileResponse(example)

    @app.post("/predict", openapi_extra=UPLOAD_SCHEMA)
    async def predict(
        request: Request,
        top: int = Query(TOP, ge=1, description="classes listed in 'top', best first"),
        maps: bool = Query(False, description="add the heat-map overlay as base64 PNG"),
    ) -> dict:
        """Scores of one photo: a multipart upload (field 'file') or the raw bytes of the
        photo with an image/* Content-Type."""
        async with AsyncExitStack() as stack:  # closes the upload's spooled file
            state["reading"] += 1
            try:
                upload = await _upload(request, stack)
            finally:
                state["reading"] -= 1
            name = upload.filename or "upload"
            work = _check_pixels(model, upload.file, name)  # refused without waiting
            await upload.seek(0)
            _admit(state, max_pending)
            state["pending"] += 1
            try:
                data = await upload.read()
                loop = asyncio.get_running_loop()
                async with budget.share(work):
                    body = await loop.run_in_executor(pool, _answer, model, data, name, top, maps)
            finally:
                state["pending"] -= 1
        state["predictions"] += 1
        return body

    return app


def _admit(state: dict, max_pending: int) -> None:
    """503 when `max_pending` requests with their body in are running or waiting already."""
    if state["pending"] >= max_pending:
        state["refused"] += 1
        raise HTTPException(
            503,
            f"busy: {state['pending']} requests running or waiting; retry in a moment",
            headers={"Retry-After": "1"},
        )


def _answer(model, data: bytes, name: str, top: int, maps: bool) -> dict:
    """The JSON of one photo's prediction (in a pool thread: decode, net, pooling, overlay)."""
    try:
        p = model.predict(data, name=name)
    except DataError as exc:
        raise HTTPException(422, _line(exc)) from None
    finally:
        _give_back_memory()
    body = {
        "scores": {c: float(s) for c, s in zip(model.classes, p.scores, strict=True)},
        "top": [{"class": c, "score": s} for c, s in p.top(top)],
        "milliseconds": round(p.milliseconds, 2),
        "width": p.width,
        "height": p.height,
    }
    if maps:
        png = overlay_png(p.pixels, model.score_maps(p), model.classes, p.scores, top=min(top, 3))
        body["overlay_png"] = base64.b64encode(png).decode("ascii")
    return body


def _give_back_memory() -> None:
    """Return the memory a prediction freed to the system (glibc keeps freed blocks in each
    thread's heap: the widest photo twice in a row peaked 0.3 GiB higher without this);
    nothing where the C library has no malloc_trim."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _check_pixels(model, file: BinaryIO, name: str) -> float:
    """The photo's work in 4:3 photos, from its header (read from `file`); 422 before a pixel
    is decoded and before the photo waits for a prediction thread when it is over PIL's
    MAX_IMAGE_PIXELS (PIL refuses twice that, but between 1x and 2x, 89-179 megapixels, it
    only warns and would decode it), or over the work one photo may cost on the model's grid
    (a 78-byte 32x4 PNG made a shared-mode model take 5 GiB: features/work.py)."""
    try:
        with Image.open(file) as image:
            width, height = image.size
    except READ_ERRORS:
        return 1.0  # the runtime reads it again and says why it cannot
    if width * height > Image.MAX_IMAGE_PIXELS:
        raise HTTPException(
            422,
            f"{name}: {width}x{height} pixels ({width * height / 1e6:.0f} MP) is over this "
            f"server's limit of {Image.MAX_IMAGE_PIXELS / 1e6:.0f} MP; send a smaller photo",
        )
    grid, size = model.grid, int(model.info["input_size"])
    try:
        check_photo_work(width, height, grid, size, model.mode, name)
    except DataError as exc:
        raise HTTPException(422, _line(exc)) from None
    return photo_work(width, height, grid, size, model.mode)


class WorkBudget:
    """Predictions share `capacity` units of work (4:3 photos), first come first served: one
    waits until its work fits beside those running, so the widest photo admitted runs alone
    (and is not passed over by smaller ones) and two normal ones run together; the server's
    memory then peaks at what one widest photo needs."""

    def __init__(self, capacity: float):
        self.capacity, self.used = capacity, 0.0
        self._queue: collections.deque = collections.deque()
        self._changed: asyncio.Condition | None = None  # made in the server's event loop

    @contextlib.asynccontextmanager
    async def share(self, work: float):
        work, turn = min(work, self.capacity), object()
        self._changed = self._changed or asyncio.Condition()
        async with self._changed:
            self._queue.append(turn)
            try:
                await self._changed.wait_for(
                    lambda: self._queue[0] is turn and self.used + work <= self.capacity
                )
            finally:
                self._queue.remove(turn)
                self._changed.notify_all()
            self.used += work
        try:
            yield
        finally:
            async with self._changed:
                self.used -= work
                self._changed.notify_all()


async def _upload(request: Request, stack: AsyncExitStack) -> UploadFile:
    """The photo of a request, read in full: the multipart field 'file', or the body; its
    bytes past SPOOL wait in a temporary file (closed with `stack`), not in memory."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if kind == "multipart/form-data":
            form = await stack.enter_async_context(request.form(max_files=1, max_fields=16))
            upload = form.get(FIELD)
            if not isinstance(upload, UploadFile):
                raise HTTPException(
                    400, f"no file in the form field '{FIELD}': send the photo as -F {FIELD}=@PHOTO"
                )
        elif kind.startswith(RAW_TYPES):
            spool = stack.enter_context(SpooledTemporaryFile(max_size=SPOOL))  # noqa: SIM115
            upload = UploadFile(spool, size=0, filename="upload")
            async for chunk in request.stream():
                await upload.write(chunk)
        else:
            raise HTTPException(
                415,
                f"Content-Type {kind or 'none'!r}: send the photo as multipart/form-data field "
                f"'{FIELD}', or as the raw body with an image/* Content-Type",
            )
    except ClientDisconnect:  # nobody reads the answer; it keeps the log free of tracebacks
        raise HTTPException(
            400, "the client closed the connection before its photo arrived"
        ) from None
    if not upload.size:
        raise HTTPException(400, f"{upload.filename or 'upload'}: the file is empty")
    await upload.seek(0)
    return upload


class UploadLimit:
    """ASGI middleware: 413 for a request body over `limit` bytes, at once from its
    Content-Length (nothing read), else when the bytes counted while it arrives pass it
    (a chunked upload declares no length); 408 when the whole body is not in `timeout_s`
    after the headers (a stalled or dripping client), and the connection closed."""

    def __init__(
        self, app: ASGIApp, *, limit_mb: float, timeout_s: float, verb: str = "pipeline serve",
        body: str = "photo",
    ):  # fmt: skip
        self.app, self.limit_mb, self.limit = app, limit_mb, round(limit_mb * MB)
        self.timeout_s, self.verb, self.body = timeout_s, verb, body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            response = JSONResponse({"detail": self.reason(int(declared))}, status_code=413)
            await response(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline, received, done = loop.time() + self.timeout_s, 0, False

        async def guarded():
            nonlocal received, done
            if done:  # the body is in: a later receive waits for a disconnect, unbounded
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), deadline - loop.time())
            except TimeoutError:
                raise HTTPException(408, self.late(), headers={"Connection": "close"}) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise HTTPException(413, self.reason(None))
                done = not message.get("more_body", False)
            return message

        await self.app(scope, guarded, send)

    def reason(self, size: int | None) -> str:
        upload = f"an upload of {size / MB:.1f} MB" if size is not None else "the upload"
        return (
            f"{upload} is over this server's limit of {self.limit_mb:g} MB "
            f"({self.verb} --max-upload-mb); send a smaller {self.body}"
        )

    def late(self) -> str:
        return (
            f"the request's body did not arrive within {self.timeout_s:g} s of its headers; "
            f"send the whole {self.body} at once, over a faster connection or as a smaller file"
        )


async def _one_line_validation_error(request: Request, exc: RequestValidationError):
    """422 with one line ("top: Input should be ...") instead of FastAPI's list of errors."""
    reasons = [
        f"{'.'.join(str(part) for part in error['loc'][1:])}: {error['msg']}"
        for error in exc.errors()
    ]
    return JSONResponse({"detail": "; ".join(reasons)}, status_code=422)


def _line(exc: Exception) -> str:
    return " ".join(str(exc).split())


UPLOAD_SCHEMA = {  # /docs shows the upload, which the handler reads itself (to count bytes)
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FIELD],
                    "properties": {FIELD: {"type": "string", "format": "binary"}},
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
