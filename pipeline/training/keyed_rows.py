"""One engine for a table of measured rows (sweep's settings, curve's fits): each row is keyed
by the task that measured it, so a rerun keeps its tasks' finished rows, measures a damaged
row's task again and leaves other runs' rows be; tasks run in parallel jobs, and the table is
rewritten after each one, so an interrupted run keeps what it finished."""

from __future__ import annotations

import resource
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import joblib
from tqdm import tqdm

from pipeline.cores import cpu_threads


@dataclass(frozen=True)
class Resumed:
    """A table read back for a run: its tasks' finished rows (in the table's order), the rows
    of other tasks (kept as they are), and the tasks left to measure (in the run's order)."""

    kept: list[dict]
    others: list[dict]
    todo: list


@dataclass(frozen=True)
class KeyedRun:
    """What a run leaves: its rows (the kept ones, then the new ones as they finished)."""

    rows: list[dict]
    others: list[dict]
    new: int  # rows this run measured
    jobs: int
    threads: int  # torch threads of each job
    peak_bytes: int  # the most resident memory of one process (this one or a job's)


def own_key(row: dict) -> str | None:
    """The key a row was written with."""
    return row.get("key")


def resume(
    earlier: list[dict],
    tasks: Sequence,
    keys: Sequence[str],
    measured: Callable[[dict], bool],
    task_key: Callable[[dict], str | None] = own_key,
) -> Resumed:
    """The rows of `earlier` sorted out for a run of `tasks` (with their `keys`, one each): a
    task is finished when it has rows and each is `measured`; a row that is not (edited,
    damaged) is dropped with the rest of its task's, which is measured again. `task_key`: the
    key of the task that made a row."""
    wanted = set(keys)
    damaged = {task_key(r) for r in earlier if task_key(r) in wanted and not measured(r)}
    kept = [r for r in earlier if task_key(r) in wanted - damaged]
    finished = {task_key(r) for r in kept}
    return Resumed(
        kept=kept,
        others=[r for r in earlier if task_key(r) not in wanted],
        todo=[t for t, k in zip(tasks, keys, strict=True) if k not in finished],
    )


def measure_rows(
    resumed: Resumed,
    measure: Callable,
    rows_of: Callable[..., list[dict]],
    write: Callable[[list[dict]], None],
    *,
    jobs: int,
    label: str,
    unit: str,
    size: Callable[..., int] = lambda task: 1,
) -> KeyedRun:
    """Runs `measure(task)` on each task left, in up to `jobs` processes (-1: one per core)
    sharing this process's cores, and `rows_of(task, result)` here as each finishes; the
    table (rows, then the others) goes to `write` after each task and at the end. `size`: the
    rows a task should give, for the progress bar (a task that ends early gives fewer)."""
    todo = resumed.todo
    jobs = min(joblib.effective_n_jobs(jobs), max(1, len(todo)))
    threads = max(1, cpu_threads() // jobs)
    rows, new, peak = list(resumed.kept), 0, _peak_bytes()
    results = joblib.Parallel(n_jobs=jobs, return_as="generator_unordered")(
        joblib.delayed(_in_job)(measure, task, index, threads) for index, task in enumerate(todo)
    )
    with tqdm(total=sum(size(t) for t in todo), desc=label, unit=unit) as bar:
        for index, result, job_peak in results:
            task = todo[index]
            made = rows_of(task, result)
            rows += made
            new += len(made)
            peak = max(peak, job_peak)
            bar.total -= size(task) - len(made)
            bar.update(len(made))
            write(rows + resumed.others)
    write(rows + resumed.others)
    return KeyedRun(rows, resumed.others, new, jobs, threads, peak)


def _in_job(measure: Callable, task, index: int, threads: int):
    """(the task's index, what measuring it gave, this process's peak memory in bytes); runs
    in a job's process, its torch on `threads` cores."""
    import torch

    torch.set_num_threads(threads)
    return index, measure(task), _peak_bytes()


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
