"""Peak memory of `pipeline serve` (VmHWM of the server process), against the machine's memory
and against the bound docs/serve.md states, for what a server meets: normal photos one at a
time and two at once, and the widest photos the work limit admits (features/work.py), one
and two at once (the work budget makes the second wait: pipeline/deploy/server.py).

Why: one photo's memory grows with its work (shared mode runs the trunk on the photo resized
per scale); a server must hold a stated ceiling whatever its clients send, or an operator
cannot size its machine. Each row is a fresh server, so that each peak is that row's own.

    .venv/bin/python bench/serve_memory.py model/ --photos ../shared/voc2007-subset/VOC2007/JPEGImages
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from PIL import Image

from pipeline.config import GridConfig
from pipeline.features.work import widest_aspect

BOUND_GIB = 3.0  # the ceiling docs/serve.md states for the default model, whatever is sent


def serve(folder: Path) -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "serve", str(folder), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
    )  # fmt: skip
    url = re.search(r" at (http://\S+/) ", server.stdout.readline())
    if url is None:
        server.kill()
        sys.exit("the server did not start")
    return server, url[1]


def peak_gib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status)[1]) / 2**20


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def row(folder: Path, name: str, batches: list[list[bytes]]) -> float:
    """A fresh server's peak after posting each batch's photos at once, batch after batch."""
    server, url = serve(folder)
    try:
        with httpx.Client(base_url=url, timeout=600) as client, ThreadPoolExecutor(2) as pool:
            for batch in batches:
                answers = list(
                    pool.map(
                        lambda data: client.post("predict", files={"file": ("p.jpg", data)}), batch
                    )
                )
                bad = [a.status_code for a in answers if a.status_code != 200]
                if bad:
                    sys.exit(f"{name}: answers {bad}")
        return peak_gib(server.pid)
    finally:
        os.killpg(server.pid, signal.SIGINT)
        server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a model folder of pipeline export")
    parser.add_argument("--photos", type=Path, required=True, help="a folder of JPEG photos")
    parser.add_argument("--images", type=int, default=8, help="normal photos sent")
    args = parser.parse_args()
    info = json.loads((args.model / "model.json").read_text())
    grid, size, mode = GridConfig(**info["grid"]), info["input_size"], info["mode"]
    photos = sorted(args.photos.glob("*.jpg"))[: args.images]
    normal = [p.read_bytes() for p in photos]
    aspect = widest_aspect(grid, size, mode)
    high = int((Image.MAX_IMAGE_PIXELS / aspect) ** 0.5)  # as many pixels as the server takes
    with Image.open(photos[0]) as first:  # a real photo stretched to the widest aspect
        wide = jpeg(first.resize((round(500 * aspect), 500)))
        huge = jpeg(first.resize((int(high * aspect), high)))
        side = int((Image.MAX_IMAGE_PIXELS / 12) ** 0.5)  # 4:3 at as many pixels
        big = jpeg(first.resize((4 * side, 3 * side)))
    rows = {
        "normal photos, one at a time": [[p] for p in normal],
        "normal photos, two at once": [normal[i : i + 2] for i in range(0, len(normal), 2)],
        f"the widest admitted ({aspect:.1f}:1, 500 px high), one": [[wide]],
        f"the widest admitted ({aspect:.1f}:1, 500 px high), two at once": [[wide, wide]],
        f"a 4:3 photo of {Image.MAX_IMAGE_PIXELS / 1e6:.0f} MP, two at once": [[big, big]],
        f"the widest admitted at {Image.MAX_IMAGE_PIXELS / 1e6:.0f} MP, one": [[huge]],
    }
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(f"model {args.model} ({mode} mode, {info['precision']}); machine {memory:.1f} GiB")
    print(f"| sent | peak RSS GiB | / machine | / bound {BOUND_GIB:g} GiB |")
    print("|---|---:|---:|---:|")
    for name, batches in rows.items():
        peak = row(args.model, name, batches)
        print(f"| {name} | {peak:.2f} | {peak / memory:.3f} | {peak / BOUND_GIB:.2f} |")


if __name__ == "__main__":
    main()
