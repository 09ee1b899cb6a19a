"""Labeling configs: what the backend serves, and one line naming what it does not."""

from __future__ import annotations

import pytest
from label_studio_files import BOXES_CONFIG, CHOICES_CONFIG, labeling_config

from pipeline.errors import DataError
from pipeline.labelling.schema import read_schema


def test_choices_and_rectangles_give_their_classes_names_and_image_key():
    choices = read_schema(labeling_config(CHOICES_CONFIG, ["cat", "dog"]))
    assert (choices.kind, choices.classes, choices.multiple) == ("choices", ("cat", "dog"), True)
    assert (choices.from_name, choices.to_name, choices.image_key) == ("label", "image", "image")
    boxes = read_schema(labeling_config(BOXES_CONFIG, ["car"]))
    assert (boxes.kind, boxes.classes, boxes.boxes, boxes.from_name) == (
        "rectanglelabels",
        ("car",),
        True,
        "box",
    )
    single = read_schema(
        labeling_config(CHOICES_CONFIG, ["a", "b"]).replace(' choice="multiple"', "")
    )
    assert not single.multiple


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ('<View><Image name="i" value="$image"/><KeyPointLabels name="k" toName="i">'
         '<Label value="a"/></KeyPointLabels></View>', "tag <KeyPointLabels> is not served"),
        ('<View><Image name="i" value="$image"/></View>', "0 <Choices>/<RectangleLabels>"),
        ('<View><Image name="i" value="$image"/><Choices name="c" toName="x"><Choice value="a"/>'
         "</Choices></View>", "is not the <Image name='i'>"),
        ('<View><Image name="i" value="$image"/><Choices name="c" toName="i"><Choice value="a"/>'
         '<Choice value="a"/></Choices></View>', "distinct non-empty"),
        ('<!DOCTYPE x [<!ENTITY a "b">]><View/>', "DOCTYPE"),
        ("<View><Image", "not valid XML"),
        ("", "empty"),
    ],
)  # fmt: skip
def test_a_config_it_cannot_serve_is_one_line_naming_why(config, says):
    with pytest.raises(DataError, match="labeling config") as refused:
        read_schema(config)
    assert says in str(refused.value) and "\n" not in str(refused.value)
