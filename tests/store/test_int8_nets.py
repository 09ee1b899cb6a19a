"""int8 features (issue 26, defects 5 and 11): one quantized net's features in every shard of
every split a head pairs, and a refusal that names the settings that differ."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest
from cli_helpers import SMALL, error_lines, invoke
from PIL import Image
from synthetic_voc import make_shapes_voc

from pipeline.config import BackboneConfig, CacheSettings
from pipeline.errors import CacheError
from pipeline.features.quantize import RECIPE
from pipeline.features.registry import cache_key
from pipeline.store.head_files import HeadRecord, check_serves
from pipeline.store.keys import CacheKey


def fingerprint(**backbone) -> dict:
    config = BackboneConfig(name="resnet18", weights="random", input_size=64, **backbone)
    return cache_key(CacheSettings(backbone=config)).settings


def refusal(trained: dict, these: dict) -> tuple[str, str]:
    """(what the head was trained on, what these features are), as check_serves says them."""
    with pytest.raises(CacheError) as info:
        record = HeadRecord(head="mlp", fingerprint=trained)
        check_serves(record, CacheKey(these), "heads/mlp.safetensors")
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


def nets(split_dir: Path) -> dict[str, str]:
    """shard name -> the int8 net its runtime attribute names."""
    out = {}
    for path in sorted(split_dir.glob("shard-*.h5")):
        with h5py.File(path, "r") as h5:
            out[path.name] = h5.attrs["runtime"].split()[-1]
    return out


def test_one_int8_net_in_every_shard_of_both_splits(tmp_path):
    """Defect 5: after one trainval image changed, only its shard was rebuilt, with the
    recalibrated int8 net; the other shards kept the old net's features, extract test said
    nothing to do, and fit and score took the mix. Now extract rebuilds every shard of a net
    that changed and says so, the readers refuse a split of several nets, and score a head
    whose training features came from another net than the scored split's."""
    voc = make_shapes_voc(tmp_path / "voc")
    cache = tmp_path / "cache"
    common = ["--voc-root", str(voc), "--cache-dir", str(cache), "--precision", "int8", *SMALL]
    extract = ["extract", "--workers", "0", "--images-per-shard", "8", *common]
    for split in ("trainval", "test"):
        code, out = invoke(*extract, "--split", split)
        assert code == 0, out
    (train,), (test,) = cache.glob("trainval-*"), cache.glob("test-*")
    (old,) = set(nets(train).values()) | set(nets(test).values())
    code, out = invoke("fit", "--head", "svm", *common)
    assert code == 0, out
    score = ["score", "--head", "svm", "--output", str(tmp_path / "ap.csv"), *common]
    assert invoke(*score)[0] == 0

    first = (voc / "ImageSets" / "Main" / "trainval.txt").read_text().split()[0]
    image = voc / "JPEGImages" / f"{first}.jpg"  # in trainval's shard 0
    height, width = np.asarray(Image.open(image)).shape[:2]
    y, x = np.mgrid[:height, :width]
    board = ((y // 12 + x // 12) % 2 * 255).astype(np.uint8)  # sharp edges: new activation
    Image.fromarray(np.dstack([board, 255 - board, board])).save(image)  # ranges, a new net
    code, out = invoke(*extract, "--split", "trainval")
    assert code == 0 and "3 shards new, 0 reused" in out, out
    assert "rebuilt 2 shards (made by another int8 net: the calibration images changed" in out
    (new,) = set(nets(train).values())
    assert new != old
    code, out = invoke(*score)  # the head learnt on the old net, the test split is the old net's
    assert code == 0, out
    code, out = invoke(*extract, "--split", "test")
    assert code == 0 and "2 shards new, 0 reused" in out and "another int8 net" in out, out
    assert set(nets(test).values()) == {new}
    code, out = invoke(*score)
    assert code == 2 and error_lines(out) == [
        f"error: {test}: int8 features of net {new}, but the head {train}/heads/svm.safetensors "
        f"learnt on those of net {old} (the training images changed since, and with them the "
        "calibration); fit the head again on the features extract rebuilt"
    ], out
    assert invoke("fit", "--head", "svm", *common)[0] == 0
    assert invoke(*score)[0] == 0

    with h5py.File(train / "shard-00001.h5", "r+") as h5:  # as an older extract left it
        h5.attrs["runtime"] = h5.attrs["runtime"].rsplit(" ", 1)[0] + " 0123456789ab"
    code, out = invoke("fit", "--head", "svm", *common)
    assert code == 2 and error_lines(out) == [
        f"error: {train}: its shards come from 2 int8 nets (shard-00000.h5 {new}, "
        "shard-00001.h5 0123456789ab); rerun pipeline extract for its split: it rebuilds the "
        "shards of an older net"
    ], out
    code, out = invoke(*extract, "--split", "trainval")
    assert code == 0 and "3 shards new" in out and "several int8 nets" in out, out
    assert set(nets(train).values()) == {new}
    assert invoke("fit", "--head", "svm", *common)[0] == 0


def test_shards_made_before_the_calibration_was_recorded_are_kept_when_their_net_is_known(
    tmp_path,
):
    """int8 shards of an earlier midlevel name their net but not its calibration: the model
    cache's record of that net says which, so a current one is not extracted again."""
    voc = make_shapes_voc(tmp_path / "voc", n_trainval=8, n_test=4)
    extract = ["extract", "--split", "trainval", "--workers", "0", "--voc-root", str(voc),
               "--cache-dir", str(tmp_path / "cache"), "--images-per-shard", "4",
               "--precision", "int8", *SMALL]  # fmt: skip
    assert invoke(*extract)[0] == 0
    (train,) = (tmp_path / "cache").glob("trainval-*")
    for path in train.glob("shard-*.h5"):
        with h5py.File(path, "r+") as h5:
            del h5.attrs["calibration"]
    code, out = invoke(*extract)
    assert code == 0 and "nothing to do" in out, out
    with h5py.File(train / "shard-00001.h5", "r+") as h5:  # a net no record names
        h5.attrs["runtime"] = h5.attrs["runtime"].rsplit(" ", 1)[0] + " 0123456789ab"
    code, out = invoke(*extract)
    assert code == 0 and "1 shards new, 1 reused" in out and "another int8 net" in out, out
