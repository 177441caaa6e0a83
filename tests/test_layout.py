"""The layout docs/architecture.md describes: imports go one way between the packages, and never in a circle.

Every import counts, also those inside functions (they hide cycles, not remove them).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Lower layers first; a module may import its own package and anything of a lower layer. A module
# belongs to the longest package named here that holds it (utils.inference.engine.predictor to
# utils.inference.engine, utils.inference.detector to utils.inference), and a package's __init__
# may import the modules inside it (to offer their names), whatever their layer.
LAYERS = [
    {"utils.errors", "utils.boxes", "utils.defaults"},
    {"utils.files"},
    {"nets"},
    {"utils.inference", "utils.cli"},
    {"utils.data"},
    {"utils.evaluation", "utils.interop"},
    # load_detector and the Predictor: over interop's formats and runtimes and data's image loader
    {"utils.inference.engine"},
    {"utils.training"},
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _project_imports() -> dict[str, set[str]]:
    """module -> the project modules it imports (anywhere in its body)."""
    modules = {_module_name(p): p for pkg in ("nets", "utils") for p in (ROOT / pkg).rglob("*.py")}
    modules.pop("utils")  # the package's __init__.py (it imports only logging)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            found |= {t for t in targets if t in modules and t != name}
        graph[name] = found
    return graph


def _layer(module: str) -> tuple[int, str]:
    holding = [
        (len(package), rank, package)
        for rank, group in enumerate(LAYERS)
        for package in group
        if module == package or module.startswith(package + ".")
    ]
    if not holding:
        raise AssertionError(f"{module} is in no layer of tests/test_layout.py; place it")
    _, rank, package = max(holding)
    return rank, package


def test_imports_go_down_the_layers():
    wrong = []
    for module, imported in _project_imports().items():
        rank, package = _layer(module)
        for target in imported:
            if target.startswith(module + "."):  # a package's __init__ offering its modules' names
                continue
            target_rank, target_package = _layer(target)
            if target_package != package and target_rank >= rank:
                wrong.append(f"{module} imports {target}")
    assert not wrong, "imports against the layering:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    graph = _project_imports()
    cycles, state = [], {}

    def visit(module, stack):
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycles.append(" -> ".join(stack[stack.index(target) :] + [target]))
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


# No function in nets/ or utils/ longer than this (def line to last line, docstring included).
MAX_FUNCTION_LINES = 90


def _function_lengths() -> dict[str, int]:
    """'path:Class.function' -> its length in lines, for every function in nets/ and utils/."""
    lengths = {}

    def visit(node, path, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    lengths[f"{path}:{name}"] = child.end_lineno - child.lineno + 1
                visit(child, path, name + ".")
            else:
                visit(child, path, prefix)

    for package in ("nets", "utils"):
        for path in sorted((ROOT / package).rglob("*.py")):
            visit(ast.parse(path.read_text(), str(path)), path.relative_to(ROOT).as_posix(), "")
    return lengths


def test_no_library_function_is_longer_than_90_lines():
    too_long = sorted(f"{name}: {n} lines" for name, n in _function_lengths().items() if n > MAX_FUNCTION_LINES)
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines (split them into named helpers):\n" + "\n".join(
        too_long
    )
