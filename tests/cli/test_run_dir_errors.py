"""Run directories that cannot be written are one ``Error:`` line from ``python -m mammoth``,
whether Hydra (``hydra.run.dir``) or mammoth (``output_dir``) finds out."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_python


@pytest.mark.parametrize(("run_dir", "path"), [
    ("/sys/kernel/mammoth-run", "/sys/kernel/mammoth-run"),  # cannot be created (sysfs refuses even root)
    ("/sys/kernel", "/sys/kernel/mammoth.log"),  # exists, but no file can be written in it
])
def test_an_unwritable_hydra_run_dir_is_one_line(workdir: Path, run_dir: str, path: str):
    result = run_python(["-m", "mammoth", f"hydra.run.dir={run_dir}", "dataset.n_epochs=1"], workdir)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith(f"Error: cannot write {path}: ")
    assert line.endswith("; allowed: a hydra.run.dir (or output_dir) mammoth can write to")


def test_an_output_dir_that_is_a_file_is_one_line(workdir: Path):
    (workdir / "taken").write_text("a file")
    result = run_python(["-m", "mammoth", "output_dir=taken", "dataset.n_epochs=1", "hydra.run.dir=run"], workdir)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1] == "Error: output_dir=taken is a file, not a directory; allowed: a directory mammoth can write to"
