"""A Label Studio project held in files, for the backend's tests in CI (where no Label Studio
runs): its JSON export as Label Studio writes it, and its images under a folder, served
through the same two calls the backend makes of the real one (tests/label_studio_server.py
runs that). Annotating here is what Label Studio does on submit: a task gains an annotation."""

from __future__ import annotations

import copy
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

from pipeline.labelling.remote import RemoteError, label_studio_url, media_target

CHOICES_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="label" toName="image" choice="multiple">{}</Choices>
</View>"""
URL = "http://127.0.0.1:1"  # the Label Studio these files stand for
BOXES_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="box" toName="image">{}</RectangleLabels>
</View>"""


def labeling_config(template: str, classes) -> str:
    tag = "Choice" if "<Choices" in template else "Label"
    return template.format("".join(f'<{tag} value="{c}"/>' for c in classes))


class FileProject:
    """Tasks over real photos; `gone` makes every call fail as a stopped server would."""

    def __init__(self, photos: list[Path], files: Path, first_id: int = 1):
        self.files, self.gone, self.exports = files, False, 0
        self.published: list[tuple[str, list[int]]] = []  # (version, tasks) pushed to it
        files.mkdir(parents=True, exist_ok=True)
        self.tasks = []
        for n, photo in enumerate(photos, first_id):
            shutil.copy(photo, files / photo.name)
            reference = f"/data/local-files/?d=photos/{photo.name}"
            self.tasks.append({"id": n, "data": {"image": reference}, "annotations": []})

    def export(self, project: int) -> list[dict]:
        if self.gone:
            raise RemoteError(f"Label Studio at {URL}: export failed (connection refused)")
        self.exports += 1
        return copy.deepcopy(self.tasks)

    def fetch_image(self, reference: str, media: Path) -> Path:
        if self.gone:
            raise RemoteError(f"Label Studio at {URL}: image {reference} failed")
        label_studio_url(reference, URL)  # the real remote's refusals: another host, no /data/
        target = media_target(reference, media)  # as the real remote: inside media/ only
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.files / Path(reference).name, target)
        return target

    def publish(self, project: int, version: str, by_task: dict[int, dict]) -> None:
        if self.gone:
            raise RemoteError(f"Label Studio at {URL}: predictions not imported")
        self.published.append((version, sorted(by_task)))

    def annotate(self, task_id: int, result: list[dict]) -> None:
        (task,) = (t for t in self.tasks if t["id"] == task_id)
        task["annotations"].append({
            "id": 1000 + task_id, "was_cancelled": False,
            "updated_at": f"2026-12-07T00:00:{len(task['annotations']):02d}Z", "result": result,
        })  # fmt: skip


def choices_result(classes) -> list[dict]:
    return [{"type": "choices", "from_name": "label", "to_name": "image",
             "value": {"choices": list(classes)}}]  # fmt: skip


def boxes_result(objects, width: int, height: int) -> list[dict]:
    """Label Studio's rectangles (percent) of (class, (x0, y0, x1, y1) pixels) pairs."""
    return [
        {"type": "rectanglelabels", "from_name": "box", "to_name": "image",
         "original_width": width, "original_height": height,
         "value": {"x": 100 * x0 / width, "y": 100 * y0 / height, "width": 100 * (x1 - x0) / width,
                   "height": 100 * (y1 - y0) / height, "rotation": 0, "rectanglelabels": [name]}}
        for name, (x0, y0, x1, y1) in objects
    ]  # fmt: skip


def voc_objects(voc: Path, image_id: str, classes) -> tuple[list, int, int]:
    """(class, box) of the image's VOC objects among `classes` (difficult ones left out),
    its width and height."""
    root = ET.parse(voc / "Annotations" / f"{image_id}.xml").getroot()
    size = root.find("size")
    objects = [
        (
            o.findtext("name"),
            tuple(float(o.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")),
        )
        for o in root.iter("object")
        if o.findtext("name") in classes and o.findtext("difficult", "0") != "1"
    ]
    return objects, int(size.findtext("width")), int(size.findtext("height"))
