"""Users' own datasets: each reader's class list, samples and truth, detection of the kind, and
each format end to end (extract -> fit -> score -> predict) with AP far above chance."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import SMALL, error_lines, invoke, read_ap
from PIL import Image
from synthetic_datasets import (
    CUSTOM_CLASSES,
    make_coco,
    make_cvat_voc,
    make_imagefolder,
    make_labels_csv,
)

from pipeline.datasets import detect_kind, open_dataset
from pipeline.datasets.coco import CocoDataset
from pipeline.datasets.image_files import ImageFilesDataset
from pipeline.datasets.voc import VocDataset
from pipeline.datasets.voc_xml import VOC_CLASSES
from pipeline.errors import DataError
from pipeline.reporting.overlays import overlay_layout

CHANCE_MARGIN = 80  # each class is in about half of the test images: chance AP is about 50


@pytest.fixture(scope="module")
def cvat(tmp_path_factory) -> Path:
    return make_cvat_voc(tmp_path_factory.mktemp("cvat"))


@pytest.fixture(scope="module")
def coco(shapes_voc, tmp_path_factory) -> Path:
    return make_coco(tmp_path_factory.mktemp("coco"), shapes_voc)


@pytest.fixture(scope="module")
def imagefolder(shapes_voc, tmp_path_factory) -> Path:
    return make_imagefolder(tmp_path_factory.mktemp("folder"), shapes_voc)


@pytest.fixture(scope="module")
def labels_csv(shapes_voc, tmp_path_factory) -> Path:
    return make_labels_csv(tmp_path_factory.mktemp("csv"), shapes_voc)


# --- readers ----------------------------------------------------------------------------------


def test_genuine_voc_keeps_the_twenty_classes(shapes_voc):
    dataset = VocDataset(shapes_voc)
    assert dataset.classes == VOC_CLASSES
    assert dataset.data_key(dataset_task()) is None  # the digests of today


def dataset_task():
    from pipeline.config import TaskConfig

    return TaskConfig()


def test_cvat_export_classes_from_labelmap_float_boxes_and_png(cvat, shapes_voc):
    dataset = open_dataset(f"voc:{cvat}")
    assert dataset.classes == CUSTOM_CLASSES  # labelmap order, its background dropped
    assert dataset.data_key(dataset_task()) == {"kind": "voc", "classes": list(CUSTOM_CLASSES)}
    split = dataset.load("test")
    original = VocDataset(shapes_voc).load("test")
    assert [s.sample_id for s in split.samples] == [s.sample_id for s in original.samples]
    assert {s.image_path.suffix for s in split.samples} == {".jpg", ".png"}
    for mine, theirs in zip(split.samples, original.samples, strict=True):
        np.testing.assert_array_equal(mine.boxes, theirs.boxes)  # "12.0" reads as 12
    # shape k of the shapes tree is class k: bus/car/cat there, scratch/dent/ok here
    remap = [VOC_CLASSES.index(c) for c in ("bus", "car", "cat")]
    np.testing.assert_array_equal(split.truth, original.truth[:, remap])


def test_voc_classes_without_a_list_are_the_sorted_union(cvat, tmp_path):
    tree = Path(shutil.copytree(cvat, tmp_path / "export"))
    (tree / "labelmap.txt").unlink()
    assert VocDataset(tree).classes == ("dent", "ok", "scratch")


def test_voc_labelmap_refuses_an_unknown_class(cvat, tmp_path):
    tree = Path(shutil.copytree(cvat, tmp_path / "export"))
    (tree / "labelmap.txt").write_text("scratch:1,2,3::\ndent:1,2,3::\n")
    with pytest.raises(DataError, match="unknown class 'ok'; the classes of this tree are"):
        VocDataset(tree).load("trainval")


def test_labelimg_flat_folder(cvat, tmp_path):
    """LabelImg saves each XML beside its image, in one folder, with no split lists."""
    flat = tmp_path / "photos"
    flat.mkdir()
    for folder in ("Annotations", "JPEGImages"):
        for path in (cvat / folder).iterdir():
            shutil.copy(path, flat / path.name)
    shutil.copy(cvat / "labelmap.txt", flat / "classes.txt")
    (flat / "classes.txt").write_text("\n".join(CUSTOM_CLASSES) + "\n")
    assert detect_kind(str(flat)) == "voc"
    dataset = VocDataset(flat)
    split = dataset.load("anything")  # no split lists: every annotated image
    assert len(split.samples) == 40 and dataset.classes == CUSTOM_CLASSES
    assert all(s.image_path.parent == flat for s in split.samples)


def test_coco_categories_by_id_crowd_and_subfolders(coco, shapes_voc):
    dataset = CocoDataset(coco)
    assert dataset.splits() == ("test", "trainval")
    assert dataset.classes == ("car", "bus", "cat")  # ids 3, 7, 12; the group id 0 dropped
    split = dataset.load("trainval")
    original = VocDataset(shapes_voc).load("trainval")
    assert [s.sample_id for s in split.samples] == [
        f"{'a' if int(s.sample_id) % 2 else 'b'}/{s.sample_id}" for s in original.samples
    ]
    first = split.samples[0]
    assert first.image_path == coco / "trainval" / "a" / "000001.jpg"
    assert first.difficult[0]  # the crowd box: never positive, never background
    order = [VOC_CLASSES.index(c) for c in dataset.classes]
    expected = original.truth[:, order].copy()
    name = dataset.classes[first.box_classes[0]]
    if not (first.box_classes[~first.difficult] == first.box_classes[0]).any():
        expected[0, dataset.classes.index(name)] = 0  # only a crowd of it: difficult
    np.testing.assert_array_equal(split.truth, expected)


def test_coco_single_json_with_images_beside_it(coco, tmp_path):
    data = json.loads((coco / "annotations" / "instances_test.json").read_text())
    (tmp_path / "export").mkdir()
    shutil.copytree(coco / "test", tmp_path / "export" / "images")
    for image in data["images"]:
        image["file_name"] = f"images/{image['file_name']}"
    (tmp_path / "export" / "result.json").write_text(json.dumps(data))
    dataset = open_dataset(str(tmp_path / "export" / "result.json"))  # kind from the suffix
    assert dataset.kind == "coco" and dataset.splits() == ("result",)
    assert len(dataset.load("result").samples) == 16


def test_coco_refuses_a_box_outside_and_a_missing_image(coco, tmp_path):
    root = Path(shutil.copytree(coco, tmp_path / "coco"))
    path = root / "annotations" / "instances_test.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["bbox"][2] = 1000.0
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="is empty or outside the 128x96 image") as exc:
        CocoDataset(root).load("test")
    assert str(path) in str(exc.value)
    (root / "trainval" / "b" / "000002.jpg").unlink()
    with pytest.raises(DataError, match="listed in instances_trainval.json but missing"):
        CocoDataset(root).load("trainval")


def test_imagefolder_and_csv_have_image_labels_only(imagefolder, labels_csv):
    folder = open_dataset(str(imagefolder))
    assert folder.kind == "imagefolder" and folder.splits() == ("train", "val")
    assert folder.classes == ("bus", "car", "cat")
    split = folder.load("train")
    assert not split.boxes and all(len(s.boxes) == 0 for s in split.samples)
    assert (split.truth == 1).sum(axis=1).tolist() == [1] * len(split.samples)
    table = open_dataset(str(labels_csv))
    assert table.kind == "csv" and table.splits() == ("trainval", "test")
    with open(labels_csv) as handle:
        rows = list(csv.DictReader(handle))
    test = table.load("test")
    for sample, row, truth in zip(test.samples, rows[24:], test.truth, strict=True):
        assert sample.sample_id == row["image"].removesuffix(".jpg")
        labelled = {table.classes[c] for c in np.flatnonzero(truth == 1)}
        assert labelled == set(row["labels"].split(";"))


def test_plain_images_from_folders_globs_and_files(shapes_voc):
    images = shapes_voc / "JPEGImages"
    assert len(ImageFilesDataset(str(images)).load("x").samples) == 40
    globbed = ImageFilesDataset(str(images / "00001*.jpg")).load("x")
    assert [s.sample_id for s in globbed.samples] == [f"0000{i}" for i in range(10, 20)]
    two = ImageFilesDataset([str(images / "000001.jpg"), str(images / "000002.jpg")])
    assert two.ids == ["000001", "000002"] and two.load("x").truth is None


def voc_and_coco(folder: Path) -> None:
    (folder / "Annotations").mkdir()
    (folder / "a.json").write_text("{}")


@pytest.mark.parametrize(
    ("make", "says"),
    [(voc_and_coco, "could be voc or coco"), (lambda d: None, "no dataset found there")],
    ids=["ambiguous", "empty"],
)
def test_detection_refuses_what_it_cannot_tell(tmp_path, make, says):
    make(tmp_path)
    with pytest.raises(DataError, match=says) as exc:
        detect_kind(str(tmp_path))
    assert "--data KIND:" in str(exc.value)


# --- end to end -------------------------------------------------------------------------------


def run_chain(data: str, cache: Path, train: str, test: str, *extra: str, head="svm") -> dict:
    """extract both splits, fit, score; returns the AP table and the common options."""
    common = ["--data", data, "--cache-dir", str(cache), *SMALL, *extra]
    for split in (train, test):
        code, out = invoke("extract", "--split", split, "--workers", "0", *common)
        assert code == 0, out
    code, out = invoke("fit", "--split", train, "--head", head, *common)
    assert code == 0, out
    ap_csv = cache / "ap.csv"
    code, out = invoke("score", "--split", test, "--train-split", train, "--head", head,
                       "--output", str(ap_csv), *common)  # fmt: skip
    assert code == 0, out
    return {"ap": read_ap(ap_csv), "common": common, "scores": cache / "ap-scores.csv"}


def predictions(path: Path) -> dict[str, dict]:
    with open(path) as handle:
        return {row["image"]: row for row in csv.DictReader(handle)}


def check_predictions_match_scores(run: dict, head_file: Path, images: list[Path], tmp_path):
    """predict on the test images gives score's pooled values (k log of the power mean)."""
    out = tmp_path / "predictions.csv"
    code, text = invoke(
        "predict", "--head", str(head_file), "--output", str(out), *map(str, images)
    )
    assert code == 0 and f"predict: {len(images)} images" in text, text
    rows = predictions(out)
    with open(run["scores"]) as handle:
        scored = list(csv.DictReader(handle))
    k = json.loads(head_file.with_suffix(".json").read_text())["k"]
    classes = [c for c in scored[0] if c != "image_id" and not c.startswith("truth_")]
    for row in scored:
        mine = rows[row["image_id"].rsplit("/", 1)[-1]]
        for c in classes:
            assert k * np.log(max(float(mine[c]), 1e-300)) == pytest.approx(float(row[c]), abs=1e-3)
    return rows


def test_cvat_export_end_to_end(cvat, tmp_path):
    run = run_chain(f"voc:{cvat}", tmp_path / "cache", "trainval", "test")
    assert set(run["ap"]) == {*CUSTOM_CLASSES, "mean"} and run["ap"]["mean"] > CHANCE_MARGIN
    (head,) = (tmp_path / "cache").glob("trainval-*/heads/svm.safetensors")
    test_ids = (cvat / "ImageSets" / "Main" / "test.txt").read_text().split()
    images = [next((cvat / "JPEGImages").glob(f"{i}.*")) for i in test_ids]
    rows = check_predictions_match_scores(run, head, images, tmp_path)
    assert all(r["top"].split(";")[0] in CUSTOM_CLASSES for r in rows.values())


def test_coco_end_to_end_and_localize_ids_with_folders(coco, tmp_path):
    run = run_chain(f"coco:{coco}", tmp_path / "cache", "trainval", "test")
    assert set(run["ap"]) == {"car", "bus", "cat", "mean"} and run["ap"]["mean"] > CHANCE_MARGIN
    code, out = invoke("localize", "--split", "test", "--head", "svm", "--output",
                       str(tmp_path / "loc"), "--overlays", "3", *run["common"])  # fmt: skip
    assert code == 0, out
    import h5py

    with h5py.File(tmp_path / "loc" / "maps.h5") as h5:
        keys = {entry.attrs["id"]: key for key, entry in h5["maps"].items()}
    assert len(keys) == 16 and keys["a/000025"] == "a%2F000025"
    assert sorted(p.name for p in (tmp_path / "loc" / "overlays").iterdir())[0].endswith(
        "%2F000025.png"
    )


def test_image_labels_train_whole_image_heads_and_refuse_patch_heads(
    imagefolder, labels_csv, tmp_path
):
    run = run_chain(f"imagefolder:{imagefolder}", tmp_path / "f", "train", "val", "--grid", "whole")
    assert run["ap"]["mean"] > CHANCE_MARGIN, run["ap"]
    run = run_chain(f"csv:{labels_csv}", tmp_path / "c", "trainval", "test", "--grid", "whole")
    assert run["ap"]["mean"] > CHANCE_MARGIN, run["ap"]
    (head,) = (tmp_path / "c").glob("trainval-*/heads/svm.safetensors")
    images = sorted((labels_csv.parent / "photos").glob("0000[23]*.jpg"))[:5]
    code, text = invoke("predict", "--head", str(head), "--output", str(tmp_path / "p.csv"),
                        "--maps", str(tmp_path / "maps"), *map(str, images))  # fmt: skip
    assert code == 2 and "a whole-image head has no patch maps" in text
    common = ["--data", f"csv:{labels_csv}", "--cache-dir", str(tmp_path / "c"), *SMALL]
    code, out = invoke("extract", "--split", "trainval", "--workers", "0", *common)
    assert code == 0, out
    code, out = invoke("fit", "--head", "mlp", *common)
    (line,) = error_lines(out)
    assert code == 2 and "image-level labels only, no boxes" in line and "--grid whole" in line


def test_a_train2017_split_keeps_a_sample_and_keep_overrides_it(coco, tmp_path):
    root = Path(shutil.copytree(coco, tmp_path / "coco"))
    (root / "annotations" / "instances_trainval.json").rename(
        root / "annotations" / "instances_train2017.json"
    )
    (root / "trainval").rename(root / "train2017")
    common = [
        "--data",
        f"coco:{root}",
        "--cache-dir",
        str(tmp_path / "cache"),
        *SMALL,
        "--workers",
        "0",
    ]
    counts = {}
    for keep in ("auto", "all"):
        code, out = invoke("extract", "--split", "train2017", "--keep", keep, *common)
        assert code == 0, out
        manifest = Path(out.strip().rsplit(" -> ", 1)[1]) / "manifest.json"
        counts[keep] = sum(
            s["patches"] for s in json.loads(manifest.read_text())["shards"].values()
        )
    assert counts["auto"] < 0.7 * counts["all"]  # the object patches and a 10% sample
    assert "rebuilt" not in out  # each keep rule has its own cache (issue 19, item 2)
    assert len(list((tmp_path / "cache").glob("train2017-*/manifest.json"))) == 2


def test_two_datasets_in_one_cache_stay_apart(cvat, shapes_voc, tmp_path):
    """Same split names and settings, two datasets: two caches; a stage given no --data
    asks which one."""
    cache = str(tmp_path / "cache")
    for data in (f"voc:{cvat}", f"voc:{shapes_voc}"):
        code, out = invoke("extract", "--split", "test", "--data", data, "--cache-dir", cache,
                           "--workers", "0", *SMALL)  # fmt: skip
        assert code == 0 and "nothing to do" not in out, out
    assert len(list(Path(cache).glob("test-*"))) == 2
    code, out = invoke("fit", "--split", "test", "--head", "svm", "--cache-dir", cache, *SMALL)
    (line,) = error_lines(out)
    assert code == 2 and "several datasets have 'test' features" in line and "--data" in line
    code, out = invoke("fit", "--split", "test", "--head", "svm", "--data", f"voc:{cvat}",
                       "--cache-dir", cache, *SMALL)  # fmt: skip
    assert code == 0 and "3 classes" in out, out


def test_non_ascii_ids_round_trip(tmp_path, shapes_voc):
    """Sample ids with accents and folders: stored, scored and mapped under their own name."""
    root = tmp_path / "coco"
    make_coco(root, shapes_voc)
    for split in ("trainval", "test"):
        path = root / "annotations" / f"instances_{split}.json"
        data = json.loads(path.read_text())
        for image in data["images"]:
            old = root / split / image["file_name"]
            image["file_name"] = image["file_name"].replace("a/", "été/")
            (root / split / image["file_name"]).parent.mkdir(exist_ok=True)
            old.rename(root / split / image["file_name"])
        path.write_text(json.dumps(data))
    run = run_chain(f"coco:{root}", tmp_path / "cache", "trainval", "test")
    with open(run["scores"]) as handle:
        ids = [row["image_id"] for row in csv.DictReader(handle)]
    assert "été/000025" in ids and "b/000026" in ids
    code, out = invoke("localize", "--split", "test", "--head", "svm", "--output",
                       str(tmp_path / "loc"), *run["common"])  # fmt: skip
    assert code == 0, out
    assert (tmp_path / "loc" / "overlays" / "été%2F000025.png").is_file()
    with Image.open(tmp_path / "loc" / "overlays" / "été%2F000025.png") as image:
        assert image.size == overlay_layout(128, 96, 2).size  # a panel per --top class


def test_plain_images_are_scored_without_labels_by_another_datasets_head(shapes_cache, tmp_path):
    cache, common = shapes_cache
    voc = Path(common[common.index("--voc-root") + 1])
    code, out = invoke("fit", "--head", "svm", *common)
    assert code == 0, out
    head = out.strip().rsplit(" -> ", 1)[1]  # the patch cache's (others share shapes_cache)
    photos = ["--data", f"images:{voc / 'JPEGImages'}", "--cache-dir", str(tmp_path), *SMALL]
    code, out = invoke("extract", "--split", "photos", "--workers", "0", *photos)
    assert code == 0 and "40 images" in out, out
    out_csv = tmp_path / "photos.csv"
    code, out = invoke("score", "--split", "photos", "--head", str(head), "--output",
                       str(out_csv), *photos)  # fmt: skip
    assert code == 0 and "40 images, no labels in this split (no AP)" in out, out
    with open(tmp_path / "photos-scores.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 40 and set(rows[0]) >= {"image_id", "bus", "car", "cat"}
    code, out = invoke("fit", "--split", "photos", "--head", "svm", *photos)
    (line,) = error_lines(out)
    assert code == 2 and "has no labels to train on" in line


# --- issue 19: images contained in the dataset, COCO types checked ---------------------------


def private_image(tmp_path: Path) -> Path:
    """An image outside every dataset: a reader must never read it."""
    path = tmp_path / "private" / "secret.jpg"
    path.parent.mkdir()
    Image.new("RGB", (128, 96), (1, 2, 3)).save(path)
    return path


def assert_outside(exc: pytest.ExceptionInfo, listed_in: Path, image: Path, root: Path) -> None:
    message = str(exc.value)
    assert message.startswith(f"{listed_in}: image ") and "outside the dataset" in message
    assert str(image) in message and str(root) in message and "\n" not in message, message


@pytest.mark.parametrize("how", ["../", "absolute", "image-dir"])
def test_coco_file_name_outside_the_dataset_is_refused(coco, tmp_path, how):
    root = Path(shutil.copytree(coco, tmp_path / "coco"))
    secret = private_image(tmp_path)
    path = root / "annotations" / "instances_test.json"
    data = json.loads(path.read_text())
    image_dir = None
    if how == "image-dir":  # outside --image-dir and outside the dataset
        image_dir = Path(shutil.copytree(root / "test", tmp_path / "photos"))
        data["images"][1]["file_name"] = "../private/secret.jpg"
    else:
        data["images"][1]["file_name"] = "../../private/secret.jpg" if how == "../" else str(secret)
    path.write_text(json.dumps(data))
    with pytest.raises(DataError) as exc:
        CocoDataset(root, image_dir).load("test")
    assert_outside(exc, path, Path("private/secret.jpg"), image_dir or root)
    split = CocoDataset(root, image_dir).load("test", skip_bad=True)
    assert "outside the dataset" in split.samples[1].error


@pytest.mark.parametrize("how", ["../", "absolute", "image-dir"])
def test_csv_image_outside_the_dataset_is_refused(labels_csv, tmp_path, how):
    root = Path(shutil.copytree(labels_csv.parent, tmp_path / "csv"))
    secret = private_image(tmp_path)
    path = root / "labels.csv"
    rows = path.read_text().splitlines()
    image_dir = None
    if how == "image-dir":
        image_dir = Path(shutil.copytree(root / "photos", tmp_path / "photos"))
        name = "../private/secret.jpg"
        rows = [rows[0], *(row.removeprefix("photos/") for row in rows[1:])]
    else:
        name = "../private/secret.jpg" if how == "../" else str(secret)
    rows[-1] = f"{name},car,test"
    path.write_text("\n".join(rows) + "\n")
    dataset = open_dataset(f"csv:{path}", image_dir=image_dir and str(image_dir))
    with pytest.raises(DataError) as exc:
        dataset.load("test")
    assert_outside(exc, path, Path("private/secret.jpg"), image_dir or root)
    assert "outside the dataset" in dataset.load("test", skip_bad=True).samples[-1].error


def test_imagefolder_symlink_to_a_photo_elsewhere_is_followed(imagefolder, tmp_path):
    """A link the user put in the folder (issue 26: links inside the root are followed)."""
    root = Path(shutil.copytree(imagefolder, tmp_path / "folder"))
    elsewhere = private_image(tmp_path)
    (root / "val" / "car" / "linked.jpg").symlink_to(elsewhere)
    samples = open_dataset(f"imagefolder:{root}").load("val").samples
    (linked,) = [s for s in samples if s.image_path.name == "linked.jpg"]
    assert linked.error is None and (linked.width, linked.height) == (128, 96)


def _set(*keys):
    """A change to one field of the COCO JSON: data[k0][k1]... = value."""

    def change(data, value):
        *path, last = keys
        for key in path:
            data = data[key]
        data[last] = value

    return change


# case -> (change, value, what the message says)
COCO_TYPES = {
    "string image id": (_set("images", 0, "id"), "1", "matches no image"),
    "annotation of no image": (_set("annotations", 0, "image_id"), 9999, "matches no image"),
    "width '500px'": (_set("images", 0, "width"), "500px", "'width' is '500px'"),
    "null in a bbox": (_set("annotations", 0, "bbox", 1), None, "'bbox' is ["),
    "images entry a string": (_set("images", 0), "000001.jpg", "images[0] is '000001.jpg'"),
    "string category id": (_set("categories", 1, "id"), "car", "'id' is 'car'"),
    "empty file_name": (_set("images", 0, "file_name"), "", "'file_name' is ''"),
    "annotations entry a list": (_set("annotations", 0), [1, 2], "annotations[0] is [1, 2]"),
    "repeated image id": (_set("images", 1, "id"), 1, "repeats the id of images[0]"),
}


@pytest.mark.parametrize("case", COCO_TYPES)
def test_coco_fields_of_the_wrong_type_are_one_line_naming_the_entry(coco, tmp_path, case):
    change, value, says = COCO_TYPES[case]
    root = Path(shutil.copytree(coco, tmp_path / "coco"))
    path = root / "annotations" / "instances_test.json"
    data = json.loads(path.read_text())
    change(data, value)
    path.write_text(json.dumps(data))
    with pytest.raises(DataError) as exc:
        CocoDataset(root).load("test")
    message = str(exc.value)
    assert message.startswith(f"{path}: ") and says in message and "\n" not in message, message
