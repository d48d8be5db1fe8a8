"""The run-wide config schema of ``python -m mammoth``, stored in Hydra's ConfigStore by its app
config package (:mod:`mammoth.app_conf`), not by ``import mammoth``.

``mammoth/app_conf/config.yaml`` (the primary config) extends it, so every run setting is typed:
``seed=abc`` fails at composition. The ``backbone``, ``model`` and ``dataset`` options are typed
configs that their registries store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import MISSING

from hydra.core.config_store import ConfigStore


#: ConfigStore name of the run schema that mammoth/app_conf/config.yaml extends.
RUN_SCHEMA = "mammoth_schema"

#: OmegaConf resolver that names a dataset's default backbone option; the primary config selects
#: ``backbone: ${mammoth_default_backbone:${dataset}}`` (a Hydra defaults-list interpolation).
DEFAULT_BACKBONE_RESOLVER = "mammoth_default_backbone"


@dataclass
class RunConfig:
    """Run-wide settings: seed, device, CPU threads, and the run directory's checkpointing controls."""

    backbone: Any = MISSING
    dataset: Any = MISSING
    model: Any = MISSING
    seed: int = 0
    device: str = "auto"
    resume: bool = False
    stop_after_task: Optional[int] = None
    output_dir: Optional[str] = None
    threads: Optional[int] = None
    #: What mammoth.run returns (what a sweeper optimises), ``KIND.FIELD`` of results.json; None =
    #: class_il.average, or domain_il.average on a domain-IL dataset (mammoth.engine.runner.check_optimized_metric).
    optimized_metric: Optional[str] = None
    #: The selected experiment loggers, ``{label: {name: ..., options}}`` (mammoth/app_conf/logger/); None = none.
    logger: Any = None


def store_app_configs() -> None:
    """Make what only mammoth's own primary config uses available (idempotent): the run schema in
    Hydra's ConfigStore and the default-backbone resolver. The backbone, model and dataset options
    are stored by their registries when :mod:`mammoth` is imported."""
    from omegaconf import OmegaConf

    from mammoth.datasets import default_backbone_option

    ConfigStore.instance().store(name=RUN_SCHEMA, node=RunConfig, provider="mammoth")
    if not OmegaConf.has_resolver(DEFAULT_BACKBONE_RESOLVER):
        OmegaConf.register_new_resolver(DEFAULT_BACKBONE_RESOLVER, default_backbone_option)
