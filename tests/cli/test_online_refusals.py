"""The online setting's bad values on the command line: one line, exit status 2, nothing run."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_warm_python


@pytest.mark.parametrize("overrides, line", [
    (["dataset.stream=online", "dataset.n_epochs=3"],
     "Error: dataset.n_epochs=3 is not allowed with dataset.stream=online for seq-digits: a stream is a single pass; "
     "allowed: 1, or leave dataset.n_epochs out"),
    (["dataset.task_free=true"],
     "Error: dataset.task_free=true is not allowed with dataset.stream=tasks; allowed: with dataset.stream=online"),
])
def test_online_settings_are_checked_before_the_run(workdir: Path, overrides: list[str], line: str) -> None:
    result = run_warm_python(["-m", "mammoth", *overrides, "hydra.run.dir=run"], workdir)
    assert result.returncode == 2 and not (workdir / "run").exists()
    assert result.stderr.strip().splitlines() == [line]
