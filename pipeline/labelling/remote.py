"""The Label Studio the backend serves: its project's tasks (its own JSON export, through the
official label-studio-sdk) and their images, downloaded with its token from its host only,
into the backend's media folder, where the Label Studio dataset reader finds them."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from pipeline.datasets.labelstudio import image_file
from pipeline.datasets.paths import contained
from pipeline.errors import DataError, MidlevelError
from pipeline.io import write_atomically

PUBLISH_BATCH = 500  # predictions per import request


class RemoteError(MidlevelError):
    """Label Studio did not answer, or answered something the backend cannot use."""


class LabelStudioRemote:
    """One Label Studio server: `url` and an API key (legacy token or personal access token)."""

    def __init__(self, url: str, api_key: str, *, max_image_bytes: int, timeout: float = 30.0):
        from label_studio_sdk import LabelStudio

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise DataError(
                f"--label-studio {url!r}: not an http(s) URL; e.g. http://localhost:8080"
            )
        self.url = url.rstrip("/")
        self.max_image_bytes, self.timeout = max_image_bytes, timeout
        self.client = LabelStudio(base_url=self.url, api_key=api_key, timeout=timeout)

    def export(self, project: int) -> list[dict]:
        """Every task of the project with its annotations, as Label Studio exports them."""
        try:
            chunks = self.client.projects.exports.download_sync(
                project, export_type="JSON", download_all_tasks=True
            )
            tasks = json.loads(b"".join(chunks))
        except Exception as exc:  # the SDK's and httpx's errors: one line, the fit keeps its head
            raise RemoteError(f"Label Studio at {self.url}: export of project {project} failed "
                              f"({_short(exc)})") from None  # fmt: skip
        if not isinstance(tasks, list):
            raise RemoteError(f"Label Studio at {self.url}: project {project}'s export is no list")
        return tasks

    def publish(self, project: int, version: str, by_task: dict[int, dict]) -> None:
        """Push predictions into the project (its bulk import, PUBLISH_BATCH at a time) and make
        `version` the project's model version: the data manager's prediction score and the
        pre-labels follow the new head without anyone retrieving predictions."""
        rows = [{"task": task, **made} for task, made in by_task.items()]
        try:
            for start in range(0, len(rows), PUBLISH_BATCH):
                self.client.projects.import_predictions(
                    id=project, request=rows[start : start + PUBLISH_BATCH]
                )
            self.client.projects.update(id=project, model_version=version)
        except Exception as exc:  # the SDK's and httpx's errors: one line, the head serves on
            raise RemoteError(f"Label Studio at {self.url}: predictions of project {project} "
                              f"not imported ({_short(exc)})") from None  # fmt: skip

    def image_url(self, reference: str) -> str:
        """The URL to fetch an image reference from (`label_studio_url`)."""
        return label_studio_url(reference, self.url)

    def fetch_image(self, reference: str, media: Path) -> Path:
        """The image's file under `media` (where the reader looks for it), downloaded once."""
        target = media_target(reference, media)
        if target.is_file():
            return target
        url = self.image_url(reference)
        headers = self.client._client_wrapper.get_headers()  # the SDK's auth, whatever the token
        try:
            with httpx.stream("GET", url, headers=headers, timeout=self.timeout) as response:
                response.raise_for_status()
                data = bytearray()
                for chunk in response.iter_bytes():
                    data += chunk
                    if len(data) > self.max_image_bytes:
                        raise DataError(f"image {reference[:120]!r} is larger than "
                                        f"{self.max_image_bytes / 1e6:g} MB; left out")  # fmt: skip
        except httpx.HTTPError as exc:
            raise RemoteError(f"Label Studio at {self.url}: image {reference[:120]!r} could not "
                              f"be fetched ({_short(exc)})") from None  # fmt: skip
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(target, bytes(data))
        return target


def label_studio_url(reference: str, url: str) -> str:
    """Where Label Studio at `url` serves an image reference: its own /data/ paths on its own
    host; another host's URL (or a cloud URI) is refused, the token never leaves for it."""
    parts, netloc = urlsplit(reference), urlsplit(url).netloc
    if parts.scheme in ("http", "https") and parts.netloc != netloc:
        raise DataError(
            f"image {reference[:120]!r} is on {parts.netloc}, not on Label Studio's host "
            f"{netloc}; import it into Label Studio (upload or local-files storage)"
        )
    if parts.scheme not in ("", "http", "https") or not parts.path.startswith("/data/"):
        raise DataError(
            f"image {reference[:120]!r} is not a Label Studio upload or local file; import "
            "it into Label Studio (upload or local-files storage)"
        )
    query = f"?{parts.query}" if parts.query else ""
    return f"{url}{parts.path}{query}"


def media_target(reference: str, media: Path) -> Path:
    """Where a task's image goes under `media`: where the Label Studio reader looks for it,
    never outside `media` (`../` and absolute paths refused, in one line)."""
    listed = Path("Label Studio task")
    fix = "import the image into Label Studio under a plain path"
    return contained(image_file(reference, media, listed, "image"), media, listed, fix)


def _short(exc: Exception) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__
