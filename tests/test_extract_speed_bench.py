"""bench/extract_speed.py's report: the rows issue 30 asks for exist, each ratio divides the
rows it names, and --repeats prints each row's median round (the measurements themselves are
the bench's job, never a unit test's)."""

from __future__ import annotations

import importlib.util

from conftest import REPO

spec = importlib.util.spec_from_file_location("extract_speed", REPO / "bench" / "extract_speed.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def run(rate: float, **extra) -> dict:
    return {"rate": rate, "rss_mib": 1000.0, "runtime": "onnxruntime", "batch": 32, **extra}


def test_a_cpu_run_has_every_row_its_ratios_divide():
    labels = [label for label, *_ in bench.rows_for("cpu", "auto")]
    for row in ("forward onnxruntime", "crop", "shared", "crop train", "shared train",
                "crop int8", "shared int8", "crop torch", "shared torch", "naive"):  # fmt: skip
        assert row in labels
    int8 = [row for row in bench.rows_for("cpu", "auto") if row[3] == "int8"]
    assert [(method, precision) for _, method, _, precision in int8] == [
        ("crop", "int8"),
        ("shared", "int8"),
    ]


def test_the_median_round_is_reported_with_the_spread_of_all():
    runs = [run(300.0), run(100.0), run(200.0)]
    assert bench.median_run(runs)["rate"] == 200.0
    assert bench.median_run(runs)["spread"] == [300.0, 100.0, 200.0]
    assert bench.median_run([run(4.0), run(1.0), run(3.0), run(2.0)])["rate"] == 2.0
    limits = [{"gflops": 150.0}, {"gflops": 180.0}, {"gflops": 170.0}]
    assert bench.median_run(limits)["gflops"] == 170.0


def test_the_ratios_divide_the_rows_they_name(capsys):
    machine = {"gflops": 200.0, "side": 2048, "dtype": "float32", "threads": 2,
               "gflop_per_patch": 1.0, "input_size": 224, "spread": [190.0, 200.0, 210.0]}  # fmt: skip
    results = {
        "machine": machine,
        "forward torch": run(50.0),
        "forward onnxruntime": run(160.0),
        "crop": run(152.0, spread=[140.0, 152.0, 155.0]),
        "shared": run(400.0),
        "crop train": run(130.0, images_per_s=2.0),
        "shared train": run(40.0, images_per_s=0.7),
        "crop int8": run(304.0),
        "shared int8": run(680.0),
        "crop torch": run(45.0),
        "shared torch": run(120.0),
        "naive": run(30.0),
    }
    results["bounds"] = {"runtime": "onnxruntime", "cut": 0.2, "forward": 1.0, "head": 0.01,
                         "sharing": 3.6, "trunk": 0.8, "shared": 1.0}  # fmt: skip
    bench.print_device(results)
    out = capsys.readouterr().out
    ratios = {line[:40].strip(): line[40:].split() for line in out.splitlines() if "target" in line}
    assert ratios["crop / forward"][:2] == ["0.95", "target"] and "ok" in ratios["crop / forward"]
    assert ratios["crop int8 / crop"][0] == "2.00"
    assert ratios["shared int8 / shared"][0] == "1.70"
    assert "BELOW" in ratios["shared int8 / shared"]
    assert ratios["shared / crop, training split"][0] == "0.35"
    assert "rounds 190.0-210.0" in out and "rounds 140.0-155.0" in out
