"""docs/img/label-studio-data-manager.png: Label Studio's data manager, sorted by the backend's
prediction score, as a person sees it (outside CI). Starts a real Label Studio and
`pipeline label-studio`, imports 30 VOC photos, annotates 6, lets the backend refit, and has
headless Chromium (Debian's, driven by Playwright) log in and take the page.

    MIDLEVEL_LABEL_STUDIO=.venv-label-studio/bin/label-studio \\
        .venv-label-studio/bin/python tests/label_studio/screenshot.py  # pip install playwright pytest there
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTS.parent), str(TESTS), str(TESTS / "label_studio")]

from label_studio_files import CHOICES_CONFIG, choices_result, labeling_config  # noqa: E402
from label_studio_server import ADMIN_EMAIL, ADMIN_PASSWORD, running_label_studio  # noqa: E402

REPO = TESTS.parent
VOC = REPO.parent / "shared" / "voc2007-subset" / "VOC2007"
OUTPUT = REPO / "docs" / "img" / "label-studio-data-manager.png"
CLASSES = ("bus", "car", "cat", "person", "train")
CHROMIUM = "/usr/bin/chromium"
HIDDEN = (  # left: the id, annotations, the photo, the prediction's score, results and version
"tasks:inner_id", "tasks:completed_at", "tasks:cancelled_annotations",
          "tasks:total_predictions", "tasks:annotators", "tasks:annotations_results",
          "tasks:annotations_ids", "tasks:file_upload", "tasks:storage_filename",
          "tasks:created_at", "tasks:updated_at", "tasks:updated_by", "tasks:avg_lead_time",
          "tasks:draft_exists", "tasks:comment_count", "tasks:comment_authors",
          "tasks:unresolved_comment_count", "tasks:last_comment_updated_at")  # fmt: skip
VIEW = {"title": "by priority", "ordering": ["-tasks:predictions_score"],
        "hiddenColumns": {"explore": list(HIDDEN), "labeling": list(HIDDEN)}}  # fmt: skip


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="ls-shot-"))
    files = work / "files"
    (files / "photos").mkdir(parents=True)
    ids = (VOC / "ImageSets" / "Main" / "trainval.txt").read_text().split()[:30]
    for image_id in ids:
        shutil.copy(VOC / "JPEGImages" / f"{image_id}.jpg", files / "photos" / f"{image_id}.jpg")
    with running_label_studio(work / "ls", files) as studio:
        project = studio.create_project("VOC photos", labeling_config(CHOICES_CONFIG, CLASSES))
        tasks = studio.import_local_files(project, files / "photos")
        backend = subprocess.Popen(
            [str(REPO / ".venv" / "bin" / "python"), "-m", "pipeline", "label-studio",
             "--label-studio", studio.url, "--api-key", studio.token, "--port", "0",
             "--workdir", str(work / "backend"), "--scales", "3", "--min-scale", "0.4"],
            stdout=subprocess.PIPE, text=True, cwd=REPO,
        )  # fmt: skip
        try:
            url = backend.stdout.readline().split(" at ")[1].split()[0].rstrip("/")
            studio.connect_backend(project, url)
            for task, image_id in list(zip(tasks, ids, strict=True))[:6]:
                present = [c for c in CLASSES if _label(c, image_id) == 1]
                studio.annotate(task, choices_result(present))
            deadline = time.monotonic() + 300  # the backend refits, then pushes its predictions
            while studio.client.projects.get(id=project).model_version in (
                None,
                "",
                "midlevel",
                "cold-start",
            ):
                assert time.monotonic() < deadline, "no new head pushed to Label Studio"
                time.sleep(2)
            time.sleep(10)
            view = studio.client.views.create(project=project, data=VIEW)
            if "--hold" in sys.argv:  # keep both running to look at the page by hand
                print(studio.url, project, view.id, flush=True)
                time.sleep(3600)
            _screenshot(studio.url, f"/projects/{project}/data?tab={view.id}")
        finally:
            backend.terminate()
            backend.wait(60)
    print(f"wrote {OUTPUT}")


def _screenshot(base: str, page_path: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1300, "height": 760})
        page.goto(f"{base}/user/login/")
        page.fill("input[name=email]", ADMIN_EMAIL)
        page.fill("input[name=password]", ADMIN_PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_load_state("networkidle")
        page.goto(f"{base}{page_path}")
        page.wait_for_load_state("networkidle")
        time.sleep(5)
        page.screenshot(path=str(OUTPUT))
        browser.close()


def _label(name: str, image_id: str) -> int:
    lines = (VOC / "ImageSets" / "Main" / f"{name}_trainval.txt").read_text().splitlines()
    return next(int(v) for i, v in (line.split() for line in lines) if i == image_id)


if __name__ == "__main__":
    main()
