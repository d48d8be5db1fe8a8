"""A resume may change the run-control settings (mammoth.config.run_settings.RUN_CONTROL_KEYS), and
``device`` is compared as the device it resolves to."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from conftest import run_warm_python


def test_a_run_stopped_with_threads_1_and_device_auto_resumes_with_threads_2_and_device_cpu(workdir: Path):
    assert not torch.cuda.is_available()  # device=auto is the CPU here
    run_dir = workdir / "run"
    common = ["-m", "mammoth", f"hydra.run.dir={run_dir}", "dataset.n_epochs=1"]
    stopped = run_warm_python([*common, "threads=1", "stop_after_task=2"], cwd=workdir)
    assert stopped.returncode == 0, stopped.stderr
    assert not (run_dir / "results.json").exists()
    resumed = run_warm_python([*common, "threads=2", "device=cpu", "resume=true"], cwd=workdir)
    assert resumed.returncode == 0, resumed.stderr
    results = json.loads((run_dir / "results.json").read_text())
    assert len(results["class_il"]["matrix"]) == 5
    assert (results["threads"], results["device"]) == (2, "cpu")
    assert results["config"]["device"] == "cpu"
