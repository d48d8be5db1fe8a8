"""The documentation site (docs/: MyST pages and the API reference autodoc makes) builds with Sphinx
with warnings as errors, as in CI, and every page is in the index's table of contents."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from docs_pages import REPO, page

PAGES = sorted(path.stem for path in (REPO / "docs").glob("*.md"))


def test_the_docs_build_with_warnings_as_errors(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("HYDRA_")}
    # autodoc imports this checkout's mammoth, whatever is installed
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", str(REPO / "docs"), str(tmp_path), "-q"]
    process = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stderr[-5000:]
    assert process.stderr == ""  # -q: only warnings and errors would be printed
    assert sorted(path.stem for path in tmp_path.glob("*.html") if path.stem not in ("genindex", "search", "py-modindex")) \
        == PAGES
    api = (tmp_path / "api.html").read_text()
    # autodoc documented the public functions and classes from their docstrings
    for name in ("mammoth.backbones.registry.register_backbone", "mammoth.models.base.ContinualModel",
                 "mammoth.reporting.metrics.forgetting_chaudhry", "mammoth.engine.context.TrainingContext"):
        assert f'id="{name}"' in api, name
    assert "Chaudhry" in api  # a docstring's own words
    backbones = (tmp_path / "backbones.html").read_text()
    assert "token interface" in backbones and "<table" in backbones  # MyST rendered the moved markdown


def test_every_page_is_in_the_table_of_contents() -> None:
    toctree = re.search(r"```\{toctree\}\n(.*?)```", page("index.md"), re.S)[1]
    entries = [line.strip() for line in toctree.splitlines() if line.strip() and not line.startswith(":")]
    assert sorted(entries) == sorted(set(PAGES) - {"index"}) and len(entries) == len(set(entries))


#: Files of the original Mammoth that the pages name (not ours).
ORIGINAL_FILES = {"scripts/reproduce.json"}


def named_paths() -> set[str]:
    """Every ``mammoth/...``, ``scripts/...`` and ``tests/...`` path the README and the pages name,
    ``{a,b}`` expanded."""
    from docs_pages import documents

    paths = set()
    for text in documents().values():
        for path in re.findall(r"(?<![\w/.-])((?:mammoth|scripts|tests)/[\w./{},*-]*)", text):
            path = path.rstrip(".,")
            braces = re.fullmatch(r"(.*)\{([\w,]+)\}(.*)", path)
            paths.update(braces[1] + part + braces[3] for part in braces[2].split(",")) if braces else paths.add(path)
    return paths - ORIGINAL_FILES


def test_every_path_the_documentation_names_exists() -> None:
    paths = named_paths()
    assert {"mammoth/app/safety.py", "mammoth/app/conf/experiment/", "scripts/bench_flat.py"} <= paths
    missing = sorted(path for path in paths if not (list(REPO.glob(path)) if "*" in path else (REPO / path).exists()))
    assert missing == []
    assert all((REPO / path).is_dir() for path in paths if path.endswith("/"))


def test_the_security_page_names_the_gate_and_the_checkpoint_format_mammoth_has() -> None:
    from mammoth.engine.checkpoint import CHECKPOINT_FORMAT

    text = page("security.md")
    assert re.findall(r"a header line `format (\d+) sha256 \.\.\. size \.\.\.`", text) == [str(CHECKPOINT_FORMAT)]
    gate = re.search(r"\*\*One gate for every config that runs\*\* \(`([\w/.]+)`\)", text)[1]
    assert f"`REFUSED_ENVIRONMENT_WORDS` in `{gate}`" in " ".join(text.split())
    assert "\nREFUSED_ENVIRONMENT_WORDS = " in (REPO / gate).read_text() and "def " in (REPO / gate).read_text()
