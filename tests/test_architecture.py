"""The package's import rules (docs/architecture.md), read from the source: no import cycle
among phmscale modules (imports inside functions and `import_module("phmscale…")` strings
count), `nn/` and `models/` free of the infrastructure libraries, `spec/` on pydantic and
yaml only, and TorchX in three modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "phmscale"
INFRA = ("ray", "deepspeed", "mlflow", "webdataset", "typer", "torchx")


def _modules() -> dict[str, Path]:
    out = {}
    for file in PACKAGE.rglob("*.py"):
        parts = file.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = file
    return out


def _imports(name: str, file: Path) -> set[str]:
    """Every module name `file` imports, anywhere in it (dotted, absolute). A package's
    `__init__` runs before any of its modules: that edge is Python's, not the code's, and is
    not counted (as import linters count)."""
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            # `from a import b`: module a.b when it is one, else a (resolved in _graph)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant)):
            found.add(node.args[0].value)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()

    def owner(name: str) -> str | None:  # `a.b.c` names a module, or something in one
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    return {m: {o for i in _imports(m, f) if i.startswith("phmscale")
                if (o := owner(i)) and o != m} for m, f in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_rooms_keep_their_imports():
    modules = _modules()
    for name, file in modules.items():
        top = {i.split(".")[0] for i in _imports(name, file)}
        if name.startswith(("phmscale.nn", "phmscale.models")):
            assert not top & set(INFRA), f"{name} imports {sorted(top & set(INFRA))}"
        if name.startswith("phmscale.spec"):
            inside = {i for i in _imports(name, file) if i.startswith("phmscale")}
            assert all(i.startswith(("phmscale.spec", "phmscale.errors", "phmscale.algebra"))
                       or i == "phmscale" for i in inside), f"{name}: {sorted(inside)}"
            assert not top & set(INFRA), f"{name} imports {sorted(top & set(INFRA))}"


def test_torchx_lives_in_three_modules():
    torchx = sorted(n for n in _modules() if n.startswith("phmscale.launch.torchx"))
    assert torchx == ["phmscale.launch.torchx", "phmscale.launch.torchx_entry",
                      "phmscale.launch.torchx_jobs"]


def test_the_training_loader_imports_no_packer():
    """Built-ins are packed before training starts (data/prepare.py): the loader reaches
    neither the packers nor the dataset readers, statically or when imported."""
    graph, seen, todo = _graph(), set(), ["phmscale.data.loader"]
    while todo:
        for module in graph[todo.pop()] - seen:
            seen.add(module)
            todo.append(module)
    packers = {"phmscale.data.packer", "phmscale.data.sources", "phmscale.data.prepare",
               "phmscale.data.verify"}
    assert not seen & packers, sorted(seen & packers)
    code = ("import sys, phmscale.data.loader; "
            "print(sorted(m for m in sys.modules if m.startswith('phmscale.data.')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=ROOT).stdout
    assert not any(f"'{p}'" in loaded for p in packers), loaded
