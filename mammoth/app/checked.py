"""The configs the pre-flight of ``python -m mammoth`` checked, handed to the run in the same process.

The safety gate walks every config that will run, once per process: the pre-flight
(:mod:`mammoth.app.preflight`) walks a single run's config and resolves it, or walks each job's
config of a sweep, and records each as a :class:`CheckedConfig` under its :func:`config_key`.
When Hydra composes a job's config for the run, :meth:`CheckedConfigs.find` looks its key up:
found, the run uses what the pre-flight resolved (a sweep's job resolves its own config, so that
only that job fails); not found (any value differs: an Optuna trial's sampled value, a config
file changed since the pre-flight, a job launched in another process), the run checks the
config itself, as :func:`mammoth.run` called from Python does.

The key is the whole config as written (the task's keys and Hydra's node, unresolved), without
what Hydra fills in itself when it runs the job (``hydra.runtime.output_dir``, the launcher's
``hydra.job.id``, ``hydra.mode`` and the record of the pinning overrides in
``hydra.overrides.hydra``), and with the run (or sweep) directory the pre-flight pinned, as Hydra
composes it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from omegaconf import DictConfig, OmegaConf

from mammoth.config.run_settings import override_key

if TYPE_CHECKING:
    from mammoth.app.run_spec import RunSpec

#: The Hydra keys mammoth's own overrides may pin (:meth:`mammoth.app.preflight.CommandLine.hydra_arguments`,
#: :func:`mammoth.app.launch.join_command_line`): their values are compared, not the record of the overrides.
PINNED_KEYS = ("run.dir", "sweep.dir", "sweep.subdir", "output_subdir")


def config_key(cfg: DictConfig, hydra: Any = None) -> dict[str, Any]:
    """``cfg`` (with ``hydra``, the running job's Hydra node, when ``cfg`` has none) as a plain
    unresolved tree, without the values Hydra fills in when it runs the job."""
    tree = OmegaConf.to_container(cfg, resolve=False)
    if "hydra" not in tree and hydra is not None:
        tree["hydra"] = OmegaConf.to_container(hydra, resolve=False) if OmegaConf.is_config(hydra) else copy.deepcopy(hydra)
    node = tree.get("hydra")
    if not isinstance(node, dict):
        return tree
    node.pop("mode", None)  # Hydra sets it from how it runs the job, which the pre-flight found from the same config
    for section, key in (("runtime", "output_dir"), ("job", "id")):
        if isinstance(node.get(section), dict):
            node[section].pop(key, None)
    overrides = node.get("overrides")
    if isinstance(overrides, dict) and isinstance(overrides.get("hydra"), list):
        overrides["hydra"] = [text for text in overrides["hydra"] if not _pinning(str(text))]
    return tree


def _pinning(override: str) -> bool:
    """Whether ``override`` sets a key the pre-flight pins or ``hydra.mode`` (Hydra's own record)."""
    key = override_key(override)
    return key == "hydra.mode" or key in {f"hydra.{pinned}" for pinned in PINNED_KEYS}


@dataclass(frozen=True)
class CheckedConfig:
    """A config that passed the safety gate: its :func:`config_key` and, for a single run, the
    RunSpec the pre-flight resolved it into (None: the run resolves it, once)."""

    key: dict[str, Any]
    spec: RunSpec | None = None


@dataclass(frozen=True)
class CheckedConfigs:
    """The configs one pre-flight checked."""

    configs: tuple[CheckedConfig, ...] = ()

    def add(self, cfg: DictConfig, spec: RunSpec | None = None) -> CheckedConfigs:
        """These and ``cfg`` (composed by the pre-flight, checked, ``spec`` its resolution)."""
        return CheckedConfigs((*self.configs, CheckedConfig(config_key(cfg), spec)))

    def pinned(self, pins: Mapping[str, Any]) -> CheckedConfigs:
        """These configs with Hydra keys mammoth pins on the command line (:data:`PINNED_KEYS`:
        ``run.dir``, ``sweep.dir`` ...) set to their pinned values, as Hydra composes them for the run."""
        return CheckedConfigs(tuple(CheckedConfig(_with_pins(checked.key, pins), checked.spec) for checked in self.configs))

    def find(self, cfg: DictConfig, hydra: Any) -> CheckedConfig | None:
        """The checked config equal to ``cfg`` with its running job's ``hydra`` node (every key and
        value the same, of the same type: ``1`` is not ``true``); None if none."""
        if not self.configs:
            return None
        key = strict_form(config_key(cfg, hydra))
        return next((checked for checked in self.configs if strict_form(checked.key) == key), None)


def strict_form(node: Any) -> Any:
    """A plain tree as nested tuples in which every key and value carries its type, so that two
    trees are equal only when Python's ``==`` would not have to convert anything (``1 == 1.0 == True``)."""
    if isinstance(node, dict):
        return ("dict", tuple(sorted((repr(key), strict_form(value)) for key, value in node.items())))
    if isinstance(node, list):
        return ("list", tuple(strict_form(value) for value in node))
    return (type(node).__qualname__, repr(node))


def _with_pins(key: dict[str, Any], pins: Mapping[str, Any]) -> dict[str, Any]:
    """``key`` with each pinned Hydra key (``run.dir``) set to its value."""
    tree = copy.deepcopy(key)
    for path, value in pins.items():
        node = tree.setdefault("hydra", {})
        *sections, name = path.split(".")
        for section in sections:
            node = node.setdefault(section, {})
        node[name] = value
    return tree
