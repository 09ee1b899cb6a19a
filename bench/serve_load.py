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

The clients run on the same machine as the server and take some of its CPU (httpx, a few
ms a request): on a small machine the ratios are a lower bound. With --maps every request
also asks for the overlay (?maps=1): score maps, drawing and a PNG in base64.

    .venv/bin/python bench/serve_load.py model/
    .venv/bin/python bench/serve_load.py model/ --images 24 --requests 48 --workers-threads 1,2
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import httpx
import numpy as np

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
def main(folder: Path, photo_dir: Path, images: int, requests: int, clients: str, splits: str,
         maps: bool) -> None:  # fmt: skip
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
            for n in (int(c) for c in clients.split(",")):
                rate, latencies = load(url, photos, n, requests, maps)
                p50, p95 = np.percentile(latencies, [50, 95]) * 1000
                print(f"{threads:>7} {n:>7} {len(latencies):>8} {rate:>7.2f} {p50:>7.0f} "
                      f"{p95:>7.0f} {rate / baseline:>12.2f}")  # fmt: skip
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
