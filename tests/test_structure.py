"""The layout the design promises (docs/architecture.md): the import graph between the
library's subpackages, no stage importing another, and a command line that answers help,
refusals and a finished extract without loading torch (nor building a net)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from cli_helpers import SMALL, extract_args, invoke

ROOT = Path(__file__).resolve().parents[1]
STAGES = ROOT / "stages"


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


def unit(module: str) -> str:
    """The part of the code a module belongs to: a subpackage of pipeline (features, store...),
    a top-level module (config, errors, io, predict), the package root, or stages."""
    parts = module.split(".")
    if parts[0] == "stages":
        return "stages"
    return parts[1] if len(parts) > 1 else "pipeline"


def import_graph() -> dict[str, set[str]]:
    """unit -> the other units it imports (at module level or inside a function)."""
    graph: dict[str, set[str]] = {}
    for path in sorted([*(ROOT / "pipeline").rglob("*.py"), *STAGES.glob("*.py")]):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        imported = {m for m in imported_modules(path) if m.split(".")[0] in ("pipeline", "stages")}
        graph.setdefault(unit(module), set()).update(unit(m) for m in imported)
    return {name: targets - {name} for name, targets in graph.items()}


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected groups of more than one unit (Tarjan)."""
    index, low, stack, found, counter = {}, {}, [], [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = set()
            while not group or node not in group:
                group.add(stack.pop())
            if len(group) > 1:
                found.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_between_subpackages_has_the_promised_shape():
    graph = import_graph()
    # The package root is the public API: it loads predict and datasets lazily, and the rest
    # read only __version__ from it, so its edges are left out of the cycle check.
    assert graph["pipeline"] == {"predict", "datasets"}, graph["pipeline"]
    without_root = {n: t - {"pipeline"} for n, t in graph.items() if n != "pipeline"}
    assert not cycles(without_root), cycles(without_root)
    assert graph["heads"] <= {"errors"}, graph["heads"]
    for name in ("datasets", "features"):
        assert not graph[name] & {"training", "evaluation"}, (name, graph[name])
    importers = {n for n, targets in graph.items() if "cli" in targets}
    assert importers == {"__main__"}, importers  # only `python -m pipeline`
    assert {"features", "store", "heads", "training", "evaluation", "reporting", "cli"} <= set(
        graph
    )


def test_only_the_root_is_imported_for_its_version():
    for path in sorted([*(ROOT / "pipeline").rglob("*.py"), *STAGES.glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "pipeline":
                assert [a.name for a in node.names] == ["__version__"], path


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
        assert "numpy" not in modules or "--help" not in args, args  # help parses options only
    assert status == 2


def test_a_finished_extract_builds_no_net(shapes_voc, tmp_path):
    code, out = invoke(*extract_args(shapes_voc, tmp_path, "--workers", "0"))
    assert code == 0, out
    status, modules = modules_after(*extract_args(shapes_voc, tmp_path, "--workers", "0"))
    assert status == 0 and "torch" not in modules, sorted(modules)
    assert SMALL[1] == "resnet18"  # a torchvision net: not even torchvision was needed


def test_the_public_api_loads_on_first_use(shapes_voc):
    """`import pipeline` is light (the command line starts with it); its API loads on use."""
    code = "import sys, pipeline\nprint(sorted({m.split('.')[0] for m in sys.modules}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert not {"torch", "h5py", "numpy"} & set(ast.literal_eval(done.stdout)), done.stdout
    import pipeline
    from pipeline.predict import load_head

    assert pipeline.load_head is load_head and pipeline.__version__
    dataset = pipeline.open_dataset(f"voc:{shapes_voc}")
    assert dataset.kind == "voc" and "test" in dataset.splits()
