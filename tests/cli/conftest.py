"""Helpers to run mammoth and throwaway Hydra apps in subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from warm_python import run_warm

REPO = Path(__file__).resolve().parents[2]


def run_python(args: list[str], cwd: Path, timeout: int = 900, python: str = sys.executable,
               extra_env: dict[str, str] | None = None, warm: bool = False) -> subprocess.CompletedProcess:
    """Run ``python ARGS`` in ``cwd`` (with ``extra_env`` set); return the completed process (text
    output). ``cwd`` is on ``PYTHONPATH`` (a test's own modules), then the checkout under test (its
    ``mammoth``, also when the environment's editable install points at another checkout).
    ``warm``: forked from a process that has imported torch, Hydra and mammoth
    (``tests/warm_python.py``), for tests of what a run does, not of what it imports."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("HYDRA_")}
    # the working directory first (an app's own modules); under this interpreter, also the
    # checkout under test (a git worktree not installed) and the PYTHONPATH the tests run with
    inherited = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])] if python == sys.executable else []
    env["PYTHONPATH"] = os.pathsep.join([str(cwd), *inherited])
    env.update(extra_env or {})
    if warm and python == sys.executable:
        return run_warm(args, cwd, env, timeout)
    return subprocess.run([python, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def run_warm_python(args: list[str], cwd: Path, **options) -> subprocess.CompletedProcess:
    """:func:`run_python` forked from the warm interpreter: for tests of what a command does, not of
    what it imports or which ``mammoth`` it finds."""
    return run_python(args, cwd, warm=True, **options)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A fresh working directory far from the repository."""
    return tmp_path
