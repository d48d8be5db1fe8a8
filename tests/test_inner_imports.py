"""Imports inside functions only for optional or heavy dependencies, each with its reason: an
import inside a function (or a method, a lambda) ends with ``# lazy: WHY`` (a heavy dependency
kept off a light path: torch off ``python -m mammoth --help``, composing and ``import mammoth``;
torchvision off ``import mammoth.datasets``) or ``# optional: WHAT`` (a dependency mammoth does not
require: timm, quadprog, optuna ...). Every other import is at module level, where the layers
contract (tests/test_layers.py) sees it."""

from __future__ import annotations

import ast
import re
from pathlib import Path


PACKAGE = Path(__file__).resolve().parents[1] / "mammoth"
REASON = re.compile(r"#\s*(lazy|optional):\s*\S")

def unreasoned_inner_imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of each import inside a function of ``path`` without a ``# lazy:`` or
    ``# optional:`` comment on one of its lines."""
    source = path.read_text()
    lines = source.splitlines()
    found = []

    def visit(node: ast.AST, inside_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if inside_function and isinstance(child, (ast.Import, ast.ImportFrom)):
                statement = lines[child.lineno - 1:child.end_lineno]
                if not any(REASON.search(line) for line in statement):
                    module = child.names[0].name if isinstance(child, ast.Import) else "." * child.level + (child.module or "")
                    found.append((child.lineno, module))
            visit(child, inside_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(source, str(path)), False)
    return found


def package_files() -> dict[str, Path]:
    return {path.relative_to(PACKAGE.parent).as_posix(): path for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_import_inside_a_function_says_why_it_is_there() -> None:
    problems = [f"{name}:{line} imports {module}" for name, path in package_files().items() for line, module in unreasoned_inner_imports(path)]
    assert problems == [], (
        "imports inside functions without '# lazy: WHY' or '# optional: WHAT' (move them to module level, "
        "or give the reason):\n" + "\n".join(problems))


def test_a_planted_import_without_a_reason_is_found(tmp_path: Path) -> None:
    module = tmp_path / "planted.py"
    module.write_text(
        "import os\n\n\n"
        "def heavy():\n"
        "    import torch  # lazy: torch, kept off the --help path\n"
        "    from timm import create_model  # optional: timm\n"
        "    return torch, create_model\n\n\n"
        "class Box:\n"
        "    def method(self):\n"
        "        import json\n"
        "        from collections import (\n"
        "            OrderedDict,\n"
        "        )\n"
        "        return json, OrderedDict, lambda: __import__('re')\n\n\n"
        "def quoted():\n"
        "    import shutil  # only a comment, not a reason\n"
        "    from . import sibling\n"
        "    return shutil, sibling\n"
    )
    assert unreasoned_inner_imports(module) == [(12, "json"), (13, "collections"), (20, "shutil"), (21, ".")]
