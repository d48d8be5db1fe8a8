"""User paths keep their meaning with ``hydra.job.chdir=true``: a relative ``dataset.root`` or
``backbone.weights`` is taken from where the command was launched, not from the run directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from mammoth.backbones.weights import local_weights_file
from mammoth.config.user_paths import launch_path
from mammoth.datasets.mnist import SequentialMNIST

REPO = Path(__file__).resolve().parents[2]


def in_job(monkeypatch: pytest.MonkeyPatch, launched: Path, run_dir: Path, chdir: bool) -> None:
    """Stand inside a Hydra job launched in ``launched`` whose run directory is ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    node = OmegaConf.create({"hydra": {"runtime": {"cwd": str(launched), "output_dir": str(run_dir)}, "job": {"chdir": chdir}}})
    monkeypatch.setattr(HydraConfig.instance(), "cfg", node)
    monkeypatch.chdir(run_dir if chdir else launched)


def test_a_relative_path_is_taken_from_the_launch_directory_in_a_job_that_changed_directory(tmp_path, monkeypatch):
    in_job(monkeypatch, tmp_path, tmp_path / "outputs" / "run", chdir=True)
    assert launch_path("data") == os.path.join(tmp_path, "data")
    assert launch_path("../shared/data") == os.path.join(tmp_path, "../shared/data")
    assert launch_path("/abs/data") == "/abs/data" and launch_path("~/data") == "~/data"
    assert SequentialMNIST(root="data", n_epochs=1).config.root == os.path.join(tmp_path, "data")


def test_without_chdir_or_outside_hydra_a_path_is_left_as_given(tmp_path, monkeypatch):
    assert launch_path("data") == "data"  # no Hydra job
    in_job(monkeypatch, tmp_path, tmp_path / "run", chdir=False)
    assert launch_path("data") == "data" and SequentialMNIST(root="data", n_epochs=1).config.root == "data"


def test_a_weights_file_is_found_where_the_command_was_launched(tmp_path, monkeypatch):
    import torch

    torch.save({"w": torch.ones(2)}, tmp_path / "w.pt")
    in_job(monkeypatch, tmp_path, tmp_path / "run", chdir=True)
    found, data = local_weights_file("w.pt", None, "test weights")
    assert found.path == tmp_path / "w.pt" and data == (tmp_path / "w.pt").read_bytes()


def test_a_run_with_hydra_job_chdir_reads_its_data_under_the_launch_directory(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("HYDRA_")}
    env["PYTHONPATH"] = str(REPO)
    result = subprocess.run([sys.executable, "-m", "mammoth", "dataset=seq-mnist", "dataset.n_epochs=1", "hydra.job.chdir=true",
                             "hydra.run.dir=outputs/run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1
    assert (f"Error: seq-mnist: missing train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
            f"t10k-labels-idx1-ubyte in {tmp_path}/data/MNIST/raw") in result.stderr
    assert not (tmp_path / "outputs" / "run" / "data").exists()
