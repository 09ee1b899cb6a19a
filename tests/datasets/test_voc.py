import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.datasets.voc import image_labels, load_records, read_split, resolve_year_dir
from pipeline.datasets.voc_writer import VocSample, write_voc_tree
from pipeline.datasets.voc_xml import VOC_CLASSES, VocObject, class_label, parse_annotation
from pipeline.errors import DataError

SIZE = "<size><width>100</width><height>80</height><depth>3</depth></size>"


def obj_xml(name="car", box=(1, 1, 10, 10), difficult=None) -> str:
    flag = "" if difficult is None else f"<difficult>{difficult}</difficult>"
    xmin, ymin, xmax, ymax = box
    return (
        f"<object><name>{name}</name>{flag}<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
        f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
    )


def write_xml(tmp_path: Path, body: str, *, size: str = SIZE, name: str = "000001") -> Path:
    path = tmp_path / f"{name}.xml"
    path.write_text(f"<annotation><filename>{name}.jpg</filename>{size}{body}</annotation>")
    return path


def sample(image_id: str, *objects: VocObject, size=(64, 48)) -> VocSample:
    return VocSample(image_id, Image.new("RGB", size, (90, 90, 90)), tuple(objects))


def small_tree(year_dir: Path) -> Path:
    samples = [
        sample("000001", VocObject("car", (0, 0, 20, 20))),
        sample("000002", VocObject("car", (5, 5, 30, 30), True), VocObject("dog", (0, 0, 9, 9))),
        sample("000003", VocObject("dog", (10, 10, 40, 40))),
    ]
    splits = {
        "train": ["000001", "000002"],
        "val": ["000003"],
        "trainval": ["000001", "000002", "000003"],
    }
    return write_voc_tree(year_dir, samples, splits)


def annotated_dir(path: Path) -> Path:
    (path / "Annotations").mkdir(parents=True)
    return path


# --- resolve_year_dir ---------------------------------------------------------------------


def test_resolve_year_dir_itself(tmp_path):
    year = annotated_dir(tmp_path / "VOC2007")
    assert resolve_year_dir(year) == year


def test_resolve_from_vocdevkit(tmp_path):
    year = annotated_dir(tmp_path / "VOCdevkit" / "VOC2007")
    assert resolve_year_dir(tmp_path / "VOCdevkit") == year


def test_resolve_from_torchvision_root(tmp_path):
    year = annotated_dir(tmp_path / "VOCdevkit" / "VOC2007")
    assert resolve_year_dir(tmp_path) == year
    assert resolve_year_dir(str(tmp_path)) == year


def test_resolve_ignores_year_dirs_without_annotations(tmp_path):
    year = annotated_dir(tmp_path / "VOCdevkit" / "VOC2007")
    (tmp_path / "VOCdevkit" / "VOC2012" / "JPEGImages").mkdir(parents=True)
    assert resolve_year_dir(tmp_path) == year


def test_resolve_several_years(tmp_path):
    annotated_dir(tmp_path / "VOCdevkit" / "VOC2007")
    annotated_dir(tmp_path / "VOCdevkit" / "VOC2012")
    with pytest.raises(DataError, match="several VOC years") as exc:
        resolve_year_dir(tmp_path)
    assert "VOC2007" in str(exc.value) and "VOC2012" in str(exc.value)


def test_resolve_not_voc(tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(DataError, match="not a VOC tree") as exc:
        resolve_year_dir(tmp_path)
    assert str(tmp_path) in str(exc.value)


def test_resolve_missing(tmp_path):
    with pytest.raises(DataError, match="not found") as exc:
        resolve_year_dir(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(exc.value)


# --- read_split ---------------------------------------------------------------------------


def test_read_split(tmp_path):
    year = small_tree(tmp_path / "VOC2007")
    assert read_split(year, "train") == ["000001", "000002"]
    assert read_split(year, "trainval") == ["000001", "000002", "000003"]


def test_read_split_skips_blank_lines_and_strips_each_id(tmp_path):
    """One id a line, whole (an id may hold a space, issue 19), stripped."""
    main = tmp_path / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (main / "test.txt").write_text("000004\n\n  \n  000002 \t\n")
    assert read_split(tmp_path, "test") == ["000004", "000002"]


def test_read_split_unknown(tmp_path):
    year = small_tree(tmp_path / "VOC2007")
    with pytest.raises(DataError) as exc:
        read_split(year, "test")
    message = str(exc.value)
    assert str(year / "ImageSets" / "Main" / "test.txt") in message
    assert "train, trainval, val" in message  # the splits, not the per-class files
    assert "car_train" not in message


def test_read_split_empty(tmp_path):
    main = tmp_path / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (main / "test.txt").write_text("\n")
    with pytest.raises(DataError, match="empty"):
        read_split(tmp_path, "test")


def test_read_split_without_imagesets(tmp_path):
    annotations = tmp_path / "Annotations"
    annotations.mkdir()
    for image_id in ("000010", "000002", "000007"):
        (annotations / f"{image_id}.xml").write_text("<annotation/>")
    (annotations / "notes.txt").write_text("")
    assert read_split(tmp_path, "anything") == ["000002", "000007", "000010"]


def test_read_split_without_imagesets_or_annotations_is_empty(tmp_path):
    (tmp_path / "Annotations").mkdir()
    with pytest.raises(DataError, match="empty"):
        read_split(tmp_path, "trainval")


# --- parse_annotation ---------------------------------------------------------------------


def test_parse_converts_to_zero_based_edges(tmp_path):
    path = write_xml(tmp_path, obj_xml("car", (1, 1, 100, 80)) + obj_xml("dog", (11, 21, 30, 40)))
    record = parse_annotation(path)
    assert (record.image_id, record.width, record.height) == ("000001", 100, 80)
    assert record.objects[0] == VocObject("car", (0.0, 0.0, 100.0, 80.0), False)
    assert record.objects[1].box == (10.0, 20.0, 30.0, 40.0)
    boxes = record.boxes()
    assert boxes.dtype == np.float32 and boxes.shape == (2, 4)
    # area = pixel count of the inclusive 11..30 x 21..40 range
    assert (boxes[1, 2] - boxes[1, 0]) * (boxes[1, 3] - boxes[1, 1]) == 20 * 20


def test_parse_one_pixel_box(tmp_path):
    record = parse_annotation(write_xml(tmp_path, obj_xml("car", (5, 5, 5, 5))))
    assert record.objects[0].box == (4.0, 4.0, 5.0, 5.0)


@pytest.mark.parametrize(
    ("flag", "expected"), [(None, False), ("0", False), ("1", True), (" 1 ", True), ("", False)]
)
def test_parse_difficult_flag(tmp_path, flag, expected):
    record = parse_annotation(write_xml(tmp_path, obj_xml(difficult=flag)))
    assert record.objects[0].difficult is expected


def test_parse_no_objects(tmp_path):
    # an image with no objects is kept: all its patches are background
    record = parse_annotation(write_xml(tmp_path, ""))
    assert record.objects == ()
    assert record.boxes().shape == (0, 4)


def test_parse_round_trips_the_writer(tmp_path):
    year = small_tree(tmp_path / "VOC2007")
    record = parse_annotation(year / "Annotations" / "000002.xml")
    assert record.objects == (
        VocObject("car", (5.0, 5.0, 30.0, 30.0), True),
        VocObject("dog", (0.0, 0.0, 9.0, 9.0), False),
    )
    assert (record.width, record.height) == (64, 48)


BAD_FILES = {
    "malformed XML": ("<annotation><size>", None),
    "missing size": (f"<annotation>{obj_xml()}</annotation>", None),
    "missing width": (
        f"<annotation><size><height>80</height></size>{obj_xml()}</annotation>",
        "<width>",
    ),
    "non-numeric width": (
        f"<annotation><size><width>wide</width><height>80</height></size>{obj_xml()}</annotation>",
        "'wide'",
    ),
    "zero size": (
        f"<annotation><size><width>0</width><height>80</height></size>{obj_xml()}</annotation>",
        "0x80",
    ),
    "non-numeric coordinate": (
        f"<annotation>{SIZE}{obj_xml(box=(1, 'a', 10, 10))}</annotation>",
        "<ymin>",
    ),
    "box past the right edge": (
        f"<annotation>{SIZE}{obj_xml(box=(1, 1, 102, 10))}</annotation>",
        "100x80",
    ),
    "box past the bottom edge": (
        f"<annotation>{SIZE}{obj_xml(box=(1, 1, 10, 82))}</annotation>",
        "100x80",
    ),
    "box before the left edge": (
        f"<annotation>{SIZE}{obj_xml(box=(-1, 1, 10, 10))}</annotation>",
        "100x80",
    ),
    "empty box": (f"<annotation>{SIZE}{obj_xml(box=(20, 1, 10, 10))}</annotation>", "empty"),
    "zero-width box": (f"<annotation>{SIZE}{obj_xml(box=(11, 1, 10, 10))}</annotation>", "empty"),
    "unknown class": (f"<annotation>{SIZE}{obj_xml(name='unicorn')}</annotation>", "'unicorn'"),
    "missing name": (
        f"<annotation>{SIZE}<object><bndbox><xmin>1</xmin></bndbox></object></annotation>",
        "<name>",
    ),
    "missing bndbox": (
        f"<annotation>{SIZE}<object><name>car</name></object></annotation>",
        "bndbox",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_parse_bad_file_names_it(tmp_path, case):
    text, detail = BAD_FILES[case]
    path = tmp_path / "000001.xml"
    path.write_text(text)
    with pytest.raises(DataError) as exc:
        parse_annotation(path)
    assert str(path) in str(exc.value)
    if detail:
        assert detail in str(exc.value)


def test_parse_float_corners_and_a_pixel_of_overshoot(tmp_path):
    """LabelImg writes "12.0"; CVAT writes VOC corners 0-based (xmin 0 at the left edge) and
    floats past the far edge by rounding: within a pixel, the box is clipped to the image."""
    body = obj_xml("car", ("12.0", "20.5", "30.25", "40")) + obj_xml("dog", (0, 0.5, 100.6, 81))
    record = parse_annotation(write_xml(tmp_path, body))
    assert record.objects[0].box == (11.0, 19.5, 30.25, 40.0)
    assert record.objects[1].box == (0.0, 0.0, 100.0, 80.0)


def test_parse_missing_file(tmp_path):
    path = tmp_path / "000001.xml"
    with pytest.raises(DataError, match="annotation missing") as exc:
        parse_annotation(path)
    assert str(path) in str(exc.value)


def test_parse_known_classes_argument(tmp_path):
    path = write_xml(tmp_path, obj_xml("bus"))
    assert parse_annotation(path, ("bus",)).objects[0].name == "bus"
    with pytest.raises(DataError, match="'bus'"):
        parse_annotation(path, ("car",))


# --- load_records -------------------------------------------------------------------------


def test_load_records_in_split_order(tmp_path):
    year = small_tree(tmp_path / "VOC2007")
    records = load_records(year, ["000003", "000001"])
    assert [r.image_id for r in records] == ["000003", "000001"]
    assert records[0].objects[0].name == "dog"


def test_load_records_missing_jpeg(tmp_path):
    year = small_tree(tmp_path / "VOC2007")
    (year / "JPEGImages" / "000002.jpg").unlink()
    with pytest.raises(DataError, match="missing") as exc:
        load_records(year, ["000001", "000002"])
    assert str(year / "JPEGImages" / "000002.jpg") in str(exc.value)


def test_load_records_missing_annotation(tmp_path):
    year = small_tree(tmp_path / "VOC2007")
    (year / "Annotations" / "000003.xml").unlink()
    with pytest.raises(DataError, match="1 of 2") as exc:
        load_records(year, ["000001", "000003"])
    assert str(year / "Annotations" / "000003.xml") in str(exc.value)


def test_unannotated_split_reads_sizes_from_the_images_and_has_no_labels(tmp_path):
    """VOC 2012 test: images and a split list, no XML, labels withheld."""
    year = small_tree(tmp_path / "VOC2012")
    for xml in (year / "Annotations").glob("*.xml"):
        xml.unlink()
    for path in (year / "ImageSets" / "Main").glob("*_*.txt"):
        path.write_text("".join(f"{line.split()[0]}\n" for line in path.read_text().splitlines()))
    records = load_records(year, ["000001", "000003"])
    sizes = [Image.open(year / "JPEGImages" / f"{i}.jpg").size for i in ("000001", "000003")]
    assert [(r.width, r.height) for r in records] == sizes
    assert all(not r.objects for r in records)
    assert image_labels(year, "trainval", VOC_CLASSES, records) is None


# --- image labels -------------------------------------------------------------------------


def test_class_label():
    car, hard_car = VocObject("car", (0, 0, 1, 1)), VocObject("car", (0, 0, 1, 1), True)
    dog = VocObject("dog", (0, 0, 1, 1))
    assert class_label([car, dog], "car") == 1
    assert class_label([hard_car, car], "car") == 1
    assert class_label([hard_car, dog], "car") == 0
    assert class_label([dog], "car") == -1
    assert class_label([], "car") == -1


def test_image_labels_from_class_files(tmp_path):
    year = small_tree(tmp_path / "VOC2007")
    main = year / "ImageSets" / "Main"
    # the files disagree with the XML on purpose: they win for the ids they list (a -1
    # against a box is refused: see test_a_class_file_saying_absent_...)
    (main / "car_trainval.txt").write_text("000001  0\n000002  1\n000003  0\n")
    (main / "dog_trainval.txt").write_text("000003  1\n")  # 000001, 000002: from the XML
    ids = ["000001", "000002", "000003"]
    truth = image_labels(year, "trainval", ("car", "dog"), load_records(year, ids))
    assert truth.dtype == np.int8
    np.testing.assert_array_equal(truth, [[0, -1], [1, 1], [0, 1]])


def test_image_labels_follow_the_ids_order(tmp_path):
    year = small_tree(tmp_path / "VOC2007")
    truth = image_labels(year, "trainval", ("car",), load_records(year, ["000003", "000001"]))
    np.testing.assert_array_equal(truth, [[-1], [1]])


def test_image_labels_from_xml_without_class_files(tmp_path):
    year = small_tree(tmp_path / "VOC2007")
    for path in (year / "ImageSets" / "Main").glob("*_*.txt"):
        path.unlink()
    ids = ["000001", "000002", "000003"]
    truth = image_labels(year, "trainval", ("car", "dog", "cat"), load_records(year, ids))
    # 000002 has only a difficult car -> 0
    np.testing.assert_array_equal(truth, [[1, -1, -1], [0, 1, -1], [-1, 1, -1]])


def test_image_labels_mix_file_and_xml(tmp_path):
    year = small_tree(tmp_path / "VOC2007")
    main = year / "ImageSets" / "Main"
    (main / "car_trainval.txt").unlink()
    (main / "dog_trainval.txt").write_text("000001 1\n000002 0\n000003 0\n")
    truth = image_labels(
        year, "trainval", ("car", "dog"), load_records(year, ["000001", "000002", "000003"])
    )
    np.testing.assert_array_equal(truth, [[1, 1], [0, 0], [-1, 0]])


def test_writer_class_files_match_xml_labels(tmp_path):
    year = small_tree(tmp_path / "VOC2007")
    ids = read_split(year, "trainval")
    from_files = image_labels(year, "trainval", VOC_CLASSES, load_records(year, ids))
    for path in (year / "ImageSets" / "Main").glob("*_*.txt"):
        path.unlink()
    np.testing.assert_array_equal(
        image_labels(year, "trainval", VOC_CLASSES, load_records(year, ids)), from_files
    )


def test_one_bad_image_of_an_unlabelled_split_is_the_only_one_skipped(tmp_path):
    """VOC 2012 test has no XML at all: an unreadable JPEG there is that image's error, not a
    reason to call every other image "annotation missing"."""
    year = small_tree(tmp_path / "VOC2012")
    for xml in (year / "Annotations").glob("*.xml"):
        xml.unlink()
    (year / "JPEGImages" / "000002.jpg").write_bytes(b"not a jpeg")
    records = load_records(year, ["000001", "000002", "000003"], skip_bad=True)
    assert [r.error is None for r in records] == [True, False, True]
    assert "cannot read" in records[1].error and "000002.jpg" in records[1].error
    assert [(r.width, r.height) for r in (records[0], records[2])] == [(64, 48), (64, 48)]


# --- issue 19: image paths contained, the image named like the XML, truth, ids with spaces ----


def set_filename(year: Path, image_id: str, filename: str) -> Path:
    """Rewrite the <filename> of `image_id`'s XML; returns the XML."""
    xml = year / "Annotations" / f"{image_id}.xml"
    xml.write_text(xml.read_text().replace(f"<filename>{image_id}.jpg", f"<filename>{filename}"))
    return xml


@pytest.mark.parametrize("how", ["../", "absolute", "../ through a link"])
def test_an_image_outside_the_tree_is_refused_naming_the_xml_and_the_path(tmp_path, how):
    """A <filename> with ../, an absolute one, or one whose ../ leaves through a link the tree
    holds: the name leads out of the dataset, and the image is never read."""
    year = small_tree(tmp_path / "VOC2007")
    outside = tmp_path / "private.jpg"
    (year / "JPEGImages" / "000002.jpg").rename(outside)
    xml = year / "Annotations" / "000002.xml"
    if how == "../ through a link":  # JPEGImages/deep -> tmp/a/b: deep/../../private.jpg
        (tmp_path / "a" / "b").mkdir(parents=True)
        (year / "JPEGImages" / "deep").symlink_to(tmp_path / "a" / "b")
        set_filename(year, "000002", "deep/../../private.jpg")
    else:
        set_filename(year, "000002", "../private.jpg" if how == "../" else str(outside))
    with pytest.raises(DataError) as exc:
        load_records(year, ["000001", "000002"])
    message = str(exc.value)
    assert message.startswith(f"{xml}: image ") and "outside the dataset" in message, message
    assert str(year) in message and str(outside) in message and "\n" not in message
    records = load_records(year, ["000001", "000002"], skip_bad=True)  # skipped, never read
    assert records[0].error is None and "outside the dataset" in records[1].error


def test_a_tree_of_links_to_images_and_annotations_elsewhere_is_read(tmp_path):
    """Issue 26: a subset made by linking (JPEGImages/ and Annotations/ hold symlinks to the
    files of a full tree elsewhere, JPEGImages/ itself a link in a second copy) was refused as
    "outside the dataset"; the user made those links inside the tree: they are followed."""
    full = small_tree(tmp_path / "full" / "VOC2007")
    subset = tmp_path / "subset" / "VOC2007"
    for folder in ("JPEGImages", "Annotations"):
        (subset / folder).mkdir(parents=True)
        for path in (full / folder).iterdir():
            (subset / folder / path.name).symlink_to(path)
    shutil.copytree(full / "ImageSets", subset / "ImageSets")
    records = load_records(subset, ["000001", "000002", "000003"])
    assert [r.image_path for r in records] == [
        subset / "JPEGImages" / f"{i}.jpg" for i in ("000001", "000002", "000003")
    ]
    assert [r.error for r in records] == [None] * 3
    linked = tmp_path / "linked" / "VOC2007"
    linked.mkdir(parents=True)
    for folder in ("JPEGImages", "Annotations", "ImageSets"):
        (linked / folder).symlink_to(full / folder, target_is_directory=True)
    assert [r.error for r in load_records(linked, ["000001", "000003"])] == [None, None]


def test_a_symlink_inside_the_tree_is_followed(tmp_path):
    year = small_tree(tmp_path / "VOC2007")
    (year / "JPEGImages" / "000002.jpg").rename(year / "000002-original.jpg")
    (year / "JPEGImages" / "000002.jpg").symlink_to(year / "000002-original.jpg")
    (record,) = load_records(year, ["000002"])
    assert record.image_path == year / "JPEGImages" / "000002.jpg"


def test_an_xml_copied_from_another_image_reads_the_image_named_like_it(tmp_path):
    """000003.xml says <filename>000001.jpg</filename> (copied from 000001, same size): the
    image of 000003 is still JPEGImages/000003.jpg."""
    year = small_tree(tmp_path / "VOC2007")
    set_filename(year, "000003", "000001.jpg")
    records = load_records(year, ["000001", "000003"])
    assert [r.image_path for r in records] == [
        year / "JPEGImages" / "000001.jpg",
        year / "JPEGImages" / "000003.jpg",
    ]


def test_filename_names_the_image_when_none_is_named_like_the_xml(tmp_path):
    year = small_tree(tmp_path / "VOC2007")
    (year / "JPEGImages" / "000003.jpg").rename(year / "JPEGImages" / "photo three.png")
    set_filename(year, "000003", "photo three.png")
    (record,) = load_records(year, ["000003"])
    assert record.image_path == year / "JPEGImages" / "photo three.png"


def test_two_ids_of_one_image_file_are_refused_naming_both(tmp_path):
    year = small_tree(tmp_path / "VOC2007")
    (year / "JPEGImages" / "000003.jpg").unlink()
    xml = set_filename(year, "000003", "000001.jpg")
    for skip_bad in (False, True):
        with pytest.raises(DataError) as exc:
            load_records(year, ["000001", "000002", "000003"], skip_bad=skip_bad)
        message = str(exc.value)
        assert message.startswith(f"{xml}: ") and "'000001' and '000003'" in message, message
        assert str(year / "JPEGImages" / "000001.jpg") in message


def test_ids_a_class_file_leaves_out_take_their_truth_from_the_xml(tmp_path):
    """car_trainval.txt lists 000003 only: 000001 (a car box) is present, 000002 (only a
    difficult car) difficult, not absent."""
    year = small_tree(tmp_path / "VOC2007")
    (year / "ImageSets" / "Main" / "car_trainval.txt").write_text("000003 -1\n")
    ids = ["000001", "000002", "000003"]
    truth = image_labels(year, "trainval", ("car",), load_records(year, ids))
    np.testing.assert_array_equal(truth, [[1], [0], [-1]])


def test_a_class_file_saying_absent_against_a_box_of_the_class_is_refused(tmp_path):
    year = small_tree(tmp_path / "VOC2007")
    path = year / "ImageSets" / "Main" / "car_trainval.txt"
    path.write_text("000001 -1\n000002  1\n000003 -1\n")
    ids = ["000001", "000002", "000003"]
    with pytest.raises(DataError) as exc:
        image_labels(year, "trainval", ("car",), load_records(year, ids))
    message = str(exc.value)
    assert message.startswith(f"{path}: ") and "'000001'" in message, message
    assert str(year / "Annotations" / "000001.xml") in message


def test_the_real_voc_subset_has_no_contradiction_between_class_files_and_xml(voc_subset):
    """Its class files say 1 for classes without boxes, and 0 where the XML has an unflagged
    box: neither is refused; it has no -1 against a box."""
    from pipeline.datasets.voc import VocDataset

    dataset = VocDataset(voc_subset)
    for split in ("train", "val", "trainval", "test"):
        data = dataset.load(split)
        assert data.truth.shape == (len(data.samples), 20)


def spaced_tree(tmp_path: Path) -> Path:
    """small_tree with the id 000002 renamed 'photo 2' (its XML, its image, every list)."""
    year = small_tree(tmp_path / "VOC2007")
    (year / "Annotations" / "000002.xml").rename(year / "Annotations" / "photo 2.xml")
    (year / "JPEGImages" / "000002.jpg").rename(year / "JPEGImages" / "photo 2.jpg")
    for path in (year / "ImageSets" / "Main").glob("*.txt"):
        path.write_text(path.read_text().replace("000002", "photo 2"))
    return year


def test_a_split_file_line_is_one_whole_id(tmp_path):
    year = spaced_tree(tmp_path)
    assert read_split(year, "trainval") == ["000001", "photo 2", "000003"]
    (record,) = load_records(year, ["photo 2"])
    assert record.image_path == year / "JPEGImages" / "photo 2.jpg"


def test_a_class_file_line_is_an_id_then_its_label_split_from_the_right(tmp_path):
    year = spaced_tree(tmp_path)
    records = load_records(year, ["000001", "photo 2", "000003"])
    main = year / "ImageSets" / "Main"
    main.joinpath("dog_trainval.txt").write_text("000001 -1\nphoto 2  0\n000003  1\n")
    truth = image_labels(year, "trainval", ("car", "dog"), records)
    np.testing.assert_array_equal(truth, [[1, -1], [0, 0], [-1, 1]])  # 'photo 2' dog: 0
    main.joinpath("car_trainval.txt").write_text("000001 1\nphoto 2 1\n000003 x\n")
    with pytest.raises(DataError, match="line 3 is '000003 x'") as exc:
        image_labels(year, "trainval", ("car",), records)
    assert str(main / "car_trainval.txt") in str(exc.value)
