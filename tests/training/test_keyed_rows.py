"""The engine of sweep's and curve's tables (training/keyed_rows.py) on real CSV files: a rerun
keeps finished rows, measures a damaged one again, keeps other runs' rows, and an interrupted
run keeps the rows it finished."""

from __future__ import annotations

from functools import partial

import pytest

from pipeline.cores import cpu_threads
from pipeline.io import read_csv, write_csv
from pipeline.training.keyed_rows import measure_rows, resume


def square(n: int, fail_on: int | None = None) -> int:
    """The measurement: n squared (an exception for `fail_on`, a run that breaks there)."""
    if n == fail_on:
        raise RuntimeError(f"no square of {n}")
    return n * n


def torch_threads(n: int) -> int:
    import torch

    return torch.get_num_threads()


def key(n: int) -> str:
    return f"square of {n}"


def finished(row: dict) -> bool:
    return row["square"].isdigit()


def run_squares(path, numbers, *, jobs=1, measure=square):
    """Squares of `numbers` into the table at `path`, resumed from what it holds."""
    keys = [key(n) for n in numbers]
    return measure_rows(
        resume(read_csv(path), numbers, keys, finished),
        measure,
        lambda n, result: [{"n": n, "square": result, "key": key(n)}],
        partial(write_csv, path),
        jobs=jobs,
        label="squares",
        unit="number",
    )


def squares(rows: list[dict]) -> dict[str, str]:
    """n -> its square, as the table holds them."""
    return {str(r["n"]): str(r["square"]) for r in rows}


def test_a_rerun_keeps_finished_rows_and_measures_only_the_rest(tmp_path):
    path = tmp_path / "squares.csv"
    first = run_squares(path, [1, 2, 3])
    assert first.new == 3 and [r["square"] for r in first.rows] == [1, 4, 9]
    again = run_squares(path, [1, 2, 3, 4])
    assert again.new == 1
    assert squares(read_csv(path)) == {"1": "1", "2": "4", "3": "9", "4": "16"}
    assert [r["n"] for r in read_csv(path)] == ["1", "2", "3", "4"]  # kept ones first
    assert run_squares(path, [1, 2, 3, 4]).new == 0


def test_a_damaged_row_is_measured_again_and_other_runs_rows_are_kept(tmp_path):
    path = tmp_path / "squares.csv"
    run_squares(path, [1, 2, 3])
    rows = read_csv(path)
    rows[1]["square"] = "four"  # edited by hand
    write_csv(path, [*rows, {"n": "x", "square": "?", "key": "another run"}])
    again = run_squares(path, [1, 2])
    assert again.new == 1 and squares(again.rows) == {"1": "1", "2": "4"}
    table = read_csv(path)
    assert squares(table) == {"1": "1", "2": "4", "3": "9", "x": "?"}
    assert [r["key"] for r in again.others] == [key(3), "another run"]  # as they were


def test_an_interrupted_run_keeps_the_rows_it_finished(tmp_path):
    path = tmp_path / "squares.csv"
    with pytest.raises(RuntimeError, match="no square of 3"):
        run_squares(path, [1, 2, 3, 4], measure=partial(square, fail_on=3))
    assert squares(read_csv(path)) == {"1": "1", "2": "4"}  # written as each finished
    resumed = run_squares(path, [1, 2, 3, 4])
    assert resumed.new == 2 and squares(read_csv(path))["3"] == "9"


def test_a_task_gives_many_rows_under_its_key_and_a_damaged_one_redoes_them_all(tmp_path):
    """Curve's arms: a task's rows share its key (plus a round); one damaged row, all again."""
    path = tmp_path / "rounds.csv"

    def run(numbers):
        return measure_rows(
            resume(read_csv(path), numbers, [key(n) for n in numbers], finished,
                   task_key=lambda row: row["key"].split(" round")[0]),
            square,
            lambda n, result: [
                {"n": n, "square": result, "key": f"{key(n)} round {r}"} for r in range(n)
            ],
            partial(write_csv, path),
            jobs=1, label="rounds", unit="round", size=lambda n: n + 1,  # one more than given
        )  # fmt: skip

    assert run([2, 3]).new == 5
    rows = read_csv(path)
    rows[-1]["square"] = ""
    write_csv(path, rows)
    again = run([2, 3])
    assert again.new == 3 and len(read_csv(path)) == 5
    assert [r["key"] for r in read_csv(path)][:2] == [key(2) + " round 0", key(2) + " round 1"]


def test_jobs_share_the_cores_this_process_may_use(tmp_path):
    path = tmp_path / "threads.csv"
    done = run_squares(path, [1, 2, 3], jobs=2, measure=torch_threads)
    assert done.jobs == 2 and done.threads == max(1, cpu_threads() // 2)
    assert {r["square"] for r in read_csv(path)} == {str(done.threads)}  # what each job ran on
    assert sorted(squares(read_csv(path))) == ["1", "2", "3"]
