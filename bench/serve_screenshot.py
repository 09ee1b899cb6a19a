"""A screenshot of `pipeline serve`'s page with a photo scored: what a person sees, to check
the page by eye (and for docs/serve.md). Outside CI: it needs a headless Chromium
(Debian: apt-get install chromium).

It starts `pipeline serve DIR --port 0 --example PHOTO`, whose page, opened as /?example,
fetches the example photo from the server itself and posts it to /predict as a dropped file
would be: no browser automation, no file dialog. Chromium loads that page twice, headless:
first dumping the DOM, to check that the prediction finished (body data-state="done", no
error shown), then saving the screenshot; --virtual-time-budget lets the page's requests
finish before either.

    .venv/bin/python bench/serve_screenshot.py model/ --output docs/img/serve.png
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import click

DEFAULT_PHOTO = (
    Path(__file__).resolve().parents[2]
    / "shared" / "voc2007-subset" / "VOC2007" / "JPEGImages" / "000007.jpg"
)  # fmt: skip
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
BUDGET_MS = 60_000  # virtual time for the page's requests: a first prediction builds sessions


def chromium(url: str, *args: str) -> subprocess.CompletedProcess:
    browser = next((b for b in map(shutil.which, BROWSERS) if b), None)
    if browser is None:
        raise SystemExit("no headless Chromium here: apt-get install chromium (Debian)")
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--virtual-time-budget={BUDGET_MS}", *args, url]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


@click.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--photo", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=DEFAULT_PHOTO, show_default=True)  # fmt: skip
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("serve-screenshot.png"), show_default=True)  # fmt: skip
@click.option("--size", default="1280,900", show_default=True, help="Window width,height.")
def main(folder: Path, photo: Path, output: Path, size: str) -> None:
    command = [sys.executable, "-m", "pipeline", "serve", str(folder), "--port", "0",
               "--example", str(photo)]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        match = re.search(r"at (http://\S+/) ", line)
        if not match:
            raise SystemExit(f"the server did not start: {line!r}")
        page = f"{match[1]}?example"
        dom = chromium(page, "--dump-dom").stdout
        state = re.search(r'<body[^>]*data-state="(\w+)"', dom)
        error = re.search(r'<div id="error"[^>]*>([^<]*)</div>', dom)
        if not state or state[1] != "done":
            reason = error[1] if error and error[1] else "the page did not finish in time"
            raise SystemExit(f"{page}: {reason}")
        output.parent.mkdir(parents=True, exist_ok=True)
        shot = chromium(page, f"--window-size={size}", f"--screenshot={output.resolve()}")
        if not output.is_file():
            raise SystemExit(f"chromium wrote no screenshot: {shot.stderr[-500:]}")
        print(f"{photo.name} scored on {page} -> {output}")
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
