"""A ``_target_`` refused by the safety gate says the true reason: a module in the working directory
is not importable on purpose (and how to make it importable), one found nowhere says so, one that
imports but is the wrong kind of class says that."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO

CALLBACK = """\
from hydra.experimental.callback import Callback


class MyCb(Callback):
    def on_job_start(self, config, **kwargs):
        print("MYCB RAN")
"""

NOT_IMPORTED = ("lies in the working directory, which mammoth never imports from, by design (a file that merely lies "
                "where you run is never run); make it importable: install it (pip install -e DIR) or put its "
                "directory on PYTHONPATH (PYTHONPATH=. python -m mammoth ...)")


def mammoth(workdir: Path, *args: str, pythonpath: tuple[Path, ...] = ()) -> subprocess.CompletedProcess:
    """``python -m mammoth ARGS`` in ``workdir``, with only ``pythonpath`` and the checkout on PYTHONPATH."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("HYDRA_")}
    env["PYTHONPATH"] = os.pathsep.join(map(str, (*pythonpath, REPO)))
    return subprocess.run([sys.executable, "-m", "mammoth", *args], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=600)


def test_a_callback_in_the_working_directory_is_refused_for_its_true_reason(workdir: Path):
    (workdir / "mycb.py").write_text(CALLBACK)
    refused = mammoth(workdir, "+hydra.callbacks.mine._target_=mycb.MyCb", "--cfg", "job")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"Error: hydra.callbacks.mine._target_='mycb.MyCb' is not importable: its module mycb.py {NOT_IMPORTED}; "
        "allowed: a Hydra Callback class (a subclass of hydra.experimental.callback.Callback)"]
    # what the message says works: the directory on PYTHONPATH makes it importable, and Hydra runs it
    accepted = mammoth(workdir, "+hydra.callbacks.mine._target_=mycb.MyCb", "--cfg", "job", pythonpath=(workdir,))
    assert accepted.returncode == 0, accepted.stderr
    assert "seed: 0" in accepted.stdout


def test_a_package_folder_in_the_working_directory_is_named_for_every_kind_of_target(workdir: Path):
    (workdir / "tools").mkdir()
    (workdir / "tools" / "__init__.py").write_text("class Sampler: pass\n")
    result = mammoth(workdir, "-m", "hydra/sweeper=optuna", "hydra.sweeper.sampler._target_=tools.Sampler",
                     "model.lr=interval(0.01,0.1)", "hydra.sweeper.n_trials=1", "dataset.n_epochs=1")  # refused before any trial
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: hydra.sweeper.sampler._target_='tools.Sampler' is not importable: its module tools/ {NOT_IMPORTED}; "
        "allowed: an Optuna sampler class (a subclass of optuna.samplers.BaseSampler)")
    (workdir / "conf" / "backbone").mkdir(parents=True)
    (workdir / "conf" / "backbone" / "mine.yaml").write_text("_target_: tools.Sampler\n")
    registered = mammoth(workdir, "--config-dir", "conf", "backbone=mine", "--cfg", "job")
    assert registered.stderr.strip().splitlines()[-1].startswith(
        "Error: backbone._target_='tools.Sampler' is not a registered backbone (its module tools/ lies in the working "
        "directory, which mammoth never imports from, by design; register it from an installed package's "
        "mammoth.plugins entry point); allowed: the _target_ of one of ")


def test_a_target_found_nowhere_or_of_the_wrong_class_says_so(workdir: Path):
    missing = mammoth(workdir, "hydra.launcher._target_=nowhere.Launcher", "--cfg", "job")
    assert missing.stderr.strip().splitlines()[-1] == (
        "Error: hydra.launcher._target_='nowhere.Launcher' is not importable (ModuleNotFoundError: No module named "
        "'nowhere'; installed packages and PYTHONPATH are searched); allowed: a Hydra Launcher class (a subclass of "
        "hydra.plugins.launcher.Launcher)")
    wrong = mammoth(workdir, "+hydra.callbacks.mine._target_=collections.OrderedDict", "--cfg", "job")
    assert wrong.stderr.strip().splitlines()[-1] == (
        "Error: hydra.callbacks.mine._target_='collections.OrderedDict' is not a Hydra Callback class (a subclass of "
        "hydra.experimental.callback.Callback); allowed: a Hydra Callback class (a subclass of "
        "hydra.experimental.callback.Callback)")
