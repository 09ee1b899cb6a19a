"""int8 features (issue 26, defects 5 and 11): one quantized net's features in every shard of
every split a head pairs, and a refusal that names the settings that differ."""

from __future__ import annotations

import re

import pytest

from pipeline.config import BackboneConfig, CacheSettings
from pipeline.errors import CacheError
from pipeline.features.quantize import RECIPE
from pipeline.features.registry import cache_key
from pipeline.store.head_files import HeadRecord, check_serves


def fingerprint(**backbone) -> dict:
    config = BackboneConfig(name="resnet18", weights="random", input_size=64, **backbone)
    return cache_key(CacheSettings(backbone=config)).as_dict()


def refusal(trained: dict, these: dict) -> tuple[str, str]:
    """(what the head was trained on, what these features are), as check_serves says them."""
    with pytest.raises(CacheError) as info:
        check_serves(HeadRecord(head="mlp", fingerprint=trained), these, "heads/mlp.safetensors")
    found = re.search(r"head trained on (.*); these features are (.*); fit it", str(info.value))
    return found[1], found[2]


def test_an_fp32_head_on_int8_features_is_refused_naming_the_precision():
    """Defect 11: "head trained on X; these features are X" with X identical: the description
    left out the precision and the int8 recipe."""
    trained, these = refusal(fingerprint(), fingerprint(precision="int8"))
    assert trained != these
    assert "precision=fp32" in trained and "precision=int8" in these, (trained, these)
    assert RECIPE in these and RECIPE not in trained


def test_a_setting_the_line_does_not_show_is_named_on_both_sides():
    """Any other difference (here the shared-mode geometry) is named on both sides."""
    shared = fingerprint(mode="shared")
    older = {**shared, "backbone": {**shared["backbone"], "geometry": 1}}
    trained, these = refusal(older, shared)
    assert trained != these
    assert "backbone.geometry=1" in trained and "backbone.geometry=2" in these, (trained, these)
