"""One resolution of a composed config into a checked, frozen run specification.

:func:`resolve_run` is the one place a composed mammoth config is checked: the pre-flight of
``python -m mammoth`` (:mod:`mammoth.app.preflight`) and :func:`mammoth.run` call it on the
same config, and the run builds from what it returns, so each registry option is resolved once
and each key checked once:

- every top-level key is a run setting (``+seeed=3`` is refused with the closest one);
- ``dataset``, ``backbone`` and ``model`` name registered options (by their ``_target_``), have
  only their arguments (the schemas are closed, so an unknown key reaches this check only when
  added on purpose with ``++``) and a value for every required one (all missing ones named at
  once; the data fills a backbone's ``num_classes`` and ``input_shape``);
- each given argument's value has its type and is in its allowed set (``backbone.depth=19`` is
  refused here, before anything is built; the data's ``num_classes`` and ``input_shape`` are
  checked when the run fills them);
- the dataset's tasks can be made: ``dataset.n_tasks``, ``dataset.base_classes`` and
  ``dataset.increment`` split its classes (:func:`mammoth.config.task_split.task_sizes`; a
  benchmark that counts its classes in its files is checked for the rest when it is built);
- ``seed`` fits torch's generators and ``threads`` this machine's CPUs.

Checks that need the built objects (``model.lr`` > 0, a buffer no larger than the data) run when
the run builds each one.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from omegaconf import DictConfig, OmegaConf

from mammoth.config.interpolations import UNKNOWN, raw_lookup, resolvers_used
from mammoth.config.run_settings import RUN_CONTROL_KEYS, setting_names
from mammoth.config.manifest import dataset_task_facts as benchmark_task_facts
from mammoth.config.options import dataset_task_facts
from mammoth.config.schema import DATA_FILLED_ARGUMENTS, is_missing
from mammoth.config.stream import check_stream
from mammoth.config.task_split import task_sizes
from mammoth.config.value_checks import check_precision_name, check_threads
from mammoth.errors import ConfigError, unknown_name_message


@dataclass(frozen=True)
class ResolvedOption:
    """A registry entry and the values its config gives (unset ones are ``???``), known and complete."""

    registry: Any
    entry: Any
    values: Mapping[str, Any]

    @property
    def name(self) -> str:
        """The option's registered name."""
        return self.entry.name

    def checked_values(self, **filled: Any) -> dict[str, Any]:
        """The arguments converted to their types and checked (``filled`` added first); a bad one
        raises the registry's error naming ``group.argument``."""
        return self.registry.convert_values(self.entry, {**self.values, **filled})


@dataclass(frozen=True)
class RunSpec:
    """A composed config, resolved and checked once: what :func:`mammoth.run` builds and runs.

    ``dataset`` is None for a dataset config that names its benchmark by ``name`` (no ``_target_``;
    ``dataset_config`` holds it), ``backbone`` None when the dataset's default backbone is used.
    ``config`` is the plain resolved config as results.json, the checkpoint and the loggers record
    it: a value that reads the environment (``${oc.env:...}``) is kept as written
    (:func:`recorded_config`), so a secret passed that way is never written; ``loggers`` (resolved)
    is what the run uses. ``comparable`` is the part that a resume must repeat (without the
    run-control settings).
    """

    dataset: ResolvedOption | None
    backbone: ResolvedOption | None
    model: ResolvedOption
    seed: int
    device: str
    threads: int | None
    resume: bool
    stop_after_task: int | None
    output_dir: str | None
    optimized_metric: str | None
    loggers: Mapping[str, Any] | None
    config: Mapping[str, Any]
    dataset_config: Any = None
    eval_future: bool = False
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False

    @property
    def comparable(self) -> dict[str, Any]:
        """``config`` without the run-control settings (:func:`comparable_config`)."""
        return comparable_config(self.config)


def comparable_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A plain config without the run-control settings: what a resumed run must share with its checkpoint."""
    return {key: value for key, value in config.items() if key not in RUN_CONTROL_KEYS}


def resolve_run(cfg: DictConfig, registries: Mapping[str, Any] | None = None, hydra: Any = None) -> RunSpec:
    """``cfg`` (a composed mammoth config) checked as the module docstring says and resolved into a
    :class:`RunSpec`. Raises a MammothError naming the first bad value. ``hydra``: the job's
    ``hydra`` node (``JobFacts.hydra``), read where ``cfg`` has none.

    ``registries`` (``{"backbone": ..., "dataset": ..., "model": ...}``) are those the options are
    resolved against; None: the registries of the built-ins (which imports torch and them). The
    pre-flight checks with :func:`mammoth.config.options.served_registry`'s, which hold the same
    entries without torch: the same checks, the same messages, nothing built."""
    if registries is None:
        registries = builtin_registries()
    check_settings(cfg)
    dataset = _resolve_dataset(cfg, registries["dataset"])
    backbone = _resolve_option(registries["backbone"], cfg, skip=DATA_FILLED_ARGUMENTS) if is_set(cfg, "backbone") else None
    if not is_set(cfg, "model"):
        raise ConfigError("no model selected; choose one with model=NAME")
    model = _resolve_option(registries["model"], cfg)
    _resolve_regularizer(registries.get("model/regularizer"), model.values.get("regularizer"))
    resolved = _plain(cfg)
    config = recorded_config(cfg, resolved, hydra)
    return RunSpec(
        dataset=dataset, backbone=backbone, model=model, seed=check_seed(cfg.get("seed", 0)),
        device=str(cfg.get("device", "auto")), threads=check_threads(cfg.get("threads")),
        resume=bool(cfg.get("resume", False)), stop_after_task=cfg.get("stop_after_task"),
        output_dir=cfg.get("output_dir"), optimized_metric=cfg.get("optimized_metric"),
        loggers=resolved.get("logger"), config=config, dataset_config=None if dataset else cfg.dataset,
        eval_future=bool(cfg.get("eval_future", False)),
        precision=check_precision_name(str(cfg.get("precision", "fp32"))),
        channels_last=bool(cfg.get("channels_last", False)), compile=bool(cfg.get("compile", False)),
    )


def with_registries(spec: RunSpec, registries: Mapping[str, Any] | None = None) -> RunSpec | None:
    """``spec``, resolved against other registries (the pre-flight's, which build nothing), with
    each option's entry from ``registries`` (None: the built-ins'), found by its ``_target_`` as
    :func:`resolve_run` finds it; None when one of them has no entry of that ``_target_``."""
    if registries is None:
        registries = builtin_registries()
    options = {}
    for field in ("dataset", "backbone", "model"):
        option = getattr(spec, field)
        if option is None:
            continue
        registry = registries[option.registry.group]
        entry = registry.find_by_target(option.entry.target_path)
        if entry is None:
            return None
        options[field] = ResolvedOption(registry, entry, option.values)
    return dataclasses.replace(spec, **options)


def builtin_registries() -> dict[str, Any]:
    """The backbone, dataset, model and regulariser registries (importing torch and the built-ins)."""
    from mammoth.backbones import BACKBONES  # lazy: imports torch, kept off the compose path
    from mammoth.datasets import DATASETS  # lazy: imports torch, kept off the compose path
    from mammoth.models import MODELS  # lazy: imports torch, kept off the compose path
    from mammoth.models.regularizers import REGULARIZERS  # lazy: imports torch, kept off the compose path

    return {"backbone": BACKBONES, "dataset": DATASETS, "model": MODELS, "model/regularizer": REGULARIZERS}


def is_set(cfg: DictConfig, key: str) -> bool:
    """Whether ``cfg`` has ``key`` set to something other than ``???`` or null."""
    return key in cfg and not OmegaConf.is_missing(cfg, key) and cfg[key] is not None


def check_settings(cfg: DictConfig) -> None:
    """Every top-level key is a run setting (``+seeed=3`` is refused with the closest one)."""
    allowed = setting_names()
    for key in cfg:
        if key != "hydra" and key not in allowed:
            raise ConfigError(unknown_setting_message(key, allowed))


def unknown_setting_message(key: str, allowed: list[str]) -> str:
    """``unknown setting 'seeed'; allowed: ... (did you mean 'seed'?)`` and where arguments go."""
    return (f"{unknown_name_message('setting', key, allowed)}; "
            "a backbone, model or dataset argument goes under backbone., model. or dataset.")


def check_seed(seed: Any) -> int:
    """``seed`` if torch's generators take it as it is: an integer in 0 .. 2**64 - 1."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ConfigError(f"seed={seed!r} is outside 64 bits; allowed: an integer from 0 to {2**64 - 1}")
    return seed


def _resolve_option(registry: Any, cfg: DictConfig, skip: tuple[str, ...] = ()) -> ResolvedOption:
    """The option of ``registry.group`` in ``cfg``: registered, only its arguments, none missing (but ``skip``)."""
    entry, values = registry.resolve(cfg[registry.group])
    registry.check_known_arguments(entry, values)
    registry.check_required(entry, values, skip=skip)
    registry.convert_values(dataclasses.replace(entry, arguments=tuple(
        argument for argument in entry.arguments if argument.name not in skip)), values)
    return ResolvedOption(registry, entry, values)


def _resolve_regularizer(registry: Any, config: Any) -> None:
    """The ``model.regularizer`` node (``+model/regularizer=NAME``), when set: registered, only its
    arguments, its values of their types (the method builds it from the node)."""
    if config is None or is_missing(config):
        return
    if registry is None:  # registries given without the regularisers' (a caller of before they existed)
        registry = builtin_registries()["model/regularizer"]
    entry, values = registry.resolve(config)
    registry.check_values(entry, values)


def _resolve_dataset(cfg: DictConfig, registry: Any) -> ResolvedOption | None:
    """The dataset option (None for a config that names its benchmark by ``name``: it is checked
    against the benchmark's settings and built from the config)."""
    if not is_set(cfg, "dataset"):
        raise ConfigError("no dataset selected; choose one with dataset=NAME")
    if "_target_" in cfg.dataset:
        option = _resolve_option(registry, cfg)
        check_task_split(option.entry.name, dataset_task_facts(option.entry), option.values)
        default_epochs = next((argument.default for argument in option.entry.arguments if argument.name == "n_epochs"), None)
        check_stream(option.entry.name, option.values, default_epochs if isinstance(default_epochs, int) else None)
        return option
    from mammoth.datasets import DatasetConfig, get_dataset_class  # lazy: imports torch, kept off the compose path

    if not is_set(cfg.dataset, "name"):
        raise ConfigError("dataset.name is missing; a dataset config needs the name of a registered benchmark")
    benchmark = get_dataset_class(cfg.dataset.name)
    allowed = [field.name for field in dataclasses.fields(DatasetConfig)]
    for key in cfg.dataset:
        if key not in allowed:
            raise ConfigError(
                f"unknown dataset setting {key!r} (dataset.{key}); allowed: {', '.join(allowed)}"
            )
    values = OmegaConf.to_container(cfg.dataset, resolve=True)
    check_task_split(benchmark.name, benchmark_task_facts(benchmark), values)
    check_stream(benchmark.name, values, benchmark.default_n_epochs)
    return None


def check_task_split(name: str, facts: Mapping[str, Any], values: Mapping[str, Any]) -> None:
    """Refuse, in one line naming the numbers, a ``dataset.n_tasks`` / ``base_classes`` /
    ``increment`` that cannot split benchmark ``name``'s classes (``facts``: its setting, classes
    and default number of tasks, :func:`mammoth.config.options.dataset_task_facts`)."""
    task_sizes(name, facts["setting"], facts["classes"], facts["default_n_tasks"],
               *(values.get(key) for key in ("n_tasks", "base_classes", "increment")), error_type=ConfigError)


def _plain(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain containers, interpolations resolved, Hydra's own node left out."""
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"]), resolve=True)


#: Resolvers whose value a record keeps as written: ``oc.env`` reads the process's environment
#: (where secrets are passed); UNKNOWN: a resolver whose name is itself interpolated.
UNRECORDED_RESOLVERS = frozenset(("oc.env",))


def recorded_config(cfg: DictConfig, resolved: dict[str, Any], hydra: Any = None) -> dict[str, Any]:
    """``resolved`` (the plain resolved config of ``cfg``) with each value that reads the
    environment, directly or through the keys it references (``data-${oc.env:SECRET}``,
    ``${dataset.root}`` when that reads it), replaced by the text it was written as: the run uses
    the value, what it records does not hold it (as Hydra's ``.hydra/config.yaml``). References to
    ``hydra.*`` are looked up in ``cfg``'s ``hydra`` node, else in ``hydra`` (the job's)."""
    raw = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"]), resolve=False)
    hydra = cfg.get("hydra") if "hydra" in cfg else hydra
    lookup = raw_lookup({**raw, "hydra": OmegaConf.to_container(hydra, resolve=False) if hydra is not None else {}})
    recorded = copy.deepcopy(resolved)
    for path, text in _interpolations(raw, ()):
        if resolvers_used(text, path, lookup) & (UNRECORDED_RESOLVERS | {UNKNOWN}):
            _set_at(recorded, path, text)
    return recorded


def _interpolations(node: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], str]]:
    """Every (path, text) of a raw config tree whose text holds an interpolation."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _interpolations(value, (*path, str(key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _interpolations(value, (*path, str(index)))
    elif isinstance(node, str) and "${" in node:
        yield path, node


def _set_at(tree: Any, path: tuple[str, ...], value: Any) -> None:
    """Set ``value`` at ``path`` of a plain tree of dicts and lists."""
    for part in path[:-1]:
        tree = tree[int(part)] if isinstance(tree, list) else tree[part]
    if isinstance(tree, list):
        tree[int(path[-1])] = value
    else:
        tree[path[-1]] = value
