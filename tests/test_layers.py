"""The package's layers (docs/architecture.md): imports run downward only, and no module imports
itself through others. import-linter checks the layers contract of pyproject.toml; grimp's graph
(the one import-linter builds: imports in functions included, annotations under TYPE_CHECKING not)
is searched for cycles."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def import_cycles(imports: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for root in sorted(imports):
        if root in index:
            continue
        work = [(root, iter(sorted(imports.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            module, targets = work[-1]
            target = next(targets, None)
            if target is not None:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(imports.get(target, ())))))
                elif target in on_stack:
                    low[module] = min(low[module], index[target])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[module])
            if low[module] == index[module]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == module:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def package_imports(package: str = "mammoth") -> dict[str, set[str]]:
    """Module -> the package's modules it imports (anywhere in its code, annotations excepted)."""
    graph = grimp.build_graph(package, exclude_type_checking_imports=True, cache_dir=None)
    return {module: set(graph.find_modules_directly_imported_by(module)) for module in graph.modules}


def test_the_cycle_search_finds_a_cycle_and_only_it():
    imports = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"e"}, "e": set(), "f": {"f"}}
    assert import_cycles(imports) == [["a", "b", "c"]]


def test_no_module_imports_itself_through_others():
    imports = package_imports()
    assert len(imports) > 90  # the whole package was read
    assert import_cycles(imports) == []


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """import-linter on the package under ``root`` with this repository's contract."""
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", str(REPO / "pyproject.toml")], cwd=root, text=True,
                          capture_output=True, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)}, timeout=300)


def test_the_layers_contract_is_kept():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 1 kept, 0 broken." in result.stdout


@pytest.mark.slow
def test_the_layers_contract_refuses_an_upward_import(tmp_path: Path):
    shutil.copytree(REPO / "mammoth", tmp_path / "mammoth", ignore=shutil.ignore_patterns("__pycache__"))
    labels = tmp_path / "mammoth" / "datasets" / "labels.py"
    labels.write_text(labels.read_text() + "\n\ndef _late():\n    from mammoth.engine import loop  # an upward import\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1
    assert "mammoth.datasets is not allowed to import mammoth.engine" in result.stdout
    assert "mammoth.datasets.labels -> mammoth.engine.loop" in result.stdout
