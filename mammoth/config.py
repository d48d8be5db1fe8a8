"""The run-wide config schema and the schemas of the YAML config groups, stored in Hydra's ConfigStore.

``conf/config.yaml`` (the primary config) and ``conf/dataset/*.yaml`` extend these schemas, so
every setting is typed: ``seed=abc`` or ``dataset.batch_size=x`` fail at composition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import MISSING

from hydra.core.config_store import ConfigStore

from mammoth.datasets.base import DatasetConfig

#: ConfigStore names of the schemas that conf/ files extend.
RUN_SCHEMA = "mammoth_schema"
DATASET_SCHEMA = "base_dataset"


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
    """Put the run and dataset schemas in Hydra's ConfigStore (idempotent).

    Other Hydra apps reach them, and the backbone and model configs, through the
    ``hydra_plugins/mammoth_searchpath`` plugins that Hydra discovers by itself.
    """
    store = ConfigStore.instance()
    store.store(name=RUN_SCHEMA, node=RunConfig, provider="mammoth")
    store.store(group="dataset", name=DATASET_SCHEMA, node=DatasetConfig, provider="mammoth")


store_schemas()
