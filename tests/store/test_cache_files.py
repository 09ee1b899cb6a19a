"""Every cache-side file midlevel reads back is checked against what it claims (issue 26): a
tampered manifest.json, fingerprint.json, image memo or shard attribute is refused in one line
naming the file and the fix, or recomputed; never a traceback, never features read wrongly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import pytest
from cli_helpers import SMALL, error_lines, extract_args, invoke
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import CacheError
from pipeline.store.cache import SplitCache
from pipeline.store.data_digests import DIGESTS_FILE, ImageDigests

CASES = settings(
    derandomize=True, max_examples=60, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)  # fmt: skip
OVERWRITE = "rerun pipeline extract with --overwrite to extract the split again"
REBUILD = "rerun pipeline extract with the same options to rebuild it"


def fit(voc: Path, split_dir: Path) -> tuple[int, str]:
    return invoke("fit", "--split", "test", "--head", "svm", "--voc-root", str(voc),
                  "--cache-dir", str(split_dir.parent), *SMALL)  # fmt: skip


def shard_times(split_dir: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(split_dir.glob("shard-*.h5"))}


def edit_json(path: Path, change) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def entry(field, value):
    """A change of one field of shard-00001.h5's manifest entry."""

    def change(manifest):
        manifest["shards"]["shard-00001.h5"][field] = value
        return manifest

    return change


# --- manifest.json ---------------------------------------------------------------------------
MANIFESTS = {
    "images_per_shard 0": (lambda m: {**m, "images_per_shard": 0}, "'images_per_shard' is 0"),
    "images_per_shard text": (lambda m: {**m, "images_per_shard": "4"},
                              "'images_per_shard' is '4'"),
    "n_images -1": (lambda m: {**m, "n_images": -1}, "'n_images' is -1"),
    "n_images 0": (lambda m: {**m, "n_images": 0}, "'n_images' is 0"),
    "n_images true": (lambda m: {**m, "n_images": True}, "'n_images' is True"),
    "n_images too few": (lambda m: {**m, "n_images": 8}, "holds shard-00002.h5, past its 8 images"),
    "limit -3": (lambda m: {**m, "limit": -3}, "'limit' is -3"),
    "shards a list": (lambda m: {**m, "shards": list(m["shards"])}, "'shards' is a list"),
    "shard outside": (lambda m: {**m, "shards": {**m["shards"], "../fingerprint.json": {}}},
                      "holds '../fingerprint.json', not a shard name"),
    "entry a string": (entry("images", "4"), "shard-00001.h5's 'images' is '4'"),
    "entry skipped": (entry("skipped", "1"), "shard-00001.h5's 'skipped' is '1'"),
    "entry seconds nan": (entry("seconds", float("nan")), "shard-00001.h5's 'seconds' is nan"),
    "entry data": (entry("data", 7), "shard-00001.h5's 'data' is 7"),
    "entry too many images": (entry("images", 5), "shard-00001.h5's 'images' is 5"),
    "not an object": (lambda m: [m], "not a JSON object"),
}  # fmt: skip


@pytest.mark.parametrize("case", MANIFESTS)
def test_a_tampered_manifest_is_one_line_and_costs_no_shard(copied, shapes_voc, case):
    """A manifest field used unchecked was a ZeroDivisionError, a TypeError, a path out of the
    cache or features read past the split: fit and extract now refuse it in one line naming
    manifest.json and --overwrite, and no shard is touched."""
    change, detail = MANIFESTS[case]
    path = copied / "manifest.json"
    edit_json(path, change)
    before = shard_times(copied)
    for command in (fit(shapes_voc, copied), invoke(*extract_args(shapes_voc, copied.parent))):
        code, out = command
        assert code == 2 and len(error_lines(out)) == 1, out
        (line,) = error_lines(out)
        assert line.startswith(f"error: {path}: ") and detail in line, line
        assert line.endswith(OVERWRITE), line
    assert shard_times(copied) == before


def test_a_truncated_manifest_is_one_line(copied, shapes_voc):
    (copied / "manifest.json").write_text('{"n_images": 1')
    code, out = fit(shapes_voc, copied)
    (line,) = error_lines(out)
    assert code == 2 and line.startswith(f"error: {copied / 'manifest.json'}: not JSON"), out


def test_complete_is_recomputed_from_the_shards_recorded(copied, shapes_voc):
    """`complete: true` over three recorded shards of four is not believed: fit says the
    extraction is unfinished, and extract writes the missing shard alone."""
    edit_json(copied / "manifest.json", lambda m: {
        **m, "shards": {k: v for k, v in m["shards"].items() if k != "shard-00003.h5"}
    })  # fmt: skip
    code, out = fit(shapes_voc, copied)
    assert code == 2 and error_lines(out) == [
        f"error: {copied}: extraction not finished; run pipeline extract again to complete it"
    ], out
    code, out = invoke(*extract_args(shapes_voc, copied.parent, "--workers", "0"))
    assert code == 0 and "1 shards new, 3 reused" in out, out


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 40) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=16), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip
FIELDS = ["n_images", "images_per_shard", "limit", "complete", "shards"]
ENTRY_FIELDS = ["images", "patches", "seconds", "rank", "skipped", "data"]


@CASES
@given(
    field=st.sampled_from(FIELDS + ENTRY_FIELDS + ["name"]),
    value=json_values | st.sampled_from(["shard-00004.h5", "shard-00000.h5", "../x.h5", 4, 0]),
)
def test_any_manifest_value_is_read_checked_or_refused(finished_split, tmp_path, field, value):
    """Whatever value a manifest field holds, the cache either reads a manifest that agrees
    with itself (every shard named in order, past no image, complete exactly when all are
    there) or refuses it in one line naming the file."""
    split_dir = tmp_path / "cache" / finished_split.name
    shutil.rmtree(split_dir.parent, ignore_errors=True)
    shutil.copytree(finished_split, split_dir)
    manifest = json.loads((finished_split / "manifest.json").read_text())
    if field in ENTRY_FIELDS:
        manifest["shards"]["shard-00001.h5"][field] = value
    elif field == "name":
        manifest["shards"][str(value)] = manifest["shards"].pop("shard-00001.h5")
    else:
        manifest[field] = value
    (split_dir / "manifest.json").write_text(json.dumps(manifest))
    cache = SplitCache.load(split_dir)
    try:
        read = cache.manifest()
        paths = cache.shard_paths() if read["complete"] else []
    except CacheError as error:
        assert str(error).startswith(f"{split_dir}") and "\n" not in str(error), error
        return
    per_shard, n_images = read["images_per_shard"], read["n_images"]
    n_shards = -(-n_images // per_shard)
    assert set(read["shards"]) <= {f"shard-{k:05d}.h5" for k in range(n_shards)}
    assert read["complete"] == (len(read["shards"]) == n_shards)
    assert [p.parent for p in paths] == [split_dir] * len(paths)


# --- fingerprint.json ------------------------------------------------------------------------
FINGERPRINTS = {
    "digest": (lambda f: {**f, "digest": "0123456789ab"}, "its settings digest to"),
    "a setting": (lambda f: {**f, "backbone": {**f["backbone"], "precision": "int8"}},
                  "its settings digest to"),
    "source": (lambda f: {**f, "source": "/elsewhere"}, "another dataset or keep rule"),
    "keep": (lambda f: {**f, "keep": "most"}, "'keep' is 'most'"),
    "a list": (lambda f: [f], "not a JSON object"),
}  # fmt: skip


@pytest.mark.parametrize("case", FINGERPRINTS)
def test_a_tampered_fingerprint_is_refused_then_written_again_by_extract(copied, shapes_voc, case):
    """fingerprint.json says which settings the shards were made with: one that does not hash
    to its own digest (or names another dataset than its directory) is refused; extract, which
    knows the settings, writes it again, and nothing is extracted twice."""
    change, detail = FINGERPRINTS[case]
    path = copied / "fingerprint.json"
    edit_json(path, change)
    code, out = fit(shapes_voc, copied)
    assert code == 2, out
    (line,) = error_lines(out)
    assert line.startswith(f"error: {path}: ") and detail in line, line
    assert line.endswith("rerun pipeline extract with the options that made it to write it again")
    code, out = invoke(*extract_args(shapes_voc, copied.parent, "--workers", "0"))
    assert code == 0 and "nothing to do, all 4 shards already complete" in out, out
    code, out = fit(shapes_voc, copied)
    assert code == 0, out


# --- images.json (the image memo) -----------------------------------------------------------
@pytest.mark.parametrize(
    "memo",
    [
        "[1, 2]",
        '{"a": 1}',
        "not json",
        json.dumps({"x": [1, 2, 3]}),
    ],
)
def test_a_damaged_image_memo_is_recomputed(copied, shapes_voc, memo):
    """images.json only saves hashing: entries of the wrong shape are dropped and the files
    hashed again, so extract says nothing to do and fit given the data agrees."""
    (copied / DIGESTS_FILE).write_text(memo)
    code, out = invoke(*extract_args(shapes_voc, copied.parent, "--workers", "0"))
    assert code == 0 and "nothing to do" in out, out
    assert fit(shapes_voc, copied)[0] == 0


def test_a_memo_entry_of_the_wrong_types_is_hashed_again(shapes_voc, tmp_path):
    """An entry whose size and time match but whose digest is not a digest is not believed."""
    image = next((shapes_voc / "JPEGImages").glob("*.jpg"))
    stat = image.stat()
    store = tmp_path / DIGESTS_FILE
    for digest in (7, None, ["x"], "not hex"):
        store.write_text(
            json.dumps({str(image.resolve()): [stat.st_size, stat.st_mtime_ns, digest]})
        )
        value = ImageDigests(store).digest(image)
        assert isinstance(value, str) and len(value) == 32 and value != digest


# --- shard attributes ------------------------------------------------------------------------
def set_attr(name, value):
    def apply(h5):
        h5.attrs[name] = value

    return apply


ATTRIBUTES = {
    "class_names not json": (set_attr("class_names", "["), "'class_names' attribute is '['"),
    "class_names repeated": (set_attr("class_names", '["bus", "bus", "cat"]'),
                             "'class_names' attribute is"),
    "background_label": (set_attr("background_label", 7), "'background_label' attribute is 7"),
    "skipped": (set_attr("skipped", '{"id": 1}'), "'skipped' attribute is"),
    "keep": (set_attr("keep", "most"), "'keep' attribute is 'most'"),
    "labelled": (set_attr("labelled", "yes"), "'labelled' attribute is 'yes'"),
    "runtime": (set_attr("runtime", 5), "'runtime' attribute is 5"),
    "another class list": (lambda h5: h5.attrs.__setitem__("class_names", json.dumps(
        json.loads(h5.attrs["class_names"])[::-1])), "its class_names"),
    "image labels": (lambda h5: (h5.__delitem__("image_labels"),
                                 h5.create_dataset("image_labels", data=[[1, -1]] * 4)),
                     "image_labels has 2 columns"),
}  # fmt: skip


@pytest.mark.parametrize("case", ATTRIBUTES)
def test_a_tampered_shard_attribute_is_refused_by_name_then_rebuilt_alone(copied, shapes_voc, case):
    """What every reader takes from the shards' attributes (the class list, the background
    label, the keep rule, what extract skipped) is checked in every shard, and against the
    other shards: the one at fault is named, and a rerun of extract rebuilds it alone."""
    change, detail = ATTRIBUTES[case]
    bad = copied / "shard-00002.h5"
    with h5py.File(bad, "r+") as h5:
        change(h5)
    code, out = fit(shapes_voc, copied)
    assert code == 2, out
    (line,) = error_lines(out)
    assert line.startswith(f"error: {bad}: ") and detail in line and line.endswith(REBUILD), line
    untouched = {n: t for n, t in shard_times(copied).items() if n != bad.name}
    code, out = invoke(*extract_args(shapes_voc, copied.parent, "--workers", "0"))
    assert code == 0 and "1 shards new, 3 reused, rebuilt shard-00002.h5" in out, out
    assert {n: t for n, t in shard_times(copied).items() if n != bad.name} == untouched
    assert fit(shapes_voc, copied)[0] == 0
