"""Hydra's private API is used in one module only, :mod:`mammoth.config.hydra_private`: no other
module of the package imports ``hydra._internal`` (or names it in a string), touches the
ConfigStore's ``repo`` or reads ``JobReturn._return_value``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "mammoth"
#: The one module allowed to use Hydra's private API.
FRONT_DOOR = PACKAGE / "config" / "hydra_private.py"
#: Private attributes of Hydra's objects (the ConfigStore's dictionary, a failed job's exception,
#: the config loader's repository builder), by attribute or by ``getattr`` string.
PRIVATE_ATTRIBUTES = frozenset(("repo", "_return_value", "_parse_overrides_and_create_caching_repo"))
PRIVATE_MODULE = "hydra._internal"


def private_hydra_uses(source: str) -> list[tuple[int, str]]:
    """``(line, what)`` of each use of Hydra's private API in Python ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"import {alias.name}") for alias in node.names
                      if alias.name == PRIVATE_MODULE or alias.name.startswith(PRIVATE_MODULE + ".")]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module == PRIVATE_MODULE or module.startswith(PRIVATE_MODULE + ".") or \
                    (module == "hydra" and any(alias.name == "_internal" for alias in node.names)):
                found.append((node.lineno, f"from {module} import ..."))
        elif isinstance(node, ast.Attribute):
            if node.attr in PRIVATE_ATTRIBUTES:
                found.append((node.lineno, f".{node.attr}"))
            elif node.attr == "_internal" and isinstance(node.value, ast.Name) and node.value.id == "hydra":
                found.append((node.lineno, "hydra._internal"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if PRIVATE_MODULE in node.value or node.value in PRIVATE_ATTRIBUTES:
                found.append((node.lineno, repr(node.value)))
    return sorted(found)


def test_no_module_but_the_front_door_uses_hydras_private_api():
    uses = {str(path.relative_to(PACKAGE.parent)): private_hydra_uses(path.read_text())
            for path in sorted(PACKAGE.rglob("*.py")) if path != FRONT_DOOR}
    assert {path: found for path, found in uses.items() if found} == {}
    assert len(uses) > 50  # the whole package was read


def test_the_front_door_holds_every_use_that_was_spread_over_five_modules():
    found = {what for _, what in private_hydra_uses(FRONT_DOOR.read_text())}
    assert {"from hydra._internal.utils import ...", "from hydra._internal.hydra import ...",
            "from hydra._internal.core_plugins.basic_sweeper import ...", ".repo", "._return_value",
            "._parse_overrides_and_create_caching_repo"} <= found


@pytest.mark.parametrize(("planted", "what"), [
    ("from hydra._internal.utils import get_args_parser", "from hydra._internal.utils import ..."),
    ("import hydra._internal.hydra", "import hydra._internal.hydra"),
    ("from hydra import _internal", "from hydra import ..."),
    ("import hydra\nhydra._internal.utils.get_args_parser()", "hydra._internal"),
    ("from hydra.core.config_store import ConfigStore\nConfigStore.instance().repo['x.yaml'] = None", ".repo"),
    ("def status(job_return):\n    return job_return._return_value", "._return_value"),
    ("getattr(job_return, '_return_value')", "'_return_value'"),
    ("import importlib\nimportlib.import_module('hydra._internal.utils')", "'hydra._internal.utils'"),
    ("TARGET = 'hydra._internal.core_plugins.basic_sweeper.BasicSweeper'",
     "'hydra._internal.core_plugins.basic_sweeper.BasicSweeper'"),
])
def test_a_planted_use_is_found(planted: str, what: str):
    assert [found for _, found in private_hydra_uses(planted)] == [what]


def test_public_hydra_api_is_not_reported():
    source = ("from hydra.core.config_store import ConfigStore\nfrom hydra.core.utils import JobReturn\n"
              "ConfigStore.instance().store(name='x', node={})\njob_return.return_value\n"
              "ConfigStore.instance().get_type('x.yaml')\n")
    assert private_hydra_uses(source) == []
