"""Hydra's job facts are read in one module (mammoth/config/hydra_job.py), once per run at the entry
of ``mammoth.run``, and handed down: the run directory, the title, the resume command and the
recorded config come from the facts the run was given, not from Hydra's singleton deep inside."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

import mammoth
import mammoth.config.hydra_job as hydra_job
import mammoth.config.user_paths as user_paths
from composing import compose_mammoth
from log_records import mammoth_log_records
from mammoth.app.job import job_overrides, output_directory, run_title
from mammoth.app.resume import resume_command, resumes
from mammoth.config.hydra_job import JobFacts, read_job_facts

PACKAGE = Path(mammoth.__file__).resolve().parent


def hydra_config_users() -> set[str]:
    """The modules of the package that import ``HydraConfig`` or its module, or name it, by path."""
    users = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            named = (
                (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hydra.core.hydra_config"))
                or (isinstance(node, ast.Import) and any(alias.name.startswith("hydra.core.hydra_config") for alias in node.names))
                or (isinstance(node, ast.Name) and node.id == "HydraConfig")
                or (isinstance(node, ast.Attribute) and node.attr == "HydraConfig")
                or (isinstance(node, ast.Constant) and node.value == "hydra.core.hydra_config")  # importlib
            )
            if named:
                users.add(path.relative_to(PACKAGE.parent).as_posix())
    return users


def test_only_the_job_facts_module_reads_hydra_config() -> None:
    assert hydra_config_users() == {"mammoth/config/hydra_job.py"}


def job_node(tmp_path: Path, mode: RunMode = RunMode.MULTIRUN, chdir: bool = False):
    return OmegaConf.create({
        "mode": mode, "overrides": {"task": ["model.lr=0.05", "resume=true", "stop_after_task=1"]},
        "runtime": {"output_dir": str(tmp_path / "job"), "cwd": str(tmp_path)}, "job": {"chdir": chdir},
    })


def test_outside_a_hydra_job_every_fact_is_empty(tmp_path, monkeypatch) -> None:
    assert not HydraConfig.initialized()
    facts = read_job_facts()
    assert facts == JobFacts() and not facts.multirun and facts.overrides == [] and facts.output_dir is None
    assert facts.launch_directory() is None
    monkeypatch.chdir(tmp_path)
    assert output_directory(None, facts) == tmp_path and output_directory("out", facts) == Path("out")  # as given
    assert run_title("seq-digits", "er", "mnistmlp", facts) == "seq-digits · er · mnistmlp"
    assert resume_command(tmp_path, facts).endswith(f" resume=true hydra.run.dir={tmp_path}")


def test_the_facts_of_a_sweep_job_decide_its_directory_title_and_resume_command(tmp_path, monkeypatch) -> None:
    facts = JobFacts(job_node(tmp_path))
    assert facts.multirun and facts.output_dir == tmp_path / "job"
    assert job_overrides(facts) == ["model.lr=0.05"]  # without resume and stop_after_task
    assert output_directory(None, facts) == tmp_path / "job" and output_directory("sub", facts) == tmp_path / "job" / "sub"
    assert run_title("seq-digits", "er", "mnistmlp", facts) == "seq-digits · er · mnistmlp [model.lr=0.05]"
    assert run_title("seq-digits", "er", "mnistmlp", JobFacts(job_node(tmp_path, RunMode.RUN))) == "seq-digits · er · mnistmlp"
    assert resume_command(tmp_path / "job", facts).endswith(f" model.lr=0.05 resume=true hydra.run.dir={tmp_path / 'job'}")
    assert resumes(True, tmp_path / "job", facts) is False  # a sweep's job without a checkpoint starts afresh
    assert resumes(True, tmp_path / "job", JobFacts(job_node(tmp_path, RunMode.RUN))) is True
    monkeypatch.chdir(tmp_path / "job")
    assert JobFacts(job_node(tmp_path, chdir=True)).launch_directory() == str(tmp_path)
    assert JobFacts(job_node(tmp_path, chdir=False)).launch_directory() is None


def test_a_run_reads_the_job_facts_once_at_its_entry_and_uses_them(tmp_path, monkeypatch) -> None:
    """The facts handed to the run (here a sweep's job, with no Hydra job running) decide where it
    writes and the command that resumes it."""
    hydra = compose_mammoth(return_hydra_config=True).hydra
    OmegaConf.update(hydra, "mode", RunMode.MULTIRUN)
    OmegaConf.update(hydra, "runtime.output_dir", str(tmp_path / "job"))
    OmegaConf.update(hydra, "overrides.task", ["dataset.n_epochs=1", "stop_after_task=1"])
    reads = []
    monkeypatch.setattr(hydra_job, "read_job_facts", lambda: reads.append(1) or JobFacts(hydra))
    # a dataset built by the run resolves dataset.root against the launch directory on its own (a
    # dataset built directly does the same): those reads are user_paths', not the run's
    path_reads = []
    monkeypatch.setattr(user_paths, "read_job_facts", lambda: path_reads.append(1) or JobFacts(hydra))
    with mammoth_log_records() as records:
        value = mammoth.run(compose_mammoth("device=cpu", "dataset.n_epochs=1", "stop_after_task=1", "logger=[]"))
    assert value != value and reads == [1]  # stopped early: NaN; the facts read once
    assert path_reads == [1]  # dataset.root
    assert (tmp_path / "job" / "checkpoint.pt").is_file()
    lines = [record.getMessage() for record in records]
    assert any(re.search(rf"continue with: .* dataset\.n_epochs=1 resume=true hydra\.run\.dir={re.escape(str(tmp_path / 'job'))}$",
                         line) for line in lines), lines
    assert not HydraConfig.initialized()
