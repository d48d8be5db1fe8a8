"""The pre-flight composes a single run's config once and resolves it once (issue 13: the run then
resolves it once more, and Hydra composes it for the run); a sweep's argument checks compose nothing."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mammoth.__main__ import hydra_main
from mammoth.app.preflight import prepare_arguments


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Calls of Hydra's composition, of resolve_run and of Registry.resolve while the test runs."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    import mammoth.app.run_spec as run_spec
    from mammoth.config.registry import Registry

    counted: Counter = Counter()

    def counting(owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counted[label] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapper)

    counting(ConfigLoaderImpl, "load_configuration", "compositions")
    counting(ConfigLoaderImpl, "load_sweep_config", "job compositions")
    counting(run_spec, "resolve_run", "resolve_run")
    counting(Registry, "resolve", "Registry.resolve")
    return counted


def test_a_single_run_is_composed_once_and_each_option_resolved_once(counts: Counter, workdir: Path):
    checked = prepare_arguments([f"hydra.run.dir={workdir / 'run'}", "model=er", "model.buffer_size=50"], hydra_main)
    assert not checked.multirun
    assert counts == {"compositions": 1, "resolve_run": 1, "Registry.resolve": 3}  # dataset, backbone, model


def test_a_sweeps_arguments_are_checked_without_composing_a_job(counts: Counter, workdir: Path):
    checked = prepare_arguments(["-m", "model=er,der", "model.buffer_size=50", f"hydra.sweep.dir={workdir / 'sweep'}"],
                                hydra_main)
    # every swept method has the argument; the sweep's own config (with the default sgd) lacks it
    assert checked.multirun and "++model.buffer_size=50" in checked.args
    # the sweep's config, then each of its two jobs for the safety gate (each load_sweep_config composes once)
    assert counts == {"compositions": 3, "job compositions": 2}
