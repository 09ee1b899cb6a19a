"""`pipeline serve` under abuse, the real server in its own process on 127.0.0.1 with a
shared-mode model (where a thin photo once cost gigabytes): stalled bodies as many as
--max-pending, thin and huge-aspect photos and a burst of 200 uploads from 32 clients, all
at once. Every answer is a status (2xx or 4xx, never 5xx, never a dropped connection), the
stalled bodies get 408 while real uploads are answered, and the server's peak RSS stays
under a ceiling."""

from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from cli_helpers import SMALL, invoke
from test_server import FORM_START, answer_of, header_only, png_of_size, stalled, until

BODY_TIMEOUT_S = 10  # --body-timeout, shortened from 60 s
MAX_PENDING = 40  # as many stalled sockets: before issue 26 they held every slot
CLIENTS, BURST = 32, 200
# Idle, the server holds ~250 MB (Python, ONNX Runtime, the graphs); before issue 26 one
# 400x2 PNG took it to 1005 MB on this model, a 2000x2 one far past
CEILING_MB = 768


@pytest.fixture(scope="module")
def shared_model(shapes_voc, tmp_path_factory) -> Path:
    """An SVM head fitted on shared-mode features of the shapes tree, exported."""
    work = tmp_path_factory.mktemp("abuse")
    common = ["--voc-root", str(shapes_voc), "--cache-dir", str(work / "cache"), *SMALL]
    common += ["--mode", "shared"]
    code, out = invoke("extract", "--split", "trainval", "--workers", "0", *common)
    assert code == 0, out
    code, out = invoke("fit", "--head", "svm", *common)
    assert code == 0, out
    head = out.strip().rsplit(" -> ", 1)[1]
    code, out = invoke("export", "--head", head, "--output", str(work / "model"))
    assert code == 0, out
    return work / "model"


def serve(folder: Path) -> tuple[subprocess.Popen, str]:
    """The server on a free port, in its own process: (the process, its URL)."""
    command = [sys.executable, "-m", "pipeline", "serve", str(folder), "--port", "0",
               "--max-pending", str(MAX_PENDING), "--body-timeout", str(BODY_TIMEOUT_S)]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = server.stdout.readline()
    match = re.search(r" at (http://127\.0\.0\.1:\d+/) ", line)
    if not match:
        server.kill()
        pytest.fail(f"the server did not start: {line!r} {server.stderr.read()}")
    return server, match[1]


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status)[1]) / 1024


def abusive() -> list[tuple[str, bytes, int, str]]:
    """(name, file, status, a word of the reason) of photos that must be refused, and of the
    widest the limit admits (5:1)."""
    return [
        ("thin.png", png_of_size(400, 2), 422, "over the limit of"),
        ("sliver.png", png_of_size(32, 4), 422, "over the limit of"),
        ("header.png", header_only(png_of_size(2000, 2)), 422, "over the limit of"),
        ("aspect.png", png_of_size(10000, 20), 422, "over the limit of"),
        ("bomb.png", png_of_size(10000, 10000), 422, "over this server's limit of 89 MP"),
        ("wide.png", png_of_size(1000, 200), 200, ""),
    ]


def post(clients: threading.local, url: str, name: str, data: bytes) -> httpx.Response | str:
    """One upload on this thread's keep-alive connection: the response, or why none came."""
    if not hasattr(clients, "client"):
        clients.client = httpx.Client(base_url=url, timeout=300)
    try:
        return clients.client.post("predict", files={"file": (name, data)})
    except httpx.HTTPError as exc:
        return f"{name}: no answer ({type(exc).__name__}: {exc})"


def test_the_server_under_abuse(shared_model, shapes_voc):
    photos = sorted((shapes_voc / "JPEGImages").glob("*.jpg"))
    jobs = [(p.name, p.read_bytes(), 200, "") for p in photos] * (BURST // len(photos) + 1)
    jobs = jobs[:BURST] + abusive() * 4
    random.Random(0).shuffle(jobs)  # the abuse among the burst
    server, url = serve(shared_model)
    try:
        port = httpx.URL(url).port
        held = [stalled(port) for _ in range(MAX_PENDING // 2)]  # headers, no body
        held += [  # half a form
            stalled(port, FORM_START, "multipart/form-data; boundary=x")
            for _ in range(MAX_PENDING - len(held))
        ]
        until(lambda: httpx.get(url + "health").json()["reading"] == MAX_PENDING)
        first = httpx.post(url + "predict", files={"file": photos[0].read_bytes()}, timeout=300)
        assert first.status_code == 200, first.text  # stalled bodies hold no slot

        clients = threading.local()
        with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
            answers = list(pool.map(lambda job: post(clients, url, *job[:2]), jobs))
        dropped = [a for a in answers if isinstance(a, str)]
        assert not dropped, dropped[:3]
        for (name, _, status, reason), answer in zip(jobs, answers, strict=True):
            assert answer.status_code == status, (name, answer.text)
            assert status == 200 or reason in answer.json()["detail"], answer.text

        for connection in held:
            status, headers, body = answer_of(connection)
            assert status == 408 and headers["connection"] == "close", body
            connection.close()
        health = httpx.get(url + "health").json()
        assert (health["reading"], health["pending"], health["refused"]) == (0, 0, 0), health
        assert health["predictions"] == 1 + BURST + 4
        peak = peak_rss_mb(server.pid)
        assert peak < CEILING_MB, f"the server's peak RSS was {peak:.0f} MiB"
        print(f"\nserver peak RSS {peak:.0f} MiB (ceiling {CEILING_MB})")
    finally:
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=60)
    assert server.returncode == 0 and "Traceback" not in err and "Exception" not in err, err
