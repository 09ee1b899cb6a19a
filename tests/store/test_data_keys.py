"""The cache is keyed by the data: changed images or boxes under the same path are rebuilt (and
said so), never reused; moved or touched files with the same bytes are not; fit and score
given the dataset refuse features made from older data."""

from __future__ import annotations

import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from cli_helpers import SMALL, assert_same_shards, error_lines, extract_args, invoke
from PIL import Image

from pipeline.datasets.voc import read_split


@pytest.fixture
def voc(shapes_voc, tmp_path) -> Path:
    return Path(shutil.copytree(shapes_voc, tmp_path / "VOC2007"))


def extract(voc: Path, cache: Path, *extra: str) -> str:
    code, out = invoke(*extract_args(voc, cache, "--workers", "0", *extra))
    assert code == 0, out
    return out


def mtimes(cache: Path) -> dict[str, int]:
    (split_dir,) = cache.glob("test-*")
    return {p.name: p.stat().st_mtime_ns for p in split_dir.glob("shard-*.h5")}


def test_demo_data_rebuilt_with_another_seed_is_extracted_again(tmp_path):
    """The case of the issue: demo-data --overwrite --seed 1, then extract, used to print
    "nothing to do" and keep the old images' features."""
    demo, cache = tmp_path / "demo", tmp_path / "cache"
    args = ["extract", "--split", "test", "--voc-root", str(demo / "VOC2007"), "--cache-dir",
            str(cache), "--workers", "0", "--images-per-shard", "2", *SMALL]  # fmt: skip
    for seed in ("0", "1"):
        code, out = invoke("demo-data", "--output", str(demo), "--trainval", "6", "--test", "4",
                           "--seed", seed, "--overwrite")  # fmt: skip
        assert code == 0, out
        code, out = invoke(*args)
        assert code == 0, out
    assert "nothing to do" not in out
    assert "2 shards new, 0 reused, rebuilt 2 shards (its images or annotations changed" in out
    code, fresh = invoke(*[a if a != str(cache) else str(tmp_path / "fresh") for a in args])
    assert code == 0, fresh
    (rebuilt,) = cache.glob("test-*")
    assert_same_shards(tmp_path / "fresh" / rebuilt.name, rebuilt)


def test_one_changed_image_rebuilds_its_shard_only(voc, tmp_path):
    cache = tmp_path / "cache"
    extract(voc, cache)
    before = mtimes(cache)
    image_id = read_split(voc, "test")[5]  # shard 1 of 4
    path = voc / "JPEGImages" / f"{image_id}.jpg"
    with Image.open(path) as image:
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(path, quality=90)
    out = extract(voc, cache)
    assert (
        "1 shards new, 3 reused, rebuilt shard-00001.h5 (its images or annotations changed)" in out
    )
    after = mtimes(cache)
    assert {n: t for n, t in after.items() if n != "shard-00001.h5"} == {
        n: t for n, t in before.items() if n != "shard-00001.h5"
    }
    assert after["shard-00001.h5"] != before["shard-00001.h5"]


def test_an_edited_box_rebuilds_its_shard(voc, tmp_path):
    cache = tmp_path / "cache"
    extract(voc, cache)
    image_id = read_split(voc, "test")[13]  # shard 3
    xml = voc / "Annotations" / f"{image_id}.xml"
    tree = ET.parse(xml)
    corner = tree.getroot().find("object/bndbox/xmin")
    corner.text = str(int(corner.text) + 3)
    tree.write(xml)
    out = extract(voc, cache)
    assert (
        "1 shards new, 3 reused, rebuilt shard-00003.h5 (its images or annotations changed)" in out
    )


def test_same_bytes_elsewhere_or_touched_is_not_extracted_again(voc, tmp_path):
    cache = tmp_path / "cache"
    extract(voc, cache)
    moved = Path(shutil.copytree(voc, tmp_path / "copy" / "VOC2007"))  # new paths, new mtimes
    for path in moved.rglob("*"):
        os.utime(path, (1, 1))
    assert "nothing to do, all 4 shards already complete" in extract(moved, cache)


def test_fit_and_score_given_the_data_refuse_stale_features(voc, tmp_path):
    cache = tmp_path / "cache"
    extract(voc, cache)
    common = ["--split", "test", "--voc-root", str(voc), "--cache-dir", str(cache), *SMALL]
    code, out = invoke("fit", "--head", "svm", *common)
    assert code == 0, out
    image_id = read_split(voc, "test")[0]
    path = voc / "JPEGImages" / f"{image_id}.jpg"
    with Image.open(path) as image:
        image.rotate(90).save(path)
    for command in (["fit", "--head", "svm"], ["score", "--head", "svm", "--train-split", "test",
                                                 "--output", str(tmp_path / "ap.csv")]):  # fmt: skip
        code, out = invoke(*command, *common)
        (line,) = error_lines(out)
        assert code == 2 and "1 of its shards (shard-00000.h5...) were extracted from other" in line
        assert line.endswith("rerun pipeline extract --split test to rebuild them"), line


def test_a_split_that_grew_adds_shards_and_is_refused_until_extracted(voc, tmp_path):
    cache = tmp_path / "cache"
    split = voc / "ImageSets" / "Main" / "test.txt"
    ids = split.read_text().split()
    split.write_text("".join(f"{i}\n" for i in ids[:12]))
    extract(voc, cache)
    split.write_text("".join(f"{i}\n" for i in ids))
    common = ["--split", "test", "--voc-root", str(voc), "--cache-dir", str(cache), *SMALL]
    code, out = invoke("fit", "--head", "svm", *common)
    (line,) = error_lines(out)
    assert code == 2 and "holds 12 images of split 'test'" in line and "has 16 now" in line
    out = extract(voc, cache)
    assert "1 shards new, 3 reused" in out and "the split now has 16 images (it had 12)" in out
    code, out = invoke("fit", "--head", "svm", *common)
    assert code == 0, out
