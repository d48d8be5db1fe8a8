"""The run-wide config schema, stored in Hydra's ConfigStore.

``conf/config.yaml`` (the primary config) extends it, so every run setting is typed: ``seed=abc``
fails at composition. The ``backbone``, ``model`` and ``dataset`` options are typed configs that
their registries store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import MISSING

from hydra.core.config_store import ConfigStore


#: ConfigStore name of the run schema that conf/config.yaml extends.
RUN_SCHEMA = "mammoth_schema"


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
    #: class_il.average, or domain_il.average on a domain-IL dataset (mammoth.runner.check_optimized_metric).
    optimized_metric: Optional[str] = None
    #: The selected experiment loggers, ``{label: {name: ..., options}}`` (conf/logger/); None = none.
    logger: Any = None


def store_schemas() -> None:
    """Put the run schema in Hydra's ConfigStore (idempotent); the backbone, model and dataset
    options are stored by their registries.

    Other Hydra apps reach them through the ``hydra_plugins/mammoth_searchpath`` plugins that
    Hydra discovers by itself.
    """
    ConfigStore.instance().store(name=RUN_SCHEMA, node=RunConfig, provider="mammoth")


store_schemas()
