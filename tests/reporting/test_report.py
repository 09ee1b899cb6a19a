import csv
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.config import ReportConfig
from pipeline.datasets.voc_writer import VocSample, write_voc_tree
from pipeline.errors import ConfigError, DataError
from pipeline.evaluation.metrics import area_ap, mean_ap, voc07_ap
from pipeline.reporting.plots import (
    BORDER,
    DPI,
    HEADER_INCHES,
    LABEL_INCHES,
    THUMB,
    TRUTH_COLOURS,
    contact_sheet,
    plot_ap_bars,
    plot_pr_curves,
)
from pipeline.reporting.provenance import write_sidecar
from pipeline.reporting.runs import load_run, unique_names
from stages import report

DIGEST = "0123456789ab"
IMAGE_IDS = ["000001", "000002", "000003", "000004", "000005"]
IMAGE_COLOURS = [(255, 255, 0), (0, 255, 255), (255, 0, 255), (0, 0, 255), (0, 0, 0)]
# Image 5 is difficult for cat (dropped from AP) and a low-scored negative for dog.
TRUTH = np.array([[1, -1], [-1, 1], [1, -1], [-1, 1], [0, -1]], dtype=np.int8)
# cat [+, -, +, -] ranking: 11-point AP 28/33 = 84.8%, area 5/6 = 83.3% (see test_metrics);
# dog [-, +, -, +, -]: precision 1/2 at both positives, so 50% by both rules. The others rank
# every positive first: 100%.
SCORES = {
    "mlp": np.array([[4, 1], [3, 4], [2, 2], [1, 3], [10, 0]], dtype=np.float64),
    "svm": np.array([[4, 4], [1, 3], [3, 2], [2, 1], [10, 0]], dtype=np.float64),
}


def write_run(
    directory: Path,
    head: str,
    scores: np.ndarray,
    truth: np.ndarray,
    classes: tuple[str, ...] = ("cat", "dog"),
    *,
    stem: str = "ap",
    voc_root: Path | None = None,
    sidecar: bool = True,
) -> Path:
    """The three files of `pipeline score --output <directory>/<stem>.csv`."""
    directory.mkdir(parents=True, exist_ok=True)
    ap_csv = directory / f"{stem}.csv"
    voc07 = [voc07_ap(scores[:, c], truth[:, c]) for c in range(len(classes))]
    area = [area_ap(scores[:, c], truth[:, c]) for c in range(len(classes))]
    with open(ap_csv, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class", "ap_voc07", "ap_area", "positives", "images"])
        for c, name in enumerate(classes):
            positives, images = (truth[:, c] == 1).sum(), (truth[:, c] != 0).sum()
            writer.writerow(
                [name, round(100 * voc07[c], 2), round(100 * area[c], 2), positives, images]
            )
        writer.writerow(
            ["mean", round(100 * mean_ap(voc07), 2), round(100 * mean_ap(area), 2), 0, 0]
        )
    with open(directory / f"{stem}-scores.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", *classes, *(f"truth_{c}" for c in classes)])
        ids = (
            IMAGE_IDS if len(scores) == len(IMAGE_IDS) else [f"{i:06d}" for i in range(len(scores))]
        )
        for image_id, s, t in zip(ids, scores, truth, strict=True):
            writer.writerow([image_id, *(f"{v:.9g}" for v in s), *t])
    if sidecar:
        config = {
            "data": f"voc:{voc_root}" if voc_root else "",
            "cache_dir": "cache",
            "backbone": {"name": "efficientnet_lite0", "weights": None, "input_size": None},
            "grid": {"scales": 8, "min_scale": 0.15, "overlap": 0.5, "kind": "patches"},
            "labels": {
                "min_patch_cover": 0.2,
                "min_box_cover": 0.6,
                "background_ratio": 0.1,
                "seed": 0,
            },
            "split": "test",
            "train_split": "trainval",
            "head": head,
            "classes": list(classes),
            "k": 5.0,
            "output": str(ap_csv),
            "scores_output": None,
        }
        params = {"hidden": 2048, "dropout": 0.5} if head == "mlp" else {"C": 1.0}
        head_record = {"head": head, "classes": list(classes), "params": params, "digest": DIGEST}
        write_sidecar(ap_csv, "score", config, digest=DIGEST, fingerprint={}, head=head_record)
    return ap_csv


@pytest.fixture
def voc(tmp_path) -> Path:
    """A VOC year dir whose JPEGs are solid colours, one per image, to find them again."""
    samples = [
        VocSample(image_id, Image.new("RGB", (200, 150), colour), ())
        for image_id, colour in zip(IMAGE_IDS, IMAGE_COLOURS, strict=True)
    ]
    return write_voc_tree(tmp_path / "VOCdevkit" / "VOC2007", samples, {"test": list(IMAGE_IDS)})


def image_paths(voc: Path) -> dict[str, Path]:
    return {i: voc / "JPEGImages" / f"{i}.jpg" for i in IMAGE_IDS}


@pytest.fixture
def two_runs(tmp_path, voc) -> list[Path]:
    return [write_run(tmp_path / head, head, SCORES[head], TRUTH, voc_root=voc) for head in SCORES]


def random_run(directory: Path, n_classes: int) -> Path:
    rng = np.random.default_rng(n_classes)
    truth = np.where(rng.random((40, n_classes)) < 0.3, 1, -1).astype(np.int8)
    truth[0] = 1  # every class has a positive
    scores = truth + rng.normal(size=truth.shape)
    classes = tuple(f"class{c}" for c in range(n_classes))
    return write_run(directory, "mlp", scores, truth, classes)


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()
        return image.size


def test_load_run_round_trips(two_runs):
    run = load_run(two_runs[0])
    assert run.name == "mlp"
    assert run.classes == ("cat", "dog")
    assert run.ap_voc07 == {"cat": pytest.approx(100 * 28 / 33, abs=0.005), "dog": 100.0}
    assert run.ap_area == {"cat": pytest.approx(100 * 5 / 6, abs=0.005), "dog": 100.0}
    assert run.mean_voc07 == pytest.approx(50 * (28 / 33 + 1), abs=0.005)
    assert run.mean_area == pytest.approx(50 * (5 / 6 + 1), abs=0.005)
    assert run.image_ids == IMAGE_IDS
    np.testing.assert_array_equal(run.scores, SCORES["mlp"])
    assert run.truth.dtype == np.int8
    np.testing.assert_array_equal(run.truth, TRUTH)
    assert run.digest == DIGEST
    assert run.sidecar["head"]["params"] == {"hidden": 2048, "dropout": 0.5}


def test_run_without_sidecar_is_named_by_its_stem(tmp_path):
    path = write_run(tmp_path, "mlp", SCORES["mlp"], TRUTH, stem="baseline", sidecar=False)
    run = load_run(path)
    assert (run.name, run.sidecar, run.digest) == ("baseline", {}, None)
    assert load_run(path, name="mine").name == "mine"


def test_unique_names_adds_stem_then_directory_then_count(tmp_path):
    k1 = write_run(tmp_path / "k1", "mlp", SCORES["mlp"], TRUTH)
    k5 = write_run(tmp_path / "k5", "mlp", SCORES["mlp"], TRUTH)
    other = write_run(tmp_path / "k5", "mlp", SCORES["mlp"], TRUTH, stem="other")
    svm = write_run(tmp_path / "k5", "svm", SCORES["svm"], TRUTH, stem="svm")
    runs = [load_run(p) for p in (k1, k5, other, svm)]
    assert [r.name for r in unique_names(runs)] == ["mlp-ap-k1", "mlp-ap-k5", "mlp-other", "svm"]
    same = [load_run(k1), load_run(k1)]
    assert [r.name for r in unique_names(same)] == ["mlp-ap-k1-1", "mlp-ap-k1-2"]


def _remove_ap(ap_csv: Path) -> Path:
    ap_csv.unlink()
    return ap_csv


def _drop_column(ap_csv: Path) -> Path:
    rows = list(csv.reader(ap_csv.open()))
    with open(ap_csv, "w", newline="") as handle:
        csv.writer(handle).writerows(row[:2] + row[3:] for row in rows)
    return ap_csv


def _rename_score_class(ap_csv: Path) -> Path:
    scores = ap_csv.with_name("ap-scores.csv")
    scores.write_text(scores.read_text().replace("dog", "cow"))
    return scores


def _bad_number(ap_csv: Path) -> Path:
    ap_csv.write_text(ap_csv.read_text().replace("100.0", "lots", 1))
    return ap_csv


def _remove_scores(ap_csv: Path) -> Path:
    scores = ap_csv.with_name("ap-scores.csv")
    scores.unlink()
    return scores


def _bad_sidecar(ap_csv: Path) -> Path:
    sidecar = ap_csv.with_suffix(".json")
    sidecar.write_text("{not json")
    return sidecar


@pytest.mark.parametrize(
    "spoil, message",
    [
        (_remove_ap, "run not found"),
        (_drop_column, "missing columns ap_area"),
        (_rename_score_class, "do not match the classes of ap.csv (cat, dog)"),
        (_bad_number, "'lots' is not a number"),
        (_remove_scores, "per-image scores of ap.csv not found"),
        (_bad_sidecar, "not valid JSON"),
    ],
)
def test_bad_run_files_name_the_file(tmp_path, spoil, message):
    ap_csv = write_run(tmp_path, "mlp", SCORES["mlp"], TRUTH)
    faulty = spoil(ap_csv)
    with pytest.raises(DataError) as info:
        load_run(ap_csv)
    assert str(info.value).startswith(f"{faulty}: ")
    assert message in str(info.value)


def test_report_writes_figures_table_and_provenance(tmp_path, two_runs):
    out = tmp_path / "report"
    summary = report.run(ReportConfig(runs=tuple(map(str, two_runs)), output=str(out)))
    files = ("pr-curves.png", "ap-bars.png", "contact-mlp.png", "contact-svm.png", "results.md")
    assert summary.line() == f"report: 2 runs, 2 classes -> {out}/ ({', '.join(files)})"
    for name in files[:4]:
        assert min(png_size(out / name)) > 100
    md = (out / "results.md").read_text()
    voc07, area = md.split("## Area AP")
    assert "| cat | 84.8 | **100.0** |" in voc07
    assert "| dog | **100.0** | 50.0 |" in voc07
    assert "| **mean** | **92.4** | 75.0 |" in voc07
    assert "| cat | 83.3 | **100.0** |" in area
    assert "| **mean** | **91.7** | 75.0 |" in area
    assert md.count(f"- cache digest: `{DIGEST}`") == 2
    assert "- backbone: efficientnet_lite0, weights ImageNet" in md
    assert "- grid: patches, 8 scales, min_scale 0.15, overlap 0.5" in md
    assert "- head: mlp (dropout=0.5, hidden=2048)" in md
    assert "- splits: trainval -> test" in md
    provenance = json.loads((out / "results.json").read_text())
    assert provenance["kind"] == "report"
    assert [(r["name"], r["digest"]) for r in provenance["runs"]] == [
        ("mlp", DIGEST),
        ("svm", DIGEST),
    ]


def test_report_skips_contact_sheets_without_a_dataset(tmp_path):
    bare = write_run(tmp_path / "a", "mlp", SCORES["mlp"], TRUTH, sidecar=False)
    lost = write_run(tmp_path / "b", "svm", SCORES["svm"], TRUTH, voc_root=tmp_path / "gone")
    out = tmp_path / "report"
    summary = report.run(ReportConfig(runs=(str(bare), str(lost)), output=str(out)))
    assert summary.report.files == ("pr-curves.png", "ap-bars.png", "results.md")
    assert summary.report.notes[0] == "contact sheet of ap skipped: no dataset known (pass --data)"
    assert summary.report.notes[1].startswith(
        f"contact sheet of svm skipped: {tmp_path / 'gone'}: "
    )
    assert "; contact sheet of ap skipped" in summary.line()
    assert not list(out.glob("contact-*.png"))
    assert "- settings: unknown (no provenance sidecar)" in (out / "results.md").read_text()


def test_report_names_must_match_runs(two_runs, tmp_path):
    with pytest.raises(ConfigError, match=r"^names \('one',\): 1 names for 2 runs; give one"):
        ReportConfig(runs=tuple(map(str, two_runs)), output=str(tmp_path), names=("one",))


def test_figures_grow_with_the_class_count(tmp_path):
    runs = {n: [load_run(random_run(tmp_path / str(n), n))] for n in (2, 6)}
    pr = {n: png_size(plot_pr_curves(r, tmp_path / f"pr{n}.png")) for n, r in runs.items()}
    # 2 classes: 2 columns x 1 row of 3.2 in at 100 dpi; 6 classes: 4 columns x 2 rows.
    assert pr == {2: (640, 320), 6: (1280, 640)}
    bars = {n: png_size(plot_ap_bars(r, tmp_path / f"bars{n}.png")) for n, r in runs.items()}
    assert bars[6][0] > bars[2][0] and bars[6][1] == bars[2][1]


def test_contact_sheet_ranks_and_frames_images(tmp_path, two_runs, voc):
    top = 2
    path = contact_sheet(load_run(two_runs[1]), image_paths(voc), tmp_path / "sheet.png", top=top)
    cell = THUMB + 2 * BORDER
    gap = cell // 2
    left, header = round(LABEL_INCHES * DPI), round(HEADER_INCHES * DPI)
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    assert pixels.shape[:2] == (2 * cell + header, 2 * top * cell + gap + left)
    # svm scores: cat ranks images 5 (difficult), 1 (+) ... 4 (-), 2 (-);
    # dog ranks 1 (-), 2 (+) ... 4 (+), 5 (-).
    expected = {
        "cat": [(4, 0), (0, 1), (3, -1), (1, -1)],
        "dog": [(0, -1), (1, 1), (3, 1), (4, -1)],
    }
    for row, slots in enumerate(expected.values()):
        y = header + row * cell
        for k, (image, truth) in enumerate(slots):
            x = left + k * cell + (gap if k >= top else 0)
            border = pixels[y + cell // 2, x + BORDER // 2]
            centre = pixels[y + cell // 2, x + cell // 2]
            assert np.abs(border - TRUTH_COLOURS[truth]).max() < 30, (row, k)
            assert np.abs(centre - IMAGE_COLOURS[image]).max() < 30, (row, k)


def test_contact_sheet_names_a_missing_image(tmp_path, two_runs, voc):
    missing = voc / "JPEGImages" / "000003.jpg"
    missing.unlink()
    with pytest.raises(DataError, match=f"^{missing}: image not found"):
        contact_sheet(load_run(two_runs[0]), image_paths(voc), tmp_path / "sheet.png")


SIDECAR_FIELDS = [
    ("config",), ("config", "backbone"), ("config", "grid"), ("config", "task"),
    ("config", "data"), ("config", "voc_root"), ("config", "image_dir"), ("config", "split"),
    ("config", "train_split"), ("config", "head"), ("config", "k"), ("head",),
    ("head", "head"), ("head", "params"), ("digest",), ("code_version",), ("created",),
]  # fmt: skip
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(), st.text(max_size=6)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)  # fmt: skip


@settings(
    derandomize=True, max_examples=30, deadline=None, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)  # fmt: skip
@given(field=st.sampled_from(SIDECAR_FIELDS), value=json_values)
def test_a_tampered_sidecar_field_is_one_line_or_a_report(tmp_path, voc, field, value):
    """Issue 26: every field report reads from a run's sidecar (ap.json) is checked against
    what it claims: a report of the run, or one line naming the sidecar and the field."""
    directory = Path(tempfile.mkdtemp(dir=tmp_path))
    ap_csv = write_run(directory / "run", "mlp", SCORES["mlp"], TRUTH, voc_root=voc)
    sidecar = ap_csv.with_suffix(".json")
    payload = json.loads(sidecar.read_text())
    holder = payload
    for key in field[:-1]:
        holder = holder[key]
    holder[field[-1]] = value
    sidecar.write_text(json.dumps(payload))
    try:
        summary = report.run(ReportConfig(runs=(str(ap_csv),), output=str(directory / "out")))
    except DataError as exc:
        message = str(exc)
        assert message.startswith(f"{sidecar}: ") and "\n" not in message, message
        assert ".".join(field) in message or field[0] in message, message
        return
    assert (directory / "out" / "results.md").is_file(), summary
