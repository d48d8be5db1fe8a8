"""Run directories that cannot be written are one ``Error:`` line from ``python -m mammoth``,
found before Hydra writes into them (``hydra.run.dir``) or by the run (``output_dir``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_warm_python


@pytest.mark.parametrize("run_dir", [
    "/sys/kernel/mammoth-run",  # cannot be created (sysfs refuses even root)
    "/sys/kernel",  # exists, but no file can be written in it
])
def test_an_unwritable_hydra_run_dir_is_one_line(workdir: Path, run_dir: str):
    result = run_warm_python(["-m", "mammoth", f"hydra.run.dir={run_dir}", "dataset.n_epochs=1"], workdir)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith(f"Error: hydra.run.dir={run_dir} cannot be written: ")
    assert line.endswith("; allowed: a directory mammoth can write to")


def test_an_output_dir_that_is_a_file_is_one_line(workdir: Path):
    (workdir / "run").mkdir()
    (workdir / "run" / "taken").write_text("a file")  # a relative output_dir is inside the run directory
    result = run_warm_python(["-m", "mammoth", "output_dir=taken", "dataset.n_epochs=1", "hydra.run.dir=run"], workdir)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1] == (
        f"Error: output_dir={workdir / 'run' / 'taken'} is a file, not a directory; allowed: a directory mammoth can write to")
    assert (workdir / "run" / "taken").read_text() == "a file"
