"""A Python file that lies in the folder where a mammoth command starts (a shared experiment folder
used with ``--config-dir .``) is never imported: every ``python -m mammoth...`` entry point takes the
working directory off ``sys.path`` before it imports anything Python has not loaded already."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO

#: The entry points, each with arguments that run it to its end without training.
ENTRY_POINTS = (("mammoth", "--help"), ("mammoth.summary", "."), ("mammoth.reproduce", "--list"))
#: Modules named in the issue that ran from the working directory before.
NAMED = ("hydra", "omegaconf", "logging", "argparse", "__future__", "pkgutil", "types", "runpy", "sitecustomize")


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``python ARGS`` in ``cwd`` with the repository (not ``cwd``) on PYTHONPATH."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HYDRA_", "PYTHONSAFEPATH"))}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def imported_top_level_names(cwd: Path) -> set[str]:
    """The top-level modules the entry points import (``python -X importtime``), but mammoth."""
    names: set[str] = set()
    for entry in ENTRY_POINTS:
        stderr = run([sys.executable, "-X", "importtime", "-m", *entry], cwd).stderr
        for line in stderr.splitlines():
            if line.startswith("import time:") and line.count("|") == 2:
                name = line.split("|")[2].strip().split(".")[0]
                if name.isidentifier() and name not in ("mammoth", "__main__"):
                    names.add(name)
    return names


def plant(folder: Path, names: set[str]) -> None:
    """A ``NAME.py`` for each name that writes ``MARK-NAME`` when it runs."""
    for name in names:
        (folder / f"{name}.py").write_text(f"open({str(folder / ('MARK-' + name))!r}, 'w').write('ran')\n")


def marks(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.glob("MARK-*"))


def test_no_python_file_in_the_working_directory_runs_under_any_entry_point(tmp_path: Path):
    measured = tmp_path / "measure"
    measured.mkdir()
    names = imported_top_level_names(measured)
    assert {"hydra", "omegaconf", "logging", "argparse"} <= names  # what each entry point really imports
    shared = tmp_path / "shared-experiment"
    shared.mkdir()
    plant(shared, names | set(NAMED))
    help_run, summary_run, ledger_run = (run([sys.executable, "-m", *entry], shared) for entry in ENTRY_POINTS)
    assert marks(shared) == []
    assert help_run.returncode == 0 and "mammoth" in help_run.stdout
    assert summary_run.returncode == 2 and summary_run.stderr.startswith("Error: no runs under '.'")
    assert ledger_run.returncode == 0 and ledger_run.stdout.startswith("| preset | published")


def test_importing_mammoth_as_a_library_leaves_sys_path_as_the_program_has_it(tmp_path: Path):
    code = "import sys; first = sys.path[0]; import mammoth, mammoth.app.safety; print(repr(first), repr(sys.path[0]))"
    printed = run([sys.executable, "-c", code], tmp_path).stdout.split()
    assert printed == ["''", "''"]


def test_a_mammoth_module_in_the_working_directory_is_python_s_choice_and_p_or_the_script_avoids_it(tmp_path: Path):
    # ``python -m mammoth`` looks mammoth itself up in the working directory first (Python's rule,
    # before any code of mammoth runs): docs/security.md says to use ``python -P`` or the console script.
    plant(tmp_path, {"mammoth"})
    run([sys.executable, "-m", "mammoth", "--help"], tmp_path)
    assert marks(tmp_path) == ["MARK-mammoth"]
    (tmp_path / "MARK-mammoth").unlink()
    safe = run([sys.executable, "-P", "-m", "mammoth", "--help"], tmp_path)
    assert safe.returncode == 0 and marks(tmp_path) == []
    script = shutil.which("mammoth", path=os.path.dirname(sys.executable))
    if script is not None:
        assert run([script, "--help"], tmp_path).returncode == 0 and marks(tmp_path) == []


def test_another_module_run_with_m_that_imports_mammoth_keeps_its_sys_path(tmp_path: Path):
    (tmp_path / "mytool").mkdir()
    (tmp_path / "mytool" / "__init__.py").write_text(
        "import sys\nfirst = sys.path[0]\nimport mammoth\nprint('kept' if sys.path[0] == first else 'dropped')\n")
    (tmp_path / "mytool" / "__main__.py").write_text("")
    assert run([sys.executable, "-m", "mytool"], tmp_path).stdout.split() == ["kept"]


def test_the_module_python_runs_is_read_from_its_command_line(monkeypatch):
    import mammoth

    for argv, module in ((["python", "-m", "mammoth", "x=1"], "mammoth"),
                         (["python", "-X", "importtime", "-m", "mammoth.summary"], "mammoth.summary"),
                         (["python", "-Bm", "mammoth.reproduce"], "mammoth.reproduce"),
                         (["python", "-Xdev", "-mmammoth"], "mammoth"),
                         (["python", "-W", "ignore", "--check-hash-based-pycs", "never", "-m", "mytool"], "mytool"),
                         (["python", "-c", "import mammoth", "-m"], None),
                         (["python", "script.py", "-m", "mammoth"], None)):
        monkeypatch.setattr(sys, "orig_argv", argv)
        assert mammoth._module_run_by_python() == module, argv
