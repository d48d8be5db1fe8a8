"""The run-wide config schema of ``python -m mammoth``, stored in Hydra's ConfigStore by its app
config package (:mod:`mammoth.app.conf`), not by ``import mammoth``.

``mammoth/app/conf/config.yaml`` (the primary config) extends it, so every run setting is typed:
``seed=abc`` fails at composition. The ``backbone``, ``model`` and ``dataset`` options are typed
configs that their registries store.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Optional

from omegaconf import MISSING, OmegaConf

from mammoth.config.hydra_private import store_lazily
from mammoth.config.options import default_backbone_option, is_stored


#: ConfigStore name of the run schema that mammoth/app/conf/config.yaml extends.
RUN_SCHEMA = "mammoth_schema"

#: OmegaConf resolver that names a dataset's default backbone option; the primary config selects
#: ``backbone: ${mammoth_default_backbone:${dataset}}`` (a Hydra defaults-list interpolation).
DEFAULT_BACKBONE_RESOLVER = "mammoth_default_backbone"


#: Field metadata of a run setting that steers the run without changing its results, or only
#: chooses what it reports: a resume may change it, and it is not part of a run's configuration.
RUN_CONTROL = {"run_control": True}


@dataclass
class RunConfig:
    """Run-wide settings: seed, device, CPU threads, and the run directory's checkpointing controls."""

    backbone: Any = MISSING
    dataset: Any = MISSING
    model: Any = MISSING
    seed: int = 0
    device: str = "auto"
    #: Mixed precision of the forward passes: fp32 (none), bf16 (CPU and CUDA) or fp16 (CUDA, with
    #: gradient scaling); mammoth.engine.precision.
    precision: str = "fp32"
    #: Convolutional backbones and image batches in the channels-last memory layout.
    channels_last: bool = False
    #: Also evaluate the tasks not trained yet, and the network before the first task (forward
    #: transfer needs both); the original Mammoth's --eval_future and --enable_other_metrics.
    eval_future: bool = False
    #: The published results an experiment preset reproduces (mammoth.reporting.ledger): recorded
    #: with the run's config; read by python -m mammoth.reproduce.
    ledger: Any = None
    resume: bool = field(default=False, metadata=RUN_CONTROL)
    stop_after_task: Optional[int] = field(default=None, metadata=RUN_CONTROL)
    output_dir: Optional[str] = field(default=None, metadata=RUN_CONTROL)
    threads: Optional[int] = field(default=None, metadata=RUN_CONTROL)
    #: The backbone's forward compiled with torch.compile (the original Mammoth's --code_optimization 3;
    #: mammoth.engine.compiled): faster, the same experiment up to float rounding, so a resume may change it.
    compile: bool = field(default=False, metadata=RUN_CONTROL)
    #: What mammoth.run returns (what a sweeper optimises), ``KIND.FIELD`` of results.json; None =
    #: class_il.average, or domain_il.average on a domain-IL dataset (mammoth.reporting.optimized_metric.check_optimized_metric).
    optimized_metric: Optional[str] = field(default=None, metadata=RUN_CONTROL)
    #: The selected experiment loggers, ``{label: {name: ..., options}}`` (mammoth/app/conf/logger/); None = none.
    logger: Any = field(default=None, metadata=RUN_CONTROL)


#: The run-control settings (``resume``, ``stop_after_task``, ``output_dir``, ``threads``, ``compile``, and the
#: reporting ones ``optimized_metric``, ``logger``), in RunConfig's order: left out of the config a
#: resume compares, of the overrides a resumed run directory must share, of a sweep job's
#: ``override_dirname`` (mammoth/app/conf/config.yaml) and of a summary's configurations.
RUN_CONTROL_KEYS: tuple[str, ...] = tuple(item.name for item in fields(RunConfig) if item.metadata.get("run_control"))


def setting_names() -> list[str]:
    """Every top-level key of a mammoth config (RunConfig's fields)."""
    return [item.name for item in fields(RunConfig)]


def required_settings() -> list[str]:
    """The run settings that have a value by default (``seed``, ``device``, ...): a run needs one,
    so ``~seed`` is refused; the others default to null."""
    return [item.name for item in fields(RunConfig) if item.default not in (None, MISSING)]


def override_key(text: str) -> str:
    """The key an override sets: ``++threads=2`` -> ``threads``, ``~logger`` -> ``logger``."""
    return str(text).split("=", 1)[0].lstrip("+~")


def is_run_control_override(text: str) -> bool:
    """Whether the override ``text`` sets a run-control setting (:data:`RUN_CONTROL_KEYS`) or one of its fields."""
    return override_key(text).split(".", 1)[0] in RUN_CONTROL_KEYS


def store_app_configs() -> None:
    """Make what only mammoth's own primary config uses available (idempotent): the run schema in
    Hydra's ConfigStore and the default-backbone resolver. The backbone, model and dataset options
    are files that :mod:`mammoth.app.conf` serves (:mod:`mammoth.config.options`)."""
    if not is_stored(f"{RUN_SCHEMA}.yaml"):
        store_lazily(RUN_SCHEMA, lambda: RunConfig)
    if not OmegaConf.has_resolver(DEFAULT_BACKBONE_RESOLVER):
        OmegaConf.register_new_resolver(DEFAULT_BACKBONE_RESOLVER, default_backbone_option)
