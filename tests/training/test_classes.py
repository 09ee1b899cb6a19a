import numpy as np
import pytest

from pipeline.cli.options import parse_classes
from pipeline.datasets.voc_xml import VOC_CLASSES
from pipeline.errors import MidlevelError
from pipeline.training.classes import check_classes, head_labels, select_classes

NAMES = list(VOC_CLASSES)
BG = len(NAMES)
AEROPLANE, BUS, CAR, PERSON = (NAMES.index(n) for n in ("aeroplane", "bus", "car", "person"))


def test_parse_classes():
    assert parse_classes("bus,car") == ("bus", "car")
    assert parse_classes(" car , bus ,") == ("car", "bus")  # order kept
    assert parse_classes("scratch,dent") == ("scratch", "dent")  # any dataset's names
    assert parse_classes(None) is None


def test_parse_classes_duplicates_dropped():
    assert parse_classes("car,bus,car") == ("car", "bus")


def test_check_classes_unknown():
    with pytest.raises(MidlevelError, match="unknown unicorn, cars;") as exc:
        check_classes(("car", "unicorn", "cars"), VOC_CLASSES)
    assert "aeroplane" in str(exc.value)  # lists the choices
    check_classes(("car",), VOC_CLASSES)
    check_classes(None, VOC_CLASSES)


@pytest.mark.parametrize("text", ["", " ", ",", " , ,"])
def test_parse_classes_empty(text):
    with pytest.raises(MidlevelError, match=r"\(empty\)"):
        parse_classes(text)


def counts(**positives) -> np.ndarray:
    out = np.zeros(len(NAMES), np.int64)
    for name, n in positives.items():
        out[NAMES.index(name)] = n
    return out


def test_select_default_is_classes_with_positives():
    assert select_classes(None, NAMES, counts(person=5, bus=1, car=0)) == ("bus", "person")


def test_select_default_without_positives():
    with pytest.raises(MidlevelError, match="no labelled object patch"):
        select_classes(None, NAMES, counts())


def test_select_requested_keeps_order():
    assert select_classes(("person", "bus"), NAMES, counts(person=5, bus=1, car=9)) == (
        "person",
        "bus",
    )


def test_select_requested_empty_class():
    with pytest.raises(MidlevelError, match="--classes: cat, dog has no labelled patch"):
        select_classes(("bus", "cat", "dog"), NAMES, counts(bus=3))


def test_head_labels():
    labels = np.array([AEROPLANE, CAR, BUS, BG, -1, PERSON, CAR], np.int16)
    y = head_labels(labels, NAMES, ("car", "aeroplane"))
    np.testing.assert_array_equal(y, [1, 0, 2, 2, -1, 2, 0])


def test_head_labels_all_classes_is_identity():
    labels = np.array([*range(BG + 1), -1], np.int16)
    np.testing.assert_array_equal(head_labels(labels, NAMES, VOC_CLASSES), labels)


def test_head_labels_empty():
    assert head_labels(np.zeros(0, np.int16), NAMES, ("car",)).shape == (0,)
