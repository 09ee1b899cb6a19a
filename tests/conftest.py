"""Shared fixtures: VOC trees built in code, and the path of ../shared beside the repo."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from synthetic_voc import make_shapes_voc

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MIDLEVEL_SHARED", REPO.parent / "shared"))
VOC_SUBSET = SHARED / "voc2007-subset" / "VOC2007"


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory) -> Path:
    """Exported ONNX models in one directory per test session (never the user's own cache):
    each backbone, weights and part is exported once however many tests build it."""
    directory = tmp_path_factory.mktemp("onnx")
    os.environ["MIDLEVEL_MODEL_CACHE"] = str(directory)
    return directory


@pytest.fixture(scope="session")
def shapes_voc(tmp_path_factory) -> Path:
    """A tiny synthetic VOC tree (coloured shapes: bus, car, cat), read-only for tests."""
    return make_shapes_voc(tmp_path_factory.mktemp("shapes"))


@pytest.fixture
def voc_subset() -> Path:
    if not (VOC_SUBSET / "Annotations").is_dir():
        pytest.skip(f"real VOC subset not found at {VOC_SUBSET} (set MIDLEVEL_SHARED to ../shared)")
    return VOC_SUBSET


@pytest.fixture(scope="session")
def shapes_cache(shapes_voc, tmp_path_factory) -> tuple[Path, list[str]]:
    """trainval and test of `shapes_voc` extracted once: (cache dir, common CLI options)."""
    from cli_helpers import extract_splits

    cache = tmp_path_factory.mktemp("cache")
    return cache, extract_splits(shapes_voc, cache)


@pytest.fixture(scope="session")
def exported_svm(shapes_cache, shapes_voc, tmp_path_factory) -> dict:
    """The SVM head on `shapes_cache` and its export, read-only: (head file, model folder,
    the test split's photos)."""
    from cli_helpers import invoke

    cache, common = shapes_cache
    code, out = invoke("fit", "--head", "svm", *common)
    assert code == 0, out
    head = Path(out.strip().rsplit(" -> ", 1)[1])
    folder = tmp_path_factory.mktemp("exported") / "model"
    code, out = invoke("export", "--head", str(head), "--output", str(folder))
    assert code == 0, out
    ids = (shapes_voc / "ImageSets" / "Main" / "test.txt").read_text().split()
    photos = [shapes_voc / "JPEGImages" / f"{i}.jpg" for i in ids]
    return {"head": head, "folder": folder, "photos": photos}


@pytest.fixture(scope="session")
def finished_split(shapes_voc, tmp_path_factory) -> Path:
    """The split directory of a finished extract of the shapes tree's 16 test images in 4
    shards, read-only: a test that changes it works on `copied`."""
    from cli_helpers import extract_args, invoke

    cache = tmp_path_factory.mktemp("finished")
    code, out = invoke(*extract_args(shapes_voc, cache, "--workers", "0"))
    assert code == 0 and "4 shards new" in out, out
    (split_dir,) = cache.glob("test-*")
    return split_dir


@pytest.fixture
def copied(finished_split, tmp_path) -> Path:
    """A writable copy of `finished_split`'s cache; returns its split directory."""
    shutil.copytree(finished_split.parent, tmp_path / "cache")
    return tmp_path / "cache" / finished_split.name
