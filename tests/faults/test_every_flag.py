"""Every flag of every verb with hostile values (issue 26): a number flag 0, -1, nan, inf, a
huge value and the empty string, a text flag (a name, a path) 0, a 300-character name and the
empty string, each alone on a small run that works. Each case ends in a one-line refusal
(exit code 2, one "error:" line, no traceback) or in a run that works (exit code 0, no NaN or
Inf in what it prints); `pipeline serve` first runs in this process with its port taken (a
value refused says so at once), and a configuration it takes runs as a process, a started
server answering /health. A property-based part draws other numbers for each number flag (hypothesis) and
checks the same, and that a value the command takes lies in its flag's declared range."""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import click
import httpx
import pytest
from cli_helpers import SMALL, error_lines, extract_splits, held_port, invoke
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.cli import cli

HUGE = {"int": "99999999999999999999", "float": "1e308", "text": "x" * 300}
NUMBER_VALUES = ("0", "-1", "nan", "inf", "huge", "")
# to a text flag "-1", "nan" and "inf" are names like "0"; "0" stands for them all
TEXT_VALUES = ("0", "huge", "")
NON_FINITE = re.compile(r"(?<![\w.])[-+]?(nan|inf)(?![\w.])", re.IGNORECASE)


def value_of(kind: str, raw: str) -> str:
    return HUGE[kind] if raw == "huge" else raw


def kind_of(param: click.Parameter) -> str:
    if isinstance(param.type, click.types.IntParamType):
        return "int"
    if isinstance(param.type, click.types.FloatParamType):
        return "float"
    return "text"


def walked(command: click.Command) -> list[click.Parameter]:
    """The parameters that take a value: every option but the on/off flags, and arguments."""
    return [p for p in command.params if not getattr(p, "is_flag", False) and p.name != "help"]


def cases(name: str) -> list[tuple[click.Parameter, str]]:
    out = []
    for param in walked(cli.commands[name]):
        kind = kind_of(param)
        values = NUMBER_VALUES if kind != "text" else TEXT_VALUES
        out += [(param, value_of(kind, raw)) for raw in values]
    return out


def with_value(base: list[str], param: click.Parameter, value: str) -> list[str]:
    """`base` with this parameter given `value` (an option replaced where base sets it)."""
    if isinstance(param, click.Argument):
        return [value if a == f"<{param.name}>" else a for a in base]
    for flag in param.opts:
        if flag in base:
            at = base.index(flag)
            base = base[:at] + base[at + 2 :]
    return [*base, max(param.opts, key=len), value]


def filled(base: list[str], defaults: dict[str, str]) -> list[str]:
    return [defaults.get(a, a) for a in base]


@pytest.fixture(scope="module")
def world(shapes_voc, tmp_path_factory) -> dict:
    """A small world every verb runs in: the shapes tree's splits extracted (patch grid and
    whole images), the heads fitted, a scored run, an exported model and a photo."""
    root = tmp_path_factory.mktemp("walk")
    cache = root / "cache"
    common = extract_splits(shapes_voc, cache)
    whole = extract_splits(shapes_voc, cache, "--grid", "whole")
    fast = ["--epochs", "2", "--hidden", "16"]
    heads = {}
    for head in ("svm", "mlp", "weak"):
        code, out = invoke("fit", "--head", head, *fast, *common)
        assert code == 0, out
        heads[head] = out.strip().rsplit(" -> ", 1)[1]
    code, out = invoke("fit", "--head", "svm", *whole)
    assert code == 0, out
    svm = heads["svm"]
    code, out = invoke("score", "--head", "svm", "--output", str(root / "ap.csv"), *common)
    assert code == 0, out
    code, out = invoke("export", "--head", svm, "--output", str(root / "model"))
    assert code == 0, out
    photo = next((shapes_voc / "JPEGImages").glob("*.jpg"))
    data = ["--voc-root", str(shapes_voc), "--cache-dir", str(cache), *SMALL]
    return {
        "root": root, "cache": cache, "common": common, "whole": whole, "data": data,
        "svm": svm, "photo": str(photo), "model": str(root / "model"), "fast": fast,
    }  # fmt: skip


def bases(world: dict) -> dict[str, list[str]]:
    """A run that works for each verb; `<name>` marks where a positional argument goes."""
    common, fast = world["common"], world["fast"]
    return {
        "demo-data": ["demo-data", "--output", "demo", "--trainval", "6", "--test", "3"],
        "extract": ["extract", "--split", "test", "--workers", "0", "--limit", "4", *common],
        "fit": ["fit", "--head", "mlp", *fast, *common],
        "sweep": ["sweep", "--head", "svm", "--param", "svm_c=1", "--folds", "2", "--jobs", "1",
                  *fast, *common],
        "curve": ["curve", "--heads", "svm", "--shots", "1", "--seeds", "1", "--jobs", "1",
                  *fast, *common],
        "suggest": ["suggest", "--head", "svm", "--split", "test", *common],
        "score": ["score", "--head", "svm", *common],
        "compare": ["compare", *fast, *common],
        "localize": ["localize", "--head", "svm", "--overlays", "1", *common],
        "report": ["report", "<runs>", "--output", "report"],
        "predict": ["predict", "<sources>", "--head", world["svm"]],
        "export": ["export", "--head", world["svm"], "--output", "model"],
        "serve": ["serve", "<model>", "--port", "0"],
        # a Label Studio that is not there: the backend serves all the same (/health says so)
        "label-studio": ["label-studio", "--label-studio", "http://127.0.0.1:9", "--api-key",
                         "token", "--port", "0", "--workdir", "backend"],
    }  # fmt: skip


def positional(world: dict) -> dict[str, str]:
    return {
        "<runs>": str(world["root"] / "ap.csv"),
        "<sources>": world["photo"],
        "<model>": world["model"],
    }


def outcome(code: int, out: str) -> str | None:
    """What is wrong with a run's ending, or None: a one-line refusal, or a clean success."""
    if "Traceback" in out:
        return "a traceback"
    if code == 2:
        lines = error_lines(out)
        return None if len(lines) == 1 else f"{len(lines)} error lines"
    if code != 0:
        return f"exit code {code}"
    if NON_FINITE.search(out):
        return f"NaN or Inf printed ({NON_FINITE.search(out)[0]})"
    return None


def ran(args: list[str]) -> tuple[int, str]:
    """(exit code, output) of a run in this process; an exception is a traceback in it."""
    result = CliRunner().invoke(cli, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return (
            1,
            f"{result.output}\nTraceback: {type(result.exception).__name__}: {result.exception}",
        )
    return result.exit_code, result.output


def served(args: list[str], param: click.Parameter, cwd: Path) -> str | None:
    """A case of a server verb: in this process with its port held by the test, so that a
    value refused is one line at once and a configuration taken stops at the bind, in one line
    too; a configuration `serve` takes then runs as a process, started and answering /health
    (label-studio's worker and net start after the bind: its `--port` cases run as a process)."""
    if param.name != "port":
        with held_port() as port:
            code, out = ran(
                [port if a == "0" and args[i - 1] == "--port" else a for i, a in enumerate(args)]
            )
        problem = outcome(code, out)
        if problem or code != 2:
            return problem or f"exit code {code} with its port taken"
        if "cannot listen on" not in out or args[0] != "serve":
            return None  # its value refused, in one line; or taken, up to the bind
    return as_process(args, cwd)


def as_process(args: list[str], cwd: Path) -> str | None:
    """`pipeline serve` as a process: refused in one line, or started and answering /health."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args[0:]], cwd=cwd, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        line = process.stdout.readline()
        url = re.search(r"at (http://\S+/)", line)
        if url is None:
            rest = line + process.stdout.read()
            return outcome(process.wait(timeout=60), rest)
        health = httpx.get(url[1] + "health", timeout=30)
        return None if health.status_code == 200 else f"/health answered {health.status_code}"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            process.wait(timeout=30)


VERBS = tuple(cli.commands)
SERVERS = ("serve", "label-studio")  # run until stopped: as a process, answering /health


def test_every_verb_is_walked():
    """A verb added later is walked too: it needs its base run here."""
    assert set(VERBS) == {
        "demo-data", "extract", "fit", "sweep", "curve", "suggest", "score", "compare",
        "localize", "report", "predict", "export", "serve", "label-studio",
    }  # fmt: skip


@pytest.mark.parametrize("verb", VERBS)
def test_every_flag_with_hostile_values_is_refused_in_one_line_or_runs_clean(
    world, tmp_path, monkeypatch, verb
):
    monkeypatch.chdir(tmp_path)  # what an accepted run writes by a relative name lands here
    base = bases(world)[verb]
    problems, walked_cases = [], 0
    for param, value in cases(verb):
        args = filled(with_value(base, param, value), positional(world))
        problem = served(args, param, tmp_path) if verb in SERVERS else outcome(*ran(args))
        walked_cases += 1
        if problem:
            problems.append(f"{' '.join(a[:40] for a in args[:1] + args[-2:])}: {problem[:300]}")
    assert not problems, "\n".join(problems)
    assert walked_cases == len(cases(verb))


NUMBER_FLAGS = [
    (verb, param)
    for verb in VERBS
    if verb not in SERVERS
    for param in walked(cli.commands[verb])
    if isinstance(param, click.Option) and kind_of(param) != "text"
]


def _range_of(verb: str, param: click.Option):
    """The Range a number flag's setting is declared with, where the configs declare one."""
    from dataclasses import fields

    from pipeline import config as configs

    if param.name == "cv_folds":  # fit --cv: checked by the CLI against FOLDS
        return configs.FOLDS
    for owner in vars(configs).values():
        if isinstance(owner, type) and hasattr(owner, "__dataclass_fields__"):
            for f in fields(owner):
                if "range" in f.metadata and (f.metadata["setting"] or f.name) == param.name:
                    return f.metadata["range"]
    return None


numbers = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["-0", "0.0", "1e-300", "5e-324", "0x10", "1_000", " 3", "3 "]),
)


@settings(
    derandomize=True, max_examples=120, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)  # fmt: skip
@given(flag=st.sampled_from(NUMBER_FLAGS), raw=numbers)
def test_a_number_flag_takes_only_values_in_its_range(world, flag, raw):
    """Any number: refused in one line, or taken only where its declared range holds it (a
    value taken runs: that part is the walk's; here the command stops at parsing)."""
    verb, param = flag
    kind = kind_of(param)
    try:
        value = param.type.convert(raw, param, None)
    except click.BadParameter:
        return  # click's own one-line refusal, walked above for the same flag
    allowed = _range_of(verb, param)
    assert allowed is not None, f"{verb} {param.opts}: no range declared in pipeline/config.py"
    if not allowed.holds(value):
        code, out = invoke(*with_value(bases(world)[verb], param, raw))
        assert code == 2 and len(error_lines(out)) == 1 and "Traceback" not in out, out
        assert param.opts[-1] in error_lines(out)[0] or max(param.opts, key=len) in out, out
    else:
        assert kind == "int" or math.isfinite(value)


def test_docs_list_every_declared_range():
    """docs/options.md#ranges is the declarations of pipeline/config.py, row for row."""
    from dataclasses import fields

    from pipeline import config as configs

    declared: dict[tuple[str, str], list[str]] = {}
    for owner in vars(configs).values():
        if (
            isinstance(owner, type)
            and issubclass(owner, configs.Settings)
            and owner is not configs.Settings
        ):
            for f in fields(owner):
                if "range" in f.metadata:
                    text = str(f.metadata["range"]).removeprefix("give ")
                    declared.setdefault((f.metadata["setting"] or f.name, text), []).append(
                        owner.__name__
                    )
    rows = [f"| `{s}` | {r} | {', '.join(o)} |" for (s, r), o in sorted(declared.items())]
    page = (Path(__file__).parents[2] / "docs" / "options.md").read_text()
    table = page.split("| setting | range | declared in |\n|---|---|---|\n")[1].split("\n\n")[0]
    assert table.strip().splitlines() == rows
