"""Requests/s and latency of `pipeline serve` under 1, 4 and 16 concurrent clients, against
what a user would run instead: a single-process loop of `Model.predict` in their own code.

Why: a server earns its keep if it loses little to HTTP, multipart parsing and JSON, and if
concurrent clients share the cores instead of fighting for them; the ratio to the in-process
loop says both at once (1.0: serving costs nothing; below: its overhead; above: overlap the
loop cannot have, e.g. one request's decode beside another's net).

1. in-process: Model.load(DIR) (ONNX Runtime on every core) and predict over the photos'
   bytes, one after another, after one warm-up photo; photos/s. Run before the server starts,
   so that the two never share the cores;
2. the real server, `pipeline serve DIR --port 0` in a subprocess (uvicorn, one process),
   per --workers-threads split; for each number of clients, that many threads each with
   its own keep-alive connection post the photos (multipart, as curl -F does) in turn,
   after one warm-up request per client; requests/s over the wall time, p50 and p95 of each
   request's latency (send to last byte), and requests/s over the in-process photos/s.

3. the abuse row, per split: --abuse-clients clients as in 2 while --stalled sockets hold a
   request each that sent its headers and no body (as many as the server's --max-pending,
   by default: before issue 26 they took every slot and real uploads got 503), reopened as
   the server answers them 408, and one client posts thin PNGs (400x2, 32x4) --thin-rate
   times a second (each refused with 422 from its header); requests/s and p95 of the real
   clients over those of the same clients without abuse (1.0: the abuse costs them nothing).

The clients run on the same machine as the server and take some of its CPU (httpx, a few
ms a request): on a small machine the ratios are a lower bound. With --maps every request
also asks for the overlay (?maps=1): score maps, drawing and a PNG in base64.

    .venv/bin/python bench/serve_load.py model/
    .venv/bin/python bench/serve_load.py model/ --images 24 --requests 48 --workers-threads 1,2
    .venv/bin/python bench/serve_load.py model/ --clients 4 --stalled 64 --thin-rate 10
"""

from __future__ import annotations

import io
import itertools
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import httpx
import numpy as np
from PIL import Image

from pipeline.config import ServeConfig
from pipeline.deploy.runtime import Model

DEFAULT_PHOTOS = (
    Path(__file__).resolve().parents[2] / "shared" / "voc2007-subset" / "VOC2007" / "JPEGImages"
)


def in_process(folder: Path, photos: list[bytes]) -> float:
    """Photos/s of a plain loop of Model.predict over the photos' bytes (after a warm-up)."""
    model = Model.load(folder)
    model.predict(photos[0])
    started = time.perf_counter()
    for data in photos:
        model.predict(data)
    return len(photos) / (time.perf_counter() - started)


def start_server(folder: Path, threads: int) -> tuple[subprocess.Popen, str]:
    """`pipeline serve` on a free port, and its URL once it listens."""
    command = [sys.executable, "-m", "pipeline", "serve", str(folder), "--port", "0",
               "--workers-threads", str(threads)]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    line = server.stdout.readline()
    match = re.search(r"at (http://\S+/) \((.*?);", line)
    if not match:
        server.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    print(f"  {line.strip()}")
    return server, match[1]


def load(url: str, photos: list[tuple[str, bytes]], clients: int, requests: int, maps: bool):
    """(requests/s, latencies in seconds) of `requests` posts from `clients` threads."""
    query = "?maps=1" if maps else ""
    local = threading.local()
    counter = iter(range(requests))
    lock = threading.Lock()

    def post(i: int) -> float:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=300)
        name, data = photos[i % len(photos)]
        started = time.perf_counter()
        response = local.client.post(f"predict{query}", files={"file": (name, data)})
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise SystemExit(f"{name}: HTTP {response.status_code} {response.text[:200]}")
        return elapsed

    started = []
    ready = threading.Barrier(clients, action=lambda: started.append(time.perf_counter()))

    def worker() -> list[float]:
        post(0)  # warm-up: this thread's connection, and the server's first calls
        ready.wait()  # the clock starts when every client is warm
        done = []
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return done
            done.append(post(i))

    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = [pool.submit(worker) for _ in range(clients)]
        latencies = [t for r in results for t in r.result()]
    seconds = time.perf_counter() - started[0]
    return len(latencies) / seconds, np.array(latencies)


def thin_png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


class Abuse:
    """While open: `stalled` connections that sent a POST's headers and no body (each reopened
    once the server answers it), and one client posting thin PNGs `rate` times a second;
    counts the status of every answer they get."""

    def __init__(self, url: str, stalled: int, rate: float):
        self.url, self.port, self.stalled, self.rate = url, httpx.URL(url).port, stalled, rate
        self.statuses: dict[int | str, int] = {}
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.hold), threading.Thread(target=self.thin)]

    def __enter__(self) -> Abuse:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def count(self, status: int | str) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def open(self) -> socket.socket:
        connection = socket.create_connection(("127.0.0.1", self.port))
        connection.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           b"Content-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n")  # fmt: skip
        return connection

    def hold(self) -> None:
        """Keep `stalled` bodies stalled; a connection the server answered is counted by its
        status (or "closed" when it closed without one) and replaced."""
        held = [self.open() for _ in range(self.stalled)]
        while not self.stop.is_set():
            for connection in select.select(held, [], [], 0.5)[0]:
                answer = connection.recv(65536)
                self.count(int(answer.split()[1]) if answer else "closed")
                connection.close()
                held[held.index(connection)] = self.open()
        for connection in held:
            connection.close()

    def thin(self) -> None:
        """Thin PNGs, alternately 400x2 and 32x4, at `rate` a second."""
        photos = [thin_png(400, 2), thin_png(32, 4)]
        with httpx.Client(base_url=self.url, timeout=300) as client:
            for i in itertools.count():
                if self.stop.wait(1 / self.rate):
                    return
                response = client.post("predict", files={"file": ("thin.png", photos[i % 2])})
                self.count(response.status_code)

    def summary(self) -> str:
        return ", ".join(f"{status}: {n}" for status, n in sorted(self.statuses.items(), key=str))


@click.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--photos", "photo_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=DEFAULT_PHOTOS, show_default=True, help="Real photos: the first --images.")  # fmt: skip
@click.option("--images", type=int, default=16, show_default=True)
@click.option(
    "--requests", type=int, default=48, show_default=True, help="Timed requests per level."
)
@click.option(
    "--clients", default="1,4,16", show_default=True, help="Concurrent clients per level."
)
@click.option("--workers-threads", "splits", default="2", show_default=True,
              help="The server's prediction threads; a list runs each (e.g. 1,2).")  # fmt: skip
@click.option("--maps", is_flag=True, help="Every request asks for the overlay too (?maps=1).")
@click.option("--abuse-clients", type=int, default=4, show_default=True,
              help="Real clients of the abuse row (0: no abuse row).")  # fmt: skip
@click.option("--stalled", type=int, default=ServeConfig.max_pending, show_default=True,
              help="Stalled bodies held during the abuse row.")  # fmt: skip
@click.option("--thin-rate", type=float, default=10.0, show_default=True,
              help="Thin PNGs posted a second during the abuse row.")  # fmt: skip
def main(folder: Path, photo_dir: Path, images: int, requests: int, clients: str, splits: str,
         maps: bool, abuse_clients: int, stalled: int, thin_rate: float) -> None:  # fmt: skip
    paths = sorted(photo_dir.glob("*.jpg"))[:images]
    if not paths:
        raise SystemExit(f"{photo_dir}: no .jpg photos")
    photos = [(p.name, p.read_bytes()) for p in paths]
    baseline = in_process(folder, [data for _, data in photos])
    print(f"{folder}: {len(photos)} photos from {photo_dir}; in-process loop: {baseline:.2f} photos/s"
          f"{' (without maps)' if maps else ''}")  # fmt: skip
    print(f"{'threads':>7} {'clients':>7} {'requests':>8} {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7} "
          f"{'/ in-process':>12}")  # fmt: skip
    for threads in (int(t) for t in splits.split(",")):
        server, url = start_server(folder, threads)
        try:
            rows = {}
            for n in (int(c) for c in clients.split(",")):
                rows[n] = row(threads, n, *load(url, photos, n, requests, maps), baseline)
            if abuse_clients:
                if abuse_clients not in rows:
                    rows[abuse_clients] = row(
                        threads, abuse_clients, *load(url, photos, abuse_clients, requests, maps),
                        baseline,
                    )  # fmt: skip
                with Abuse(url, stalled, thin_rate) as abuse:
                    measured = load(url, photos, abuse_clients, requests, maps)
                rate, p95 = row(threads, f"{abuse_clients}+abuse", *measured, baseline)
                quiet_rate, quiet_p95 = rows[abuse_clients]
                print(f"  abuse: {stalled} stalled bodies, thin PNGs at {thin_rate:g}/s; answers "
                      f"{abuse.summary()}; against {abuse_clients} clients without: "
                      f"req/s x{rate / quiet_rate:.2f}, p95 x{p95 / quiet_p95:.2f}")  # fmt: skip
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=30)


def row(threads: int, clients, rate: float, latencies: np.ndarray, baseline: float):
    """Print one row of the table; (requests/s, p95 seconds)."""
    p50, p95 = np.percentile(latencies, [50, 95]) * 1000
    print(f"{threads:>7} {clients!s:>7} {len(latencies):>8} {rate:>7.2f} {p50:>7.0f} "
          f"{p95:>7.0f} {rate / baseline:>12.2f}")  # fmt: skip
    return rate, p95 / 1000


if __name__ == "__main__":
    main()
