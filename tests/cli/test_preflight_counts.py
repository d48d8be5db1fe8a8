"""A composed config is checked once per process (issue 23). ``python -m mammoth``'s pre-flight
composes a single run's config once, walks the safety gate over it and resolves it; the run in
the same process uses what it resolved. In a sweep the pre-flight walks the gate over the sweep's
config and each job's, and each job resolves its own config once. ``mammoth.run(cfg)`` called
from Python (no pre-flight) checks itself. Hydra's own compositions (``hydra.main``'s mode query,
its run or sweep, and its basic sweeper composing each job twice) are Hydra's."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from mammoth.__main__ import hydra_main, main
from mammoth.app.checked import CheckedConfigs
from mammoth.app.preflight import prepare_arguments

QUICK = ["device=cpu", "dataset.n_epochs=1", "stop_after_task=1", "threads=1"]


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Calls of Hydra's composition, of the safety gate, of resolve_run and of Registry.resolve while the test runs."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    import mammoth.app.cli  # noqa: F401  imported first: the names it and the modules below import are the originals
    import mammoth.app.run_spec as run_spec
    import mammoth.app.runner  # noqa: F401
    import mammoth.app.safety as safety
    from mammoth.config.registry import Registry

    counted: Counter = Counter()

    def counting(owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counted[label] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapper)
        if not isinstance(owner, type):  # a function: also where a module imported it by name
            for module in [module for key, module in sys.modules.items() if key.startswith("mammoth.")]:
                if getattr(module, name, None) is original:
                    monkeypatch.setattr(module, name, wrapper)

    counting(ConfigLoaderImpl, "load_configuration", "compositions")
    counting(ConfigLoaderImpl, "load_sweep_config", "job compositions")
    counting(safety, "check_config_safety", "gate walks")
    counting(run_spec, "resolve_run", "resolve_run")
    counting(Registry, "resolve", "Registry.resolve")
    return counted


def run_main(args: list[str], workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``python -m mammoth ARGS`` in this process, in ``workdir``; it must succeed."""
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(sys, "argv", ["mammoth", *args])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    main()


def test_the_pre_flight_composes_a_single_run_once_and_resolves_it_once(counts: Counter, workdir: Path):
    checked = prepare_arguments([f"hydra.run.dir={workdir / 'run'}", "model=er", "model.buffer_size=50"], hydra_main)
    assert not checked.multirun
    assert counts == {"compositions": 1, "gate walks": 1, "resolve_run": 1, "Registry.resolve": 3}  # dataset, backbone, model
    [config] = checked.checked.configs
    assert config.spec is not None and config.spec.model.name == "er" and config.spec.model.values["buffer_size"] == 50
    assert config.key["hydra"]["run"]["dir"] == str(workdir / "run")  # as Hydra composes it with the pinning override


def test_a_sweeps_arguments_are_checked_without_composing_a_job_twice(counts: Counter, workdir: Path):
    checked = prepare_arguments(["-m", "model=er,der", "model.buffer_size=50", f"hydra.sweep.dir={workdir / 'sweep'}"],
                                hydra_main)
    # every swept method has the argument; the sweep's own config (with the default sgd) lacks it
    assert checked.multirun and "++model.buffer_size=50" in checked.args
    # the sweep's config, then each of its two jobs for the safety gate (each load_sweep_config composes once)
    assert counts == {"compositions": 3, "job compositions": 2, "gate walks": 3}
    assert [config.key["model"]["_target_"].rsplit(".", 1)[-1] for config in checked.checked.configs] == ["ER", "DER"]
    assert all(config.spec is None for config in checked.checked.configs)  # each job resolves its own


def test_python_m_mammoth_checks_a_single_run_once(counts: Counter, workdir: Path, monkeypatch: pytest.MonkeyPatch):
    run_main([*QUICK, "model=er", "model.buffer_size=50", f"hydra.run.dir={workdir / 'run'}"], workdir, monkeypatch)
    # before issue 23: 2 gate walks, 2 resolve_run, 6 Registry.resolve (the run checked it again)
    # compositions: the pre-flight's, then hydra.main's two (its mode query and the run's)
    assert counts == {"compositions": 3, "gate walks": 1, "resolve_run": 1, "Registry.resolve": 3}
    assert json.loads((workdir / "run" / "job.json").read_text())["status"] == "stopped early"


def test_python_m_mammoth_walks_the_gate_once_per_sweep_job(counts: Counter, workdir: Path, monkeypatch: pytest.MonkeyPatch):
    sweep = workdir / "sweep"
    run_main(["-m", "model=er,der", "model.buffer_size=50", *QUICK, f"hydra.sweep.dir={sweep}"], workdir, monkeypatch)
    # before issue 23: 5 gate walks (the sweep's, each job's in the pre-flight, each job's again in its run)
    # job compositions: the pre-flight's 2, then Hydra's basic sweeper composes each job twice (it
    # checks the batch, then launches it); each load_sweep_config composes once more
    assert counts == {"compositions": 9, "job compositions": 6, "gate walks": 3, "resolve_run": 2, "Registry.resolve": 6}
    assert [json.loads((sweep / job / "job.json").read_text())["status"] for job in ("0", "1")] == ["stopped early"] * 2


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The RunSpecs the runner is asked to run (nothing is trained)."""
    import mammoth.app.runner as runner

    started: list[Any] = []
    monkeypatch.setattr(runner, "run_resolved", lambda spec, job: started.append(spec) or 0.0)
    return started


def pre_flight(workdir: Path, *args: str) -> tuple[Any, Any]:
    """The pre-flight's checked command line for a single run, and its config as Hydra composes it for the run."""
    command_line = prepare_arguments([f"hydra.run.dir={workdir / 'run'}", "model=er", "model.buffer_size=50", *args],
                                     hydra_main)
    [config] = command_line.checked.configs
    hydra = dict(config.key["hydra"], mode="RUN")
    hydra["runtime"] = dict(hydra["runtime"], output_dir=str(workdir / "run"))
    hydra["job"] = dict(hydra["job"], id="0")
    hydra["overrides"] = dict(hydra["overrides"], hydra=[*hydra["overrides"]["hydra"], f"hydra.run.dir='{workdir / 'run'}'",
                                                         "hydra.mode=RUN"])
    return command_line, OmegaConf.create({**config.key, "hydra": hydra})


def test_the_run_uses_the_pre_flights_resolution_of_the_same_config(counts: Counter, runs: list[Any], workdir: Path):
    from mammoth.app.cli import run_job
    from mammoth.models import MODELS

    command_line, composed = pre_flight(workdir)
    counts.clear()
    assert run_job(composed, command_line.checked) == 0.0
    assert counts == {}  # no gate walk, no resolution
    [spec] = runs
    assert spec.model.entry is MODELS.get("er") and spec.model.registry is MODELS  # the built-ins', not the pre-flight's
    assert spec.model.checked_values()["buffer_size"] == 50


@pytest.mark.parametrize("change", ["model.buffer_size", "hydra.callbacks", "hydra.run.dir", "hydra.job_logging"])
def test_a_config_the_pre_flight_did_not_check_is_checked_by_the_run(counts: Counter, runs: list[Any], workdir: Path,
                                                                      change: str):
    from mammoth.app.cli import run_job

    command_line, composed = pre_flight(workdir)
    OmegaConf.update(composed, change, {"model.buffer_size": 60, "hydra.run.dir": str(workdir / "elsewhere")}.get(change, {}),
                     merge=False)
    counts.clear()
    run_job(composed, command_line.checked)
    assert counts["gate walks"] == 1 and counts["resolve_run"] == 1
    assert command_line.checked.find(composed, None) is None


def test_mammoth_run_from_python_checks_itself(counts: Counter, runs: list[Any], workdir: Path):
    import mammoth
    from composing import compose_run

    cfg = compose_run(workdir / "out", "model=er", "model.buffer_size=50")
    counts.clear()
    assert mammoth.run(cfg) == 0.0
    assert counts == {"gate walks": 1, "resolve_run": 1, "Registry.resolve": 3}
    assert runs[0].model.name == "er"


def test_an_empty_hand_over_finds_nothing(workdir: Path):
    _, composed = pre_flight(workdir)
    assert CheckedConfigs().find(composed, None) is None


def test_a_value_equal_only_after_conversion_is_another_config(workdir: Path):
    command_line, composed = pre_flight(workdir, "seed=1")
    assert command_line.checked.find(composed, None) is not None
    OmegaConf.update(composed, "seed", True, merge=False)  # 1 == True in Python
    assert command_line.checked.find(composed, None) is None
