"""Before Hydra writes anything: the run (or sweep) directory is locked and checked, so a refused run
changes nothing there, sweeps and jobs never share a directory, planted symlinks are refused, and
nothing in the working directory is imported."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mammoth.__main__ import hydra_main
from mammoth.app.preflight import prepare_arguments
from mammoth.errors import ConfigError
from mammoth.files import RunLock
from conftest import REPO, run_python


def refused(*args: str) -> str:
    with pytest.raises(ConfigError) as error:
        prepare_arguments(list(args), hydra_main)
    return str(error.value).splitlines()[0]


def listing(directory: Path) -> list[str]:
    return sorted(str(path.relative_to(directory)) for path in directory.rglob("*"))


def test_a_run_refused_by_the_lock_changes_nothing_in_the_directory(workdir: Path):
    run_dir = workdir / "run"
    run_dir.mkdir()
    with RunLock(run_dir):
        before = listing(run_dir)
        result = run_python(["-m", "mammoth", f"hydra.run.dir={run_dir}", "dataset.n_epochs=1"], workdir)
        assert listing(run_dir) == before == [".mammoth.lock"]
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: another mammoth run (pid {os.getpid()} on {socket.gethostname()}) is using {run_dir}; wait for it to end, "
        "or give this run another hydra.run.dir or output_dir"]


def test_a_second_sweep_while_one_runs_in_its_directory_is_refused_unwritten(workdir: Path):
    sweep = workdir / "sweep"
    sweep.mkdir()
    with RunLock(sweep):
        result = run_python(["-m", "mammoth", "-m", "seed=0,1", f"hydra.sweep.dir={sweep}", "dataset.n_epochs=1"], workdir)
        assert listing(sweep) == [".mammoth.lock"]
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"Error: another mammoth run (pid {os.getpid()} on {socket.gethostname()}) is using {sweep};")


def test_the_run_directory_is_resolved_once_and_pinned(workdir: Path):
    command = prepare_arguments(["dataset.n_epochs=1", f"hydra.run.dir={workdir}/runs/${{now:%H-%M-%S}}"], hydra_main)
    assert command.directory is not None and command.directory.parent == workdir / "runs"
    assert command.hydra_arguments() == ["dataset.n_epochs=1", f"hydra.run.dir={workdir}/runs/${{now:%H-%M-%S}}",
                                         f"hydra.run.dir='{command.directory}'"]
    # the pinning override joins the overrides, before options that follow them; printing a config pins nothing
    options = prepare_arguments(["-m", "seed=0,1", "--config-name", "config"], hydra_main)
    assert options.hydra_arguments() == ["-m", "seed=0,1", f"hydra.sweep.dir='{options.directory}'", "--config-name", "config"]
    assert prepare_arguments(["seed=1", "--cfg", "job"], hydra_main).directory is None


def test_a_planted_symlink_in_the_run_directory_is_refused_and_its_target_untouched(workdir: Path):
    target = workdir / "bashrc"
    target.write_text("untouched\n")
    for name in ("mammoth.log", ".hydra"):
        run_dir = workdir / f"run-{name}"
        run_dir.mkdir()
        (run_dir / name).symlink_to(target)
        line = refused(f"hydra.run.dir={run_dir}")
        assert line == (f"{run_dir / name} is a symbolic link (to {target}); mammoth does not follow links in a "
                        "run directory; allowed: a regular file or no file at that path (remove the link)")
    assert target.read_text() == "untouched\n"


def test_a_second_sweep_into_one_sweep_directory_is_refused(workdir: Path):
    sweep = workdir / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    assert refused("-m", "seed=0,1", f"hydra.sweep.dir={sweep}") == (
        f"hydra.sweep.dir={sweep} already holds a sweep (multirun.yaml); allowed: resume=true to continue that sweep, "
        "or another hydra.sweep.dir")
    assert prepare_arguments(["-m", "seed=0,1", f"hydra.sweep.dir={sweep}", "resume=true"], hydra_main).directory == sweep


def test_jobs_that_would_share_a_directory_or_leave_the_sweep_are_refused(workdir: Path):
    sweep = workdir / "sweep"
    assert refused("-m", "seed=0,1", f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=same") == (
        f"jobs 0 and 1 of the sweep would both write {sweep}/same; allowed: a hydra.sweep.subdir that differs between "
        "jobs (e.g. ${hydra.job.num} or ${hydra.job.override_dirname})")
    # a subdirectory named by a swept value: each job's is checked
    # (the safety gate resolves each job's subdirectory as Hydra will, with the job's own values)
    line = refused("-m", "+tag=b,..", f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=${tag}")
    assert line == ("hydra.sweep.subdir='..' leaves the run directory; allowed: a relative path inside it without '..' "
                    "(choose where the run directory is with hydra.run.dir / hydra.sweep.dir)")
    assert not sweep.exists()


def test_a_resume_under_other_overrides_is_refused_before_hydra_rewrites_them(workdir: Path):
    run_dir = workdir / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("- model=er\n- model.buffer_size=50\n- stop_after_task=2\n")
    line = refused(f"hydra.run.dir={run_dir}", "resume=true", "model=der", "model.buffer_size=50")
    assert line == (f"hydra.run.dir {run_dir} holds a run with other overrides (model.buffer_size=50 model=er); this one has "
                    "model.buffer_size=50 model=der; allowed: resume it with the same overrides, or start this run in another directory")
    assert (run_dir / ".hydra" / "overrides.yaml").read_text().startswith("- model=er\n")
    same = prepare_arguments([f"hydra.run.dir={run_dir}", "resume=true", "model=er", "model.buffer_size=50", "threads=1"], hydra_main)
    assert same.directory == run_dir


def test_search_path_entries_never_import_python_files_from_the_working_directory(workdir: Path):
    package = workdir / "planted"
    package.mkdir()
    (package / "__init__.py").write_text("open('IMPORTED', 'w').close()\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HYDRA_", "PYTHONPATH"))}
    result = subprocess.run([sys.executable, "-m", "mammoth", "hydra.searchpath=[pkg://planted]", "--cfg", "job"],
                            cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    assert not (workdir / "IMPORTED").exists(), result.stderr
    assert "seed: 0" in result.stdout


def test_an_optuna_search_whose_trials_would_share_a_directory_is_refused(workdir: Path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    search = ["-m", "hydra/sweeper=optuna", "model.lr=interval(0.01,0.1)", f"hydra.sweep.dir={workdir / 'search'}"]
    assert refused(*search, "hydra.sweep.subdir=trial") == (
        "hydra.sweep.subdir='trial' names one directory for every trial of the search; allowed: a subdirectory that "
        "includes ${hydra.job.num}")
    assert prepare_arguments([*search, "hydra.sweep.subdir=trial-${hydra.job.num}"], hydra_main).multirun


def test_an_interpolated_path_from_a_shared_experiment_writes_nothing_outside(workdir: Path):
    # Hydra wrote .hydra/ (output_subdir) and .hydra/, mammoth.log, job.json (sweep.subdir) outside before each refusal
    import os
    import subprocess
    import sys


    victim = workdir / "victim"
    victim.mkdir()
    (victim / "config.yaml").write_text("theirs\n")
    shared = workdir / "shared" / "experiment"
    shared.mkdir(parents=True)
    (shared / "subdir.yaml").write_text("# @package _global_\nhydra:\n  output_subdir: ${hydra:runtime.cwd}/victim\n")
    (shared / "sweep.yaml").write_text("# @package _global_\nhydra:\n  sweep:\n    subdir: ${hydra:runtime.cwd}/victim/job${hydra.job.num}\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("HYDRA_")}
    env["PYTHONPATH"] = str(REPO)
    for args in (["experiment=subdir", "hydra.run.dir=run"], ["-m", "experiment=sweep", "seed=0,1", "hydra.sweep.dir=sweep"]):
        done = subprocess.run([sys.executable, "-m", "mammoth", "--config-dir", str(workdir / "shared"), *args],
                              cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 2 and done.stderr.startswith("Error: hydra.") and "leaves the run directory" in done.stderr
    assert sorted(path.name for path in victim.rglob("*")) == ["config.yaml"]
    assert (victim / "config.yaml").read_text() == "theirs\n"
    assert not (workdir / "run").exists() and not (workdir / "sweep").exists()
