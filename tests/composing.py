"""mammoth's primary config composed in-process with Hydra's compose API, as the tests use it."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_module
from omegaconf import DictConfig


def compose_mammoth(*overrides: str, return_hydra_config: bool = False) -> DictConfig:
    """``conf/config.yaml`` composed with ``overrides``, as ``python -m mammoth OVERRIDES`` composes it."""
    with initialize_config_module(config_module="mammoth.app.conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=return_hydra_config)


def compose_run(output_dir: Path, *overrides: str, seed: int = 1) -> DictConfig:
    """A CPU run's config writing into ``output_dir`` (what ``mammoth.run`` takes)."""
    return compose_mammoth(f"output_dir={output_dir}", "device=cpu", f"seed={seed}", *overrides)
