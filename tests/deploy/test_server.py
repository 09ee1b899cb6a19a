"""`pipeline serve`'s app through the framework's test client: every endpoint answers what the
model answers in process, every bad input gets a 4xx with one line and the server keeps
serving, concurrent clients each get their own photo's scores; the verb itself on a port."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from cli_helpers import error_lines, invoke
from fastapi.testclient import TestClient
from PIL import Image

from pipeline.deploy.runtime import Model
from pipeline.deploy.server import create_app, split_threads

LIMIT_MB = 1.0


@pytest.fixture(scope="module")
def exported(exported_svm) -> dict:
    """An SVM head on the shapes tree exported to a model folder, and its test photos."""
    return exported_svm


@pytest.fixture(scope="module")
def model(exported) -> Model:
    return Model.load(exported["folder"], threads=1)


@pytest.fixture(scope="module")
def client(model, exported):
    app = create_app(model, max_upload_mb=LIMIT_MB, threads=2, example=exported["photos"][0])
    with TestClient(app) as client:
        yield client


def upload(client, path: Path, query: str = "") -> httpx.Response:
    with open(path, "rb") as handle:
        return client.post(f"/predict{query}", files={"file": (path.name, handle, "image/jpeg")})


def scores_in_process(model: Model, path: Path) -> dict[str, float]:
    p = model.predict(path.read_bytes())
    return dict(zip(model.classes, p.scores.tolist(), strict=True))


def assert_serving(client, model, photo: Path) -> None:
    """A good photo still gets its scores (the server survived what came before)."""
    response = upload(client, photo)
    assert response.status_code == 200, response.text
    assert response.json()["scores"] == pytest.approx(scores_in_process(model, photo), rel=1e-6)


def test_predict_answers_the_scores_of_the_model_in_process(client, model, exported):
    photo = exported["photos"][3]
    body = upload(client, photo, "?top=2").json()
    expected = scores_in_process(model, photo)
    assert list(body["scores"]) == list(model.classes)
    assert body["scores"] == pytest.approx(expected, rel=1e-6)
    best = sorted(expected, key=expected.get, reverse=True)[:2]
    assert [entry["class"] for entry in body["top"]] == best
    assert body["top"][0]["score"] == pytest.approx(expected[best[0]], rel=1e-6)
    with Image.open(photo) as image:
        assert (body["width"], body["height"]) == image.size
    assert body["milliseconds"] > 0 and "overlay_png" not in body
    # the photo as the raw body, with an image Content-Type: the same answer
    raw = client.post(
        "/predict", content=photo.read_bytes(), headers={"content-type": "image/jpeg"}
    )
    assert raw.status_code == 200 and raw.json()["scores"] == body["scores"]
    assert len(raw.json()["top"]) == len(model.classes)  # top 5 of 3 classes: all of them


def test_maps_adds_the_overlay_of_the_top_classes(client, model, exported):
    photo = exported["photos"][5]
    body = upload(client, photo, "?maps=1&top=1").json()
    overlay = Image.open(io.BytesIO(base64.b64decode(body["overlay_png"])))
    assert overlay.format == "PNG"
    with Image.open(photo) as image:  # 128 x 96, enlarged to 320 wide
        assert overlay.width == 320 and overlay.height > 320 * image.height / image.width
    p = model.predict(photo.read_bytes())
    from pipeline.deploy.overlay import overlay_image

    expected = overlay_image(p.pixels, model.score_maps(p), model.classes, p.scores, top=1)
    np.testing.assert_array_equal(np.asarray(overlay.convert("RGB")), np.asarray(expected))


def test_health_model_page_and_example(client, model, exported):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["classes"] == 3 and health["threads"] == 2
    assert health["predictions"] >= 0 and health["pending"] == 0
    info = client.get("/model").json()
    assert info["classes"] == ["bus", "car", "cat"]
    assert info["digest"] == model.info["digest"] and info["mode"] == model.info["mode"]
    assert info["precision"] == "fp32" and info["head"]["name"] == "svm"
    assert info["fingerprint"]["backbone"]["name"] == "resnet18" and info["max_upload_mb"] == 1
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "fetch(`predict?maps=1" in page.text
    # self-contained: no script, style, image or font from elsewhere (the server may be offline)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page.text)
    assert not re.search(r"@import|url\(\s*['\"]?(https?:)?//", page.text)
    schema = client.get("/openapi.json").json()["paths"]["/predict"]["post"]
    assert "file" in schema["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert client.get("/docs").status_code == 404  # its scripts would come from a CDN
    example = client.get("/example")
    assert example.status_code == 200 and example.content == exported["photos"][0].read_bytes()


def truncated(photo: Path) -> bytes:
    data = photo.read_bytes()
    return data[: len(data) // 2]


def png_of_size(width: int, height: int) -> bytes:
    """A small PNG whose header declares width x height (1-bit, compresses to a few KB)."""
    buffer = io.BytesIO()
    Image.new("1", (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


def header_only(png: bytes) -> bytes:
    """A PNG cut after its IHDR and the first IDAT chunk's header: its size is known, none of
    its pixels (it does not decode)."""
    return png[: png.index(b"IDAT") + 4]


def chunks(total: int):
    """A body with no Content-Length (sent chunked): the server must count it."""
    for _ in range(total // 65536):
        yield b"\xff" * 65536


BAD = {
    # name: (request keyword arguments given the photos, status, a word of the reason)
    "not an image": (lambda p: {"files": {"file": ("a.jpg", b"not a jpeg", "image/jpeg")}}, 422, "a.jpg: cannot decode"),
    "truncated JPEG": (lambda p: {"files": {"file": ("t.jpg", truncated(p[0]), "image/jpeg")}}, 422, "t.jpg: cannot decode"),
    # over 2x PIL's MAX_IMAGE_PIXELS: PIL's own refusal, through the runtime's DataError
    "decompression bomb": (lambda p: {"files": {"file": ("b.png", png_of_size(20000, 20000), "image/png")}}, 422, "b.png: cannot decode"),
    # between 1x and 2x PIL only warns: the server refuses it from the header
    "decompression bomb, PIL's warning band": (lambda p: {"files": {"file": ("w.png", png_of_size(10000, 10000), "image/png")}}, 422, "10000x10000 pixels"),
    "over the upload limit": (lambda p: {"files": {"file": ("big.jpg", b"\xff" * (3 << 20), "image/jpeg")}}, 413, "an upload of 3.0 MB is over"),
    "over the limit, chunked": (lambda p: {"content": chunks(3 << 20), "headers": {"content-type": "image/jpeg"}}, 413, "the upload is over"),
    "missing file field": (lambda p: {"files": {"photo": ("a.jpg", p[0].read_bytes(), "image/jpeg")}}, 400, "no file in the form field 'file'"),
    "file field as text": (lambda p: {"data": {"file": "a.jpg"}, "files": {"other": ("x", b"x")}}, 400, "no file in the form field 'file'"),
    "empty file": (lambda p: {"files": {"file": ("e.jpg", b"", "image/jpeg")}}, 400, "e.jpg: the file is empty"),
    "not a photo's content type": (lambda p: {"content": b"{}", "headers": {"content-type": "application/json"}}, 415, "Content-Type 'application/json'"),
    "no body": (lambda p: {}, 415, "Content-Type 'none'"),
    "broken multipart": (lambda p: {"content": b"--x\r\nbroken", "headers": {"content-type": "multipart/form-data; boundary=x"}}, 400, "no file in the form field 'file'"),
    "multipart without a boundary": (lambda p: {"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data"}}, 400, "Missing boundary"),
    "two files": (lambda p: {"files": [("file", ("a.jpg", b"1")), ("file", ("b.jpg", b"2"))]}, 400, "Too many files"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD)
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # the warning band
def test_bad_input_is_a_4xx_with_one_line_and_the_server_keeps_serving(
    client, model, exported, case
):
    make, status, reason = BAD[case]
    response = client.post("/predict", **make(exported["photos"]))
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and reason in detail, detail
    assert_serving(client, model, exported["photos"][1])


@pytest.mark.parametrize(
    "name, data, shape",
    [
        ("t.png", png_of_size(400, 2), "400x2"),
        ("h.png", header_only(png_of_size(32, 4)), "32x4"),  # its pixels never decode
    ],
)
def test_a_thin_photo_is_refused_by_its_header_naming_the_limit(
    client, model, exported, name, data, shape
):
    """A thin photo makes as many patches as one stretched to its shape (issue 26: a 78-byte
    32x4 PNG took a shared-mode server to 5 GiB): 422 from its header, before decoding."""
    response = client.post("/predict", files={"file": (name, data, "image/png")})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail.startswith(f"{name}: {shape} pixels") and "over the limit of" in detail, detail
    assert "\n" not in detail
    assert_serving(client, model, exported["photos"][1])


def test_a_bad_query_is_one_line(client, exported):
    response = upload(client, exported["photos"][0], "?top=0")
    assert response.status_code == 422
    assert response.json() == {"detail": "top: Input should be greater than or equal to 1"}


def test_concurrent_clients_each_get_their_own_photos_scores(client, model, exported):
    """50 requests from 8 threads over 16 photos: a mix-up between requests (a shared buffer,
    the wrong result returned) gives a request another photo's scores."""
    photos = exported["photos"]
    expected = {p: scores_in_process(model, p) for p in photos}
    before = client.get("/health").json()["predictions"]

    def one(i: int) -> tuple[Path, dict]:
        photo = photos[i % len(photos)]
        response = upload(client, photo)
        assert response.status_code == 200, response.text
        return photo, response.json()["scores"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(one, range(50)))
    assert len(answers) == 50
    for photo, scores in answers:
        assert scores == pytest.approx(expected[photo], rel=1e-6), photo.name
    assert len({tuple(expected[p].values()) for p in photos}) > 8  # the photos do differ
    assert client.get("/health").json()["predictions"] == before + 50


class Gated:
    """The model, with predict held until `gate` opens (to fill the server's queue)."""

    def __init__(self, model: Model):
        self.model, self.gate, self.entered = model, threading.Event(), threading.Event()

    def __getattr__(self, name):
        return getattr(self.model, name)

    def predict(self, image, **kwargs):
        self.entered.set()
        assert self.gate.wait(30)
        return self.model.predict(image, **kwargs)


def test_a_full_queue_is_refused_with_503_once_the_upload_is_in(model, exported):
    """An upload whose body is in, while --max-pending are running or waiting: 503."""
    gated = Gated(model)
    with TestClient(create_app(gated, max_pending=1, threads=1)) as client:
        with ThreadPoolExecutor(max_workers=1) as pool:
            first = pool.submit(upload, client, exported["photos"][0])
            assert gated.entered.wait(30)
            refused = upload(client, exported["photos"][1])
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
            assert refused.json()["detail"].startswith("busy: 1 requests running or waiting")
            gated.gate.set()
            assert first.result().status_code == 200
        assert_serving(client, model, exported["photos"][1])
        assert client.get("/health").json()["refused"] == 1


@contextmanager
def live(app) -> Iterator[int]:
    """The app under the real uvicorn on 127.0.0.1, in a thread: its port."""
    listening = socket.create_server(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False)
    server = uvicorn.Server(config)  # log_config None: its records reach caplog
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()
    try:
        until(lambda: server.started)
        yield listening.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(30)
        listening.close()


def until(condition, seconds: float = 60) -> None:
    """Wait for `condition()` (polling), or fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "waited in vain"
        time.sleep(0.05)


def stalled(port: int, body: bytes = b"", kind: str = "image/jpeg") -> socket.socket:
    """A POST /predict that sends its headers (Content-Length: 100,000) and `body`, then
    nothing more."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=60)
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {kind}\r\n"
        "Content-Length: 100000\r\n\r\n"
    )
    connection.sendall(head.encode() + body)
    return connection


def answer_of(connection: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of the response on a connection the server then closes."""
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines)
    return int(status.split()[1]), headers, body


FORM_START = (
    b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
    b"Content-Type: image/jpeg\r\n\r\n\xff\xd8"
)


def test_stalled_bodies_hold_no_slot(model, exported):
    """Three sockets that send headers and no body, against --max-pending 3: a real upload
    is still answered (a request counts as pending only once its body is in)."""
    with live(create_app(model, max_pending=3, threads=1)) as port:
        url = f"http://127.0.0.1:{port}/"
        sockets = [stalled(port) for _ in range(3)]
        until(lambda: httpx.get(url + "health").json()["reading"] == 3)
        assert httpx.get(url + "health").json()["pending"] == 0
        photo = exported["photos"][0]
        answer = httpx.post(url + "predict", files={"file": photo.read_bytes()}, timeout=60)
        assert answer.status_code == 200, answer.text
        for connection in sockets:
            connection.close()
        until(lambda: httpx.get(url + "health").json()["reading"] == 0)


def test_a_body_that_does_not_arrive_in_time_gets_408(model, exported, caplog):
    """No body, half a form, a body dripped a byte at a time (each byte in time, the whole
    not): 408 with one line once the body timeout passes, and the connection closed."""
    with live(create_app(model, threads=1, body_timeout_s=1)) as port:
        silent = stalled(port)
        half_form = stalled(port, FORM_START, "multipart/form-data; boundary=x")
        dripping = stalled(port, b"\xff")
        for _ in range(300):  # a byte every 0.2 s until the answer comes (or a minute)
            if select.select([dripping], [], [], 0.2)[0]:
                break
            dripping.sendall(b"\xff")
        for connection in (silent, half_form, dripping):
            status, headers, body = answer_of(connection)
            assert status == 408 and headers["connection"] == "close"
            detail = json.loads(body)["detail"]
            assert detail.startswith("the request's body did not arrive within 1 s of its headers")
            connection.close()
        gone = stalled(port, b"\xff" * 100)  # a client that leaves mid-body: no traceback
        gone.close()
        url = f"http://127.0.0.1:{port}/"
        until(lambda: httpx.get(url + "health").json()["reading"] == 0)
        photo = exported["photos"][1]
        answer = httpx.post(url + "predict", files={"file": photo.read_bytes()}, timeout=60)
        assert answer.status_code == 200, answer.text
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text


def test_a_photo_over_the_limits_is_refused_without_waiting_for_a_thread(model, exported):
    """Its header is read before admission: a thin PNG gets 422 while the one thread and
    the one --max-pending slot are busy, not 503 nor a wait."""
    gated = Gated(model)
    app = create_app(gated, max_pending=1, threads=1)
    with TestClient(app) as client, ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(upload, client, exported["photos"][0])
        assert gated.entered.wait(30)
        thin = client.post("/predict", files={"file": ("t.png", png_of_size(400, 2))})
        assert thin.status_code == 422 and "over the limit of" in thin.json()["detail"]
        gated.gate.set()
        assert first.result().status_code == 200


def test_threads_share_the_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert split_threads() == (2, 4) and split_threads(3) == (3, 2) and split_threads(16) == (16, 1)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert split_threads() == (1, 1)


def serving(target: Path) -> tuple[subprocess.Popen, list[str], str]:
    """`pipeline serve TARGET --port 0` started: (the process, its lines up to the one with
    the URL, the URL)."""
    command = [sys.executable, "-m", "pipeline", "serve", str(target), "--port", "0"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    while not lines or not lines[-1].startswith("serve: "):
        line = server.stdout.readline()
        if not line:
            server.kill()
            pytest.fail(f"the server ended: {lines} {server.stderr.read()}")
        lines.append(line.strip())
    match = re.search(
        r" at (http://127\.0\.0\.1:\d+/) \(2 threads x 1 ONNX Runtime threads;", lines[-1]
    )
    assert match, lines
    return server, lines, match[1]


def stopped(server: subprocess.Popen) -> str:
    """What the server printed after Ctrl-C, once it ended with code 0."""
    server.send_signal(signal.SIGINT)
    out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    return out.strip()


def test_the_verb_serves_on_a_port_and_stops_on_ctrl_c(exported, model):
    """`pipeline serve DIR --port 0`: one line with the URL, real HTTP, Ctrl-C ends it."""
    server, lines, url = serving(exported["folder"])
    try:
        assert lines == [lines[-1]] and "(3 classes, crop mode, fp32) at http://" in lines[-1]
        assert httpx.get(url + "health", timeout=30).json()["status"] == "ok"
        photo = exported["photos"][2]
        answer = httpx.post(url + "predict", files={"file": photo.read_bytes()}, timeout=60)
        assert answer.json()["scores"] == pytest.approx(scores_in_process(model, photo), rel=1e-6)
        code, out = invoke("serve", str(exported["folder"]), "--port", url.rsplit(":", 1)[1][:-1])
        (error,) = error_lines(out)
        assert (
            code == 2 and "cannot listen on 127.0.0.1" in error and "pick another --port" in error
        )
        assert stopped(server) == "serve: stopped after 1 prediction"
    finally:
        server.kill()


def test_a_head_is_exported_once_beside_its_file_and_served(exported, model, tmp_path):
    heads = tmp_path / "heads"
    heads.mkdir()
    for part in exported["head"].parent.glob("svm.*"):  # the head and its record
        shutil.copy(part, heads / part.name)
    photo = exported["photos"][4]
    for run in ("exports", "reuses"):
        server, lines, url = serving(heads / "svm.safetensors")
        try:
            if run == "exports":
                assert len(lines) == 2 and lines[0].startswith("export: "), lines
                head, folder = heads / "svm.safetensors", heads / "svm-model"
                assert lines[0] == f"export: {head} (crop mode, fp32) -> {folder}/", lines
            else:
                assert len(lines) == 1, lines
            assert lines[-1].startswith(f"serve: {heads / 'svm-model'} (3 classes")
            answer = httpx.post(url + "predict", files={"file": photo.read_bytes()}, timeout=60)
            assert answer.json()["scores"] == pytest.approx(
                scores_in_process(model, photo), rel=1e-6
            )
            assert stopped(server) == "serve: stopped after 1 prediction"
        finally:
            server.kill()


def test_the_verb_refuses_a_folder_that_is_no_export(tmp_path):
    code, out = invoke("serve", str(tmp_path))
    (error,) = error_lines(out)
    assert code == 2 and str(tmp_path) in error and "model.json" in error
    code, out = invoke("serve", "nohead", "--cache-dir", str(tmp_path))
    (error,) = error_lines(out)
    assert code == 2 and "no head named 'nohead'" in error


def test_the_verb_names_the_web_packages_it_lacks(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "python_multipart" else real(name, *a),
    )
    code, out = invoke("serve", str(tmp_path))
    (error,) = error_lines(out)
    assert (
        code == 2
        and error == "error: pipeline serve needs python-multipart: pip install 'midlevel[serve]'"
    )


def test_a_wide_photo_runs_alone_and_is_not_passed_over():
    """The work budget (issue 26): predictions run at once only while their work fits
    MAX_WORK 4:3 photos, first come first served, so a server's memory peaks at one widest
    photo's, not at one per thread; a wide photo waiting is not passed by smaller ones."""
    import asyncio

    from pipeline.deploy.server import WorkBudget

    async def scenario() -> list[tuple[str, str]]:
        budget, events = WorkBudget(5.0), []

        async def photo(name: str, work: float, seconds: float) -> None:
            async with budget.share(work):
                events.append(("start", name))
                await asyncio.sleep(seconds)
                events.append(("end", name))

        normal = asyncio.create_task(photo("normal", 1.0, 0.2))
        await asyncio.sleep(0.01)
        wide = asyncio.create_task(photo("wide", 5.0, 0.2))  # waits for normal to end
        await asyncio.sleep(0.01)
        after = asyncio.create_task(photo("after", 1.0, 0.1))  # fits now, but waits its turn
        pair = [asyncio.create_task(photo(f"pair{n}", 2.5, 0.1)) for n in (1, 2)]
        await asyncio.gather(normal, wide, after, *pair)
        return events

    events = asyncio.run(scenario())
    assert events[:4] == [
        ("start", "normal"),
        ("end", "normal"),
        ("start", "wide"),
        ("end", "wide"),
    ]
    running, most = set(), 0.0
    for kind, name in events:
        running = running | {name} if kind == "start" else running - {name}
        most = max(most, sum({"after": 1.0, "pair1": 2.5, "pair2": 2.5}.get(n, 0) for n in running))
    assert most == 3.5  # after and pair1 together; pair2 waited for the room
    assert events[4:6] == [("start", "after"), ("start", "pair1")]
