"""The layout README describes: imports go one way between the packages, and never in a circle.

Every import counts, also those inside functions (they hide cycles, not remove them).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Lower layers first; a module may import its own package and anything of a lower layer.
LAYERS = [
    {"utils.errors", "utils.boxes"},
    {"utils.files"},
    {"nets"},
    {"utils.inference", "utils.cli"},
    {"utils.data"},
    {"utils.evaluation", "utils.interop"},
    {"utils.training"},
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _project_imports() -> dict[str, set[str]]:
    """module -> the project modules it imports (anywhere in its body)."""
    modules = {_module_name(p): p for pkg in ("nets", "utils") for p in (ROOT / pkg).rglob("*.py")}
    modules.pop("utils")  # the namespace's empty __init__.py
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
    for rank, group in enumerate(LAYERS):
        for package in group:
            if module == package or module.startswith(package + "."):
                return rank, package
    raise AssertionError(f"{module} is in no layer of tests/test_layout.py; place it")


def test_imports_go_down_the_layers():
    wrong = []
    for module, imported in _project_imports().items():
        rank, package = _layer(module)
        for target in imported:
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
