"""The cache is keyed by the data: changed images or boxes under the same path are rebuilt (and
said so), never reused; moved or touched files with the same bytes are not; fit and score
given the dataset refuse features made from older data."""

from __future__ import annotations

import json
import os
import re
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


def edit_a_box(voc: Path, split: str, position: int) -> None:
    xml = voc / "Annotations" / f"{read_split(voc, split)[position]}.xml"
    tree = ET.parse(xml)
    corner = tree.getroot().find("object/bndbox/xmin")
    corner.text = str(int(corner.text) + 3)
    tree.write(xml)


def test_an_edited_box_relabels_its_shard_of_every_patch_without_the_net(voc, tmp_path):
    """A split that keeps every patch (test) stores nothing the labels choose: an edited box
    gives its shard new labels from the features already there, equal to a fresh extract's."""
    cache = tmp_path / "cache"
    extract(voc, cache)
    edit_a_box(voc, "test", 13)  # shard 3
    out = extract(voc, cache)
    assert "0 images, 0 patches" in out and "0 shards new, 4 reused" in out
    assert "relabelled 1 shard (the labels changed, not the images)" in out
    assert "rebuilt" not in out
    extract(voc, tmp_path / "fresh")
    (relabelled,) = cache.glob("test-*")
    assert_same_shards(tmp_path / "fresh" / relabelled.name, relabelled)
    assert "nothing to do" in extract(voc, cache)


def test_an_edited_box_rebuilds_its_shard_of_sampled_patches(voc, tmp_path):
    """A training split keeps the patches its boxes select: its shard is extracted again."""
    cache = tmp_path / "cache"
    extract(voc, cache, "--split", "trainval")
    edit_a_box(voc, "trainval", 1)  # shard 0
    out = extract(voc, cache, "--split", "trainval")
    assert "rebuilt shard-00000.h5 (its images or annotations changed)" in out
    assert "relabelled" not in out


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


def test_a_shard_that_grew_at_its_end_computes_only_its_new_images(voc, tmp_path):
    """Tasks imported into a Label Studio project land at the split's end: the last shard's
    images keep their rows, only the new ones run the net, and the shard equals a fresh one."""
    cache = tmp_path / "cache"
    split = voc / "ImageSets" / "Main" / "test.txt"
    ids = split.read_text().split()
    split.write_text("".join(f"{i}\n" for i in ids[:13]))  # shard 3 holds 1 image
    extract(voc, cache)
    split.write_text("".join(f"{i}\n" for i in ids[:15]))
    edit_a_box(voc, "test", 12)  # its annotation changed too: labels computed again
    out = extract(voc, cache)
    assert "extract test: 2 images" in out and "1 image of grown shards reused" in out, out
    assert "1 shards new, 3 reused" in out and "rebuilt" not in out
    extract(voc, tmp_path / "fresh")
    (grown,) = cache.glob("test-*")
    assert_same_shards(tmp_path / "fresh" / grown.name, grown)


def shard_times(cache: Path) -> dict[str, int]:
    """Every shard of the cache, by its path, with its modification time."""
    return {str(p): p.stat().st_mtime_ns for p in cache.glob("*/shard-*.h5")}


def test_two_datasets_in_one_cache_dir_keep_their_own_shards(voc, tmp_path):
    """Issue 19, item 1: two VOC trees with VOC classes used to share `test-<digest>`, so
    extracting the second rebuilt the first's shards in place; each now has its own."""
    cache, other = tmp_path / "cache", Path(shutil.copytree(voc, tmp_path / "B" / "VOC2007"))
    image_id = read_split(other, "test")[0]
    with Image.open(other / "JPEGImages" / f"{image_id}.jpg") as image:
        image.rotate(90).save(other / "JPEGImages" / f"{image_id}.jpg")  # another dataset
    extract(voc, cache)
    first = shard_times(cache)
    out = extract(other, cache)
    assert "rebuilt" not in out and "4 shards new, 0 reused" in out, out
    assert {p: t for p, t in shard_times(cache).items() if p in first} == first
    assert len(shard_times(cache)) == 8  # the first's shards untouched, the second's beside
    for tree in (voc, other):
        code, out = invoke("fit", "--head", "svm", "--split", "test", "--voc-root", str(tree),
                           "--cache-dir", str(cache), *SMALL)  # fmt: skip
        assert code == 0, out


def test_each_keep_rule_has_its_own_cache(voc, tmp_path):
    """Issue 19, item 2: `--keep all` of a training split used to rebuild, in place, the
    sampled cache the MLP and SVM need; both now stay, and each verb reads the one asked for."""
    cache = tmp_path / "cache"
    args = ["--split", "trainval", "--voc-root", str(voc), "--cache-dir", str(cache), *SMALL]
    code, out = invoke("extract", "--workers", "0", *args)
    assert code == 0, out
    sampled = shard_times(cache)
    code, out = invoke("extract", "--workers", "0", "--keep", "all", *args)
    assert code == 0 and "rebuilt" not in out, out
    assert {p: t for p, t in shard_times(cache).items() if p in sampled} == sampled
    assert len(list(cache.glob("trainval-*/manifest.json"))) == 2
    code, out = invoke("fit", "--head", "svm", *args)  # auto: the sampled cache
    assert code == 0, out
    code, every = invoke("fit", "--head", "weak", "--epochs", "1", "--keep", "all", *args)
    assert code == 0, every
    code, sample = invoke("fit", "--head", "weak", "--epochs", "1", *args)
    assert code == 0, sample
    patches = [int(re.search(r"(\d+) patches of", text)[1]) for text in (every, sample)]
    assert patches[0] > 3 * patches[1], patches  # every patch, against the label-blind tenth


def as_made_before_datasets_had_their_own_caches(cache: Path) -> Path:
    """The test cache as midlevel 0.3 left it: `test-<digest>`, no source nor keep recorded."""
    (directory,) = cache.glob("test-*")
    fingerprint = json.loads((directory / "fingerprint.json").read_text())
    del fingerprint["source"], fingerprint["keep"]
    (directory / "fingerprint.json").write_text(json.dumps(fingerprint))
    return directory.rename(cache / f"test-{fingerprint['digest']}")


def test_a_cache_made_before_is_adopted_after_a_check_not_extracted_again(voc, tmp_path):
    """A genuine VOC tree's cache of midlevel 0.3 (one directory for every VOC tree) is taken
    over, heads and all, once its recorded data digests are this tree's; fit given the data
    says to run extract for that, and a stale one is extracted again instead."""
    cache = tmp_path / "cache"
    extract(voc, cache)
    common = ["--split", "test", "--voc-root", str(voc), "--cache-dir", str(cache), *SMALL]
    assert invoke("fit", "--head", "svm", *common)[0] == 0
    legacy = as_made_before_datasets_had_their_own_caches(cache)
    code, out = invoke("fit", "--head", "svm", *common)
    (line,) = error_lines(out)
    assert code == 2 and "run pipeline extract --split test: it adopts" in line, line
    assert f"taken from {legacy.name}: the same data" in extract(voc, cache)
    assert not legacy.exists() and len(list(cache.glob("test-*/heads/svm.safetensors"))) == 1
    assert invoke("score", "--head", "svm", "--train-split", "test", "--output",
                  str(tmp_path / "ap.csv"), *common)[0] == 0  # fmt: skip
    legacy = as_made_before_datasets_had_their_own_caches(cache)
    image_id = read_split(voc, "test")[0]
    with Image.open(voc / "JPEGImages" / f"{image_id}.jpg") as image:
        image.rotate(90).save(voc / "JPEGImages" / f"{image_id}.jpg")
    out = extract(voc, cache)
    assert "4 shards new" in out and "taken from" not in out and legacy.exists()


def test_two_datasets_extracted_into_one_cache_at_once_both_finish_whole(voc, tmp_path):
    """Issue 19: two extracts of two datasets into one --cache-dir at the same time each
    write their own cache (before, one rebuilt the other's shards under it)."""
    import subprocess
    import sys

    from cli_helpers import assert_same_shards

    cache, other = tmp_path / "cache", Path(shutil.copytree(voc, tmp_path / "B" / "VOC2007"))
    image_id = read_split(other, "test")[0]
    with Image.open(other / "JPEGImages" / f"{image_id}.jpg") as image:
        image.rotate(90).save(other / "JPEGImages" / f"{image_id}.jpg")
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "pipeline", *extract_args(tree, cache, "--workers", "0")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for tree in (voc, other)
    ]
    for run in runs:
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0 and "4 shards new" in out, err[-2000:]
    for tree in (voc, other):  # each cache is what an extract alone makes
        alone = tmp_path / f"alone-{tree.parent.name}"
        directory = Path(extract(tree, alone).strip().rsplit(" -> ", 1)[1])
        assert_same_shards(directory, cache / directory.name)
