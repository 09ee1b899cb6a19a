"""The layout the design promises: no stage imports another, and the command line answers
help, refusals and a finished extract without loading torch (nor building a net)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from cli_helpers import SMALL, extract_args, invoke

STAGES = Path(__file__).resolve().parents[1] / "stages"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if node.module == "stages":
                names |= {f"stages.{alias.name}" for alias in node.names}
    return names


def test_no_stage_imports_another():
    stages = sorted(p for p in STAGES.glob("*.py") if p.name != "__init__.py")
    assert {p.stem for p in stages} >= {"extract", "fit", "score", "predict", "localize"}
    for path in stages:
        others = {m for m in imported_modules(path) if m.startswith("stages")}
        assert not others, f"{path.name} imports {others}"


def modules_after(*args: str) -> tuple[int, set[str]]:
    """Exit code and the imported top-level modules after `pipeline ARGS` in a new process."""
    code = (
        "import sys\nfrom pipeline.cli import main\nsys.argv = ['pipeline', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    status = exc.code\n"
        "print('MODULES', sorted({m.split('.')[0] for m in sys.modules}), status)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    line = next(line for line in done.stdout.splitlines() if line.startswith("MODULES"))
    names, status = line[len("MODULES ") :].rsplit(" ", 1)
    return int(status or 0), set(ast.literal_eval(names))


def test_help_and_refusals_do_not_load_torch(tmp_path):
    for args in (
        ["--help"],
        ["extract", "--help"],
        ["extract", "--voc-root", str(tmp_path / "no")],
    ):
        status, modules = modules_after(*args)
        assert "torch" not in modules and "torchvision" not in modules, args
    assert status == 2


def test_a_finished_extract_builds_no_net(shapes_voc, tmp_path):
    code, out = invoke(*extract_args(shapes_voc, tmp_path, "--workers", "0"))
    assert code == 0, out
    status, modules = modules_after(*extract_args(shapes_voc, tmp_path, "--workers", "0"))
    assert status == 0 and "torch" not in modules, sorted(modules)
    assert SMALL[1] == "resnet18"  # a torchvision net: not even torchvision was needed
