"""Label Studio's own JSON export (a list of tasks): its classes, the annotation each task
takes, percent boxes as pixels, the two splits, image resolution inside ROOT, and detection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import SMALL, invoke, read_ap
from PIL import Image

from pipeline.config import TaskConfig
from pipeline.datasets import detect_kind, open_dataset
from pipeline.datasets.labelstudio import LabelStudioDataset
from pipeline.datasets.voc import VocDataset
from pipeline.errors import DataError
from pipeline.store.shards import read_shard


def photo(path: Path, size=(200, 100)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 80, 40)).save(path)
    return path


def choices(*names, name="label"):
    return {"type": "choices", "from_name": name, "to_name": "image", "value": {"choices": list(names)}}  # fmt: skip


def rectangle(label, x, y, w, h, rotation=0):
    value = {"x": x, "y": y, "width": w, "height": h, "rotation": rotation, "rectanglelabels": [label]}  # fmt: skip
    return {"type": "rectanglelabels", "from_name": "box", "to_name": "image",
            "original_width": 200, "original_height": 100, "value": value}  # fmt: skip


def annotation(*results, updated="2026-01-01T00:00:00Z", cancelled=False, ident=1):
    return {"id": ident, "was_cancelled": cancelled, "updated_at": updated, "result": list(results)}  # fmt: skip


def task(task_id, image, *annotations, **data):
    return {"id": task_id, "data": {"image": image, **data}, "annotations": list(annotations),
            "predictions": [{"result": [choices("ghost")]}]}  # fmt: skip


def export(folder: Path, tasks: list, name="export.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(tasks, indent=1))
    return path


@pytest.fixture
def photos(tmp_path) -> Path:
    for k in range(1, 6):
        photo(tmp_path / "photos" / f"{k}.jpg")
    return tmp_path


def local(k: int) -> str:
    return f"/data/local-files/?d=photos/{k}.jpg"


def test_choices_single_and_multi_give_image_labels_in_task_id_order(photos):
    path = export(photos, [
        task(3, local(3), annotation(choices("dog", "cat"))),
        task(1, local(1), annotation(choices("cat"))),
        task(2, local(2), annotation(choices("bird"))),
    ])  # fmt: skip
    dataset = open_dataset(f"labelstudio:{path}")
    assert isinstance(dataset, LabelStudioDataset) and dataset.kind == "labelstudio"
    assert dataset.classes == ("bird", "cat", "dog")  # not the predictions' "ghost"
    assert dataset.splits() == ("train", "tasks")
    split = dataset.load("train")
    assert [s.sample_id for s in split.samples] == ["1", "2", "3"]
    assert split.samples[0].image_path == photos / "photos" / "1.jpg"
    assert (split.samples[0].width, split.samples[0].height) == (200, 100)
    np.testing.assert_array_equal(split.truth, [[-1, 1, -1], [1, -1, -1], [-1, 1, 1]])
    assert split.boxes is False and all(len(s.boxes) == 0 for s in split.samples)
    key = dataset.data_key(TaskConfig())
    assert key == {"kind": "labelstudio", "classes": ["bird", "cat", "dog"]}


def test_rectangles_in_percent_become_pixels_of_the_image_as_read(photos):
    photo(photos / "photos" / "big.jpg", (400, 300))
    path = export(photos, [
        task(1, local(1), annotation(rectangle("dog", 10, 20, 30, 40), choices("cat"))),
        task(2, "photos/big.jpg", annotation(rectangle("cat", 90, 50, 10.2, 50.1))),
    ])  # fmt: skip
    split = LabelStudioDataset(path).load("train")
    first, big = split.samples
    np.testing.assert_allclose(first.boxes, [[20, 20, 80, 60]])  # of the 200x100 image
    assert list(first.box_classes) == [split.classes.index("dog")]
    np.testing.assert_allclose(big.boxes, [[360, 150, 400, 300]])  # 400.8, 300.3 clipped
    np.testing.assert_array_equal(split.truth, [[1, 1], [1, -1]])  # cat by choice, dog by box
    assert split.boxes is True


def test_a_rotated_box_is_refused_naming_the_task(photos):
    path = export(photos, [
        task(1, local(1), annotation(choices("cat"))),
        task(7, local(2), annotation(rectangle("dog", 10, 20, 30, 40, rotation=15))),
    ])  # fmt: skip
    with pytest.raises(DataError) as exc:
        LabelStudioDataset(path).load("train")
    message = str(exc.value)
    assert message.startswith(f"{path}: task 7") and "\n" not in message, message
    assert "rotated boxes are not supported" in message
    split = LabelStudioDataset(path).load("train", skip_bad=True)
    assert split.samples[0].error is None and "rotated" in split.samples[1].error


def test_cancelled_and_unannotated_tasks_train_skips_them_tasks_keeps_them_unknown(photos):
    path = export(photos, [
        task(4, local(4),
             annotation(choices("cat"), updated="2026-01-01T10:00:00Z", ident=1),
             annotation(choices("dog"), updated="2026-01-02T10:00:00Z", ident=2),  # latest used
             annotation(choices("bird"), updated="2026-01-03T10:00:00Z", cancelled=True)),
        task(2, local(2)),  # never annotated
        task(3, local(3), annotation(choices("cat"), cancelled=True)),
        task(1, local(1), annotation(choices("cat"))),
        task(5, local(5), annotation()),  # annotated, nothing in it: a negative
    ])  # fmt: skip
    dataset = LabelStudioDataset(path)
    assert dataset.classes == ("cat", "dog")  # not bird, only in a cancelled annotation
    assert dataset.skipped == ("2", "3")
    train = dataset.load("train")
    assert [s.sample_id for s in train.samples] == ["1", "4", "5"]
    np.testing.assert_array_equal(train.truth, [[1, -1], [-1, 1], [-1, -1]])
    tasks = dataset.load("tasks")
    assert [s.sample_id for s in tasks.samples] == ["1", "2", "3", "4", "5"]
    np.testing.assert_array_equal(tasks.truth[[1, 2]], np.zeros((2, 2)))  # unknown
    np.testing.assert_array_equal(tasks.truth[[0, 3, 4]], train.truth)
    assert all(len(s.boxes) == 0 and s.error is None for s in tasks.samples)
    assert [s.labelled for s in tasks.samples] == [True, False, False, True, True]
    assert [s.sample_id for s in dataset.load("tasks", limit=2).samples] == ["1", "2"]


def test_a_split_without_annotated_task_is_one_line(photos):
    path = export(photos, [task(1, local(1)), task(2, local(2))])
    dataset = LabelStudioDataset(path, classes=["cat"])
    assert len(dataset.load("tasks").samples) == 2
    with pytest.raises(DataError, match="has no annotated task of 2"):
        dataset.load("train")
    with pytest.raises(DataError, match="no choice or rectangle label"):
        _ = LabelStudioDataset(path).classes


def test_classes_given_keep_their_order_and_refuse_a_label_outside(photos):
    path = export(photos, [
        task(1, local(1), annotation(choices("cat"))),
        task(2, local(2), annotation(rectangle("cow", 10, 10, 20, 20))),
    ])  # fmt: skip
    dataset = LabelStudioDataset(path, classes=["dog", "cat"])
    assert dataset.classes == ("dog", "cat")
    with pytest.raises(DataError) as exc:
        dataset.load("train")
    message = str(exc.value)
    assert message.startswith(f"{path}: task 2 has the label 'cow'") and "\n" not in message
    split = dataset.load("train", skip_bad=True)
    np.testing.assert_array_equal(split.truth[0], [-1, 1])
    assert "'cow'" in split.samples[1].error


def outside(path: Path, value: str, root: Path, *, image_dir=None) -> str:
    """The one-line refusal of the image `value` names, and the same task as a broken sample."""
    path.write_text(json.dumps([task(1, value, annotation(choices("cat")))]))
    with pytest.raises(DataError) as exc:
        LabelStudioDataset(path, image_dir).load("train")
    message = str(exc.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    assert str(root) in message
    sample = LabelStudioDataset(path, image_dir).load("train", skip_bad=True).samples[0]
    assert sample.error == message
    return message


@pytest.mark.parametrize(
    "value",
    ["../private/secret.jpg", "/data/local-files/?d=../private/secret.jpg", "absolute",
     "/data/local-files/?d=absolute", "/data/upload/../../private/secret.jpg"],
)  # fmt: skip
def test_an_image_outside_root_is_refused(tmp_path, value):
    secret = photo(tmp_path / "private" / "secret.jpg")
    root = tmp_path / "project"
    photo(root / "photos" / "1.jpg")
    value = value.replace("absolute", str(secret))
    message = outside(root / "export.json", value, root)
    assert "outside the dataset" in message and "secret.jpg" in message


def test_an_image_dir_is_root_and_a_dotdot_through_a_link_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere" / "deep"
    photo(elsewhere / "1.jpg")
    photo(tmp_path / "elsewhere" / "secret.jpg")
    images = tmp_path / "images"
    images.mkdir()
    (images / "linked").symlink_to(elsewhere)  # the user's own link: followed
    path = tmp_path / "exports" / "export.json"
    path.parent.mkdir()
    path.write_text(json.dumps([task(1, "/data/local-files/?d=linked/1.jpg", annotation(choices("cat")))]))  # fmt: skip
    sample = LabelStudioDataset(path, images).load("train").samples[0]
    assert sample.error is None and sample.image_path == images / "linked" / "1.jpg"
    message = outside(path, "/data/local-files/?d=linked/../secret.jpg", images, image_dir=images)
    assert "outside the dataset" in message and "elsewhere/secret.jpg" in message


@pytest.mark.parametrize("value", ["https://example.com/cat.jpg", "s3://bucket/cat.jpg", "gs://b/c.jpg"])  # fmt: skip
def test_a_foreign_url_asks_to_download_the_images(photos, value):
    message = outside(photos / "export.json", value, photos)
    assert f"task 1 image {value} is not a local file" in message
    assert f"download the images under {photos}" in message


def test_label_studio_urls_of_any_host_uploads_and_encoded_names_resolve_under_root(photos):
    photo(photos / "upload" / "3" / "ab12-1.jpg")
    photo(photos / "7" / "cd34-2.jpg")  # an upload folder copied without its upload/ parent
    photo(photos / "photos" / "my cat.jpg")
    path = export(photos, [
        task(1, "/data/upload/3/ab12-1.jpg", annotation(choices("cat"))),
        task(2, "/data/upload/7/cd34-2.jpg", annotation(choices("cat"))),
        task(3, "http://localhost:8080/data/local-files/?d=photos%2Fmy%20cat.jpg", annotation(choices("cat"))),
        task(4, "https://ls.example.org/data/upload/3/ab12-1.jpg", annotation(choices("cat"))),
        task(5, "photos\\5.jpg", annotation(choices("cat"))),
    ])  # fmt: skip
    files = [s.image_path for s in open_dataset(str(path)).load("train").samples]
    assert files == [
        photos / "upload" / "3" / "ab12-1.jpg",
        photos / "7" / "cd34-2.jpg",
        photos / "photos" / "my cat.jpg",
        photos / "upload" / "3" / "ab12-1.jpg",
        photos / "photos" / "5.jpg",
    ]


def test_a_missing_image_is_one_line_or_a_broken_sample(photos):
    path = export(photos, [task(1, "photos/none.jpg", annotation(choices("cat")))])
    with pytest.raises(
        DataError, match="none.jpg: task 1 of export.json names it but it is missing"
    ):
        LabelStudioDataset(path).load("train")
    assert "missing" in LabelStudioDataset(path).load("train", skip_bad=True).samples[0].error


def test_the_image_field_default_only_string_and_ambiguous(photos):
    only = {"id": 1, "data": {"photo": local(1), "n": 3}, "annotations": [annotation(choices("cat"))]}  # fmt: skip
    path = export(photos, [only])
    assert LabelStudioDataset(path).load("train").samples[0].image_path.name == "1.jpg"
    two = {"id": 1, "data": {"photo": local(1), "other": local(2)}, "annotations": []}
    path = export(photos, [two])
    with pytest.raises(DataError, match="task 1 data has no 'image' field.*pass image_key"):
        _ = LabelStudioDataset(path).tasks
    dataset = LabelStudioDataset(path, image_key="other", classes=["cat"])
    assert dataset.load("tasks").samples[0].image_path.name == "2.jpg"


# case -> (tasks, what the message says)
BAD_EXPORTS = {
    "an object": ({"images": []}, "not a list of tasks"),
    "duplicate id": (
        [task(4, local(1)), task(4, local(2))],
        "task 4 appears twice (tasks[0] and tasks[1])",
    ),  # fmt: skip
    "id and its string": ([task(4, local(1)), task("4", local(2))], "task 4 appears twice"),
    "no id": ([{"data": {"image": local(1)}}], "tasks[0] 'id' is None"),
    "a task a string": (["x"], "tasks[0] is 'x', not an object"),
    "box field a string": (
        [
            task(
                1,
                local(1),
                annotation(
                    {
                        "type": "rectanglelabels",
                        "value": {
                            "x": "1",
                            "y": 0,
                            "width": 1,
                            "height": 1,
                            "rectanglelabels": ["a"],
                        },
                    }
                ),
            )
        ],  # fmt: skip
        "task 1 'x' is '1', not a finite number",
    ),
    "choices not a list": (
        [task(1, local(1), annotation({"type": "choices", "value": {"choices": "cat"}}))],
        "not a list of names",
    ),  # fmt: skip
    "result not a list": (
        [task(1, local(1), {"result": "cat"})],
        "'result' is 'cat', not a list of objects",
    ),  # fmt: skip
}


@pytest.mark.parametrize("case", BAD_EXPORTS)
def test_a_bad_export_is_one_line_naming_the_task(photos, case):
    tasks, says = BAD_EXPORTS[case]
    path = photos / "export.json"
    path.write_text(json.dumps(tasks))
    with pytest.raises(DataError) as exc:
        LabelStudioDataset(path).load("tasks")
    message = str(exc.value)
    assert message.startswith(f"{path}: ") and says in message and "\n" not in message, message


def test_detection_a_json_list_is_labelstudio_an_object_coco(photos):
    path = export(photos, [task(1, local(1), annotation(choices("cat")))])
    assert detect_kind(str(path)) == "labelstudio"
    padded = photos / "padded.json"
    padded.write_bytes(b"\xef\xbb\xbf \n\t" + path.read_bytes())
    assert detect_kind(str(padded)) == "labelstudio"
    coco = photos / "coco.json"
    coco.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    assert detect_kind(str(coco)) == "coco"
    assert open_dataset(str(path)).kind == "labelstudio"
    images = photos / "photos"
    moved = open_dataset(f"labelstudio:{export(photos, [task(1, '1.jpg')], 'other.json')}", image_dir=str(images))  # fmt: skip
    assert moved.images_root == images and str(images.resolve()) in moved.source()


def voc_tasks(voc_root: Path, split: str, first_id: int, *, annotated=True, limit=None):
    """A VOC split as Label Studio tasks: local-files URLs under `voc_root`, each VOC box as a
    rectangle in percent of its image (or no annotation)."""
    voc = VocDataset(voc_root).load(split, limit=limit)
    tasks = []
    for k, sample in enumerate(voc.samples):
        w, h = sample.width, sample.height
        results = [
            rectangle(
                voc.classes[c], 100 * x0 / w, 100 * y0 / h, 100 * (x1 - x0) / w, 100 * (y1 - y0) / h
            )  # fmt: skip
            for c, (x0, y0, x1, y1) in zip(sample.box_classes, sample.boxes.tolist(), strict=True)
        ]
        relative = sample.image_path.relative_to(voc_root).as_posix()
        made = [annotation(*results)] if annotated else []
        tasks.append(task(first_id + k, f"/data/local-files/?d={relative}", *made))
    return voc, tasks


def test_real_photos_boxes_read_back_within_a_pixel(voc_subset, tmp_path):
    """Ten VOC 2007 photos exported as Label Studio would: percent boxes of the VOC boxes."""
    voc, tasks = voc_tasks(voc_subset, "val", 100, limit=10)
    split = LabelStudioDataset(export(tmp_path, tasks), voc_subset).load("train")
    assert len(split.samples) == 10 and sum(len(s.boxes) for s in split.samples) > 10
    for mine, theirs in zip(split.samples, voc.samples, strict=True):
        assert (mine.width, mine.height) == (theirs.width, theirs.height)
        assert [split.classes[c] for c in mine.box_classes] == [voc.classes[c] for c in theirs.box_classes]  # fmt: skip
        np.testing.assert_allclose(mine.boxes, theirs.boxes, atol=1.0)


def test_extract_fit_score_on_train_and_tasks(shapes_voc, tmp_path):
    """The CLI end to end: a head fitted on the annotated tasks scores every task; the
    unannotated ones (the shapes tree's test images) are extracted, and left out of AP."""
    train, annotated = voc_tasks(shapes_voc, "trainval", 1)
    test, unannotated = voc_tasks(shapes_voc, "test", 1000, annotated=False)
    path = export(tmp_path, annotated + unannotated)
    common = ["--data", f"labelstudio:{path}", "--image-dir", str(shapes_voc),
              "--cache-dir", str(tmp_path / "cache"), *SMALL]  # fmt: skip
    for split in ("train", "tasks"):
        code, out = invoke("extract", "--split", split, "--workers", "0", *common)
        assert code == 0, out
        left_out = f"{len(test.samples)} tasks without an annotation left out (split 'tasks' has"
        assert (left_out in out) == (split == "train"), out
    n_tasks = len(train.samples) + len(test.samples)
    assert f"extract tasks: {n_tasks} images" in out, out
    (cache,) = (tmp_path / "cache").glob("tasks-*")
    shards = [read_shard(path) for path in sorted(cache.glob("shard-*.h5"))]
    labels = {i: shard.labels[shard.image_index == n] for shard in shards
              for n, i in enumerate(shard.image_ids)}  # fmt: skip
    assert all((labels[str(1000 + n)] == -1).all() for n in range(len(test.samples)))  # unknown
    assert all((labels[str(1 + n)] >= 0).any() for n in range(len(train.samples)))  # by boxes
    code, out = invoke("fit", "--split", "train", "--head", "svm", *common)
    assert code == 0, out
    ap_csv = tmp_path / "ap.csv"
    code, out = invoke("score", "--split", "tasks", "--train-split", "train", "--head", "svm",
                       "--output", str(ap_csv), *common)  # fmt: skip
    assert code == 0, out
    ap = read_ap(ap_csv)
    assert set(ap) == {"bus", "car", "cat", "mean"} and ap["mean"] > 80, ap
