"""The command line's ``group.argument=value`` and ``setting=value`` overrides, checked against
the options every job will compose, before Hydra composes anything.

The backbone, model and dataset schemas are closed (struct mode), so Hydra refuses a key an
option lacks. These checks say it in one line, with the option's fields and the closest one
(``backbone.deptth``: did you mean ``depth``?), and handle sweeps across options whose
arguments differ: Hydra composes a sweep's config with the primary's default options and
applies every non-swept override to it, so ``-m model=er,der model.buffer_size=200`` would fail
on the default ``sgd``. When every swept option has the argument, the override is passed on as
``++model.buffer_size=200``; when some lack it, the sweep is refused before any job starts,
naming the ``++`` form that runs it (the jobs whose option lacks the argument then fail alone).
A ``glob()`` sweep of a group is expanded against the group's options as Hydra expands it, so it
gets the same checks and rewrite as a list; a glob that matches no option is refused.

Deleting with ``~`` keeps Hydra's meaning (``~logger``: no logger) except where a run cannot do
without what it deletes: a ``backbone``, ``model`` or ``dataset`` option, or a run setting that
has a value by default (``~seed``); those are refused in one line.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType, ValueType
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from mammoth.app.run_spec import unknown_setting_message
from mammoth.config.options import SERVING_PACKAGES, served_entries, served_registry
from mammoth.config.registry import unknown_argument_message
from mammoth.config.run_settings import required_settings, setting_names
from mammoth.errors import ConfigError, closest_match

#: The config groups whose options are closed schemas from mammoth's registries.
REGISTRY_GROUPS = ("backbone", "model", "dataset")


@dataclasses.dataclass(frozen=True)
class ComposedOption:
    """One option of a group as a job composes it: its name and its fields."""

    name: str
    fields: tuple[str, ...]
    description: str


def check_argument_overrides(hydra: Any, config_name: str, repository: Any, overrides: list[str],
                             multirun: bool) -> list[str]:
    """``overrides`` checked as the module docstring says, against the options of ``repository``
    (:func:`mammoth.app.preflight.config_repository`); returns them with the non-swept
    arguments of a swept group rewritten to ``++``. Raises a ConfigError naming the first bad one."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    for override in parsed:
        if override.is_delete():
            _check_deletion(override, repository)
    choices = [override for override in parsed if _is_group_choice(override, repository)]
    composer = _Composer(hydra, config_name, parsed, choices, repository)
    multirun = multirun or any(override.is_sweep_override() for override in parsed)
    result = list(overrides)
    for override in choices:
        if override.key_or_group == REGULARIZER_GROUP:
            _check_regularized(composer, override)
    for index, override in enumerate(parsed):
        if override.type != OverrideType.CHANGE or override.is_hydra_override() or override in choices:
            continue
        group, _, rest = override.key_or_group.partition(".")
        if not rest:
            _check_setting(override)
        elif group in REGISTRY_GROUPS:
            if _check_argument(composer, override, group, rest.split(".")[0], multirun):
                result[index] = f"++{overrides[index]}"
            if group == "model" and rest.startswith("regularizer."):
                _check_regularizer_argument(composer, override, rest.split(".")[1])
    return result


#: The group of the regularisers, whose options sit under ``model.regularizer`` (:mod:`mammoth.models.regularizers`).
REGULARIZER_GROUP = "model/regularizer"


def _check_regularized(composer: "_Composer", override: Any) -> None:
    """``+model/regularizer=NAME`` only with methods that take one (a ``regularizer`` field): else one line."""
    lacking = [option for option in composer.options("model") if "regularizer" not in option.fields]
    if lacking:
        accepting = [name for name, entry in sorted(served_entries("model").items())
                     if entry.argument("regularizer") is not None]
        raise ConfigError(f"{override.input_line}: {_names('model', lacking)} takes no regularizer (only rehearsal methods "
                          f"whose every step goes through step() do); allowed: {', '.join(accepting)}")


def _check_regularizer_argument(composer: "_Composer", override: Any, argument: str) -> None:
    """``model.regularizer.ARG=...`` names an argument of every regulariser the jobs compose; one is chosen."""
    options = composer.options(REGULARIZER_GROUP)
    if not options:
        raise ConfigError(f"{override.input_line}: no regularizer is chosen; allowed: +model/regularizer=NAME before "
                          f"its arguments ({', '.join(sorted(served_entries(REGULARIZER_GROUP)))})")
    for option in options:
        if argument not in option.fields:
            raise ConfigError(unknown_argument_message("model.regularizer", option.name, argument, list(option.fields),
                                                       option.description))


def _is_group_choice(override: Any, repository: Any) -> bool:
    return (not override.is_delete() and "." not in override.key_or_group
            and repository.group_exists(override.key_or_group))


def _check_deletion(override: Any, repository: Any) -> None:
    """Refuse ``~group`` for a group every run needs, and ``~setting`` for a run setting that has
    a value by default (the run would use that value while its config records none)."""
    key = override.key_or_group
    if key in REGISTRY_GROUPS:
        options = ", ".join(sorted(repository.get_group_options(key, ObjectType.CONFIG)))
        raise ConfigError(f"{override.input_line}: every run needs a {key}, so it cannot be deleted; "
                          f"allowed: {key}=NAME to choose another ({options})")
    if key in required_settings():
        raise ConfigError(f"{override.input_line}: {key} is required, so it cannot be deleted; "
                          f"allowed: {key}=VALUE to change it")


def _check_setting(override: Any) -> None:
    """A top-level ``key=value`` without ``+`` names a run setting (the run refuses any other key)."""
    allowed = setting_names()
    if override.key_or_group not in allowed:
        raise ConfigError(f"{override.input_line}: {unknown_setting_message(override.key_or_group, allowed)}")


def _check_argument(composer: "_Composer", override: Any, group: str, argument: str, multirun: bool) -> bool:
    """Check ``group.argument=...`` against every option the jobs compose; True when the
    override must become ``++`` (a sweep's own config, composed with the default option, lacks it)."""
    options = composer.options(group)
    lacking = [option for option in options if argument not in option.fields]
    if lacking and len(lacking) == len(options):
        option = lacking[0]
        raise ConfigError(unknown_argument_message(group, option.name, argument, list(option.fields), option.description))
    if lacking:
        having = [option.name for option in options if option not in lacking]
        raise ConfigError(
            f"{override.input_line}: {_names(group, lacking)} {'has' if len(lacking) == 1 else 'have'} no "
            f"argument {argument!r} ({', '.join(having)} {'has' if len(having) == 1 else 'have'}); to sweep "
            f"{group}s whose arguments differ, use ++{override.input_line} (the jobs of "
            f"{', '.join(option.name for option in lacking)} then fail alone)"
        )
    if not multirun or override.is_sweep_override():
        return False  # a swept value is applied to each job's own config only
    sweep_option = composer.option_of(group, composer.base_choices())
    return sweep_option is not None and argument not in sweep_option.fields


def _names(group: str, options: list[ComposedOption]) -> str:
    return f"{group} {', '.join(repr(option.name) for option in options)}"


class _Composer:
    """The options each combination of swept group choices gives: from Hydra's defaults list and
    mammoth's registries, composing a job's config only for an option that is not mammoth's own
    (a user's YAML) or that the command line adds keys to (cached)."""

    def __init__(self, hydra: Any, config_name: str, parsed: list[Any], choices: list[Any], repository: Any) -> None:
        self.hydra, self.config_name, self.repository = hydra, config_name, repository
        # What decides the options: group choices, and keys added or deleted on purpose.
        self.fixed = [override.input_line for override in parsed
                      if (override.type != OverrideType.CHANGE or override.is_hydra_override())
                      and not override.is_sweep_override() and override not in choices]
        self.sweep_values = _sweep_values(choices, repository)
        self.swept = {override.get_key_element() for override in choices if override.is_sweep_override()}
        self._cache: dict[tuple[str, ...], DictConfig | None] = {}
        self._choices: dict[tuple[str, ...], dict[str, Any] | None] = {}

    def compose(self, choices: tuple[str, ...]) -> DictConfig | None:
        """The config of one job's group choices (None where Hydra cannot compose it: it says why)."""
        if choices not in self._cache:
            try:
                self._cache[choices] = self.hydra.compose_config(
                    self.config_name, [*self.fixed, *choices], run_mode=RunMode.RUN, with_log_configuration=False)
            except (HydraException, OmegaConfBaseException):
                self._cache[choices] = None
        return self._cache[choices]

    def base_choices(self) -> tuple[str, ...]:
        """The group choices a sweep's own config has: its non-swept choices (the primary's defaults for the others)."""
        return tuple(f"{key}={values[0]}" for key, values in self.sweep_values.items() if key not in self.swept)

    def known_choices(self, choices: tuple[str, ...]) -> dict[str, Any] | None:
        """Every group's option under one job's group choices, from Hydra's defaults list (no
        composition); None where Hydra cannot compute it (it says why when it composes)."""
        if choices not in self._choices:
            try:
                defaults = self.hydra.config_loader.compute_defaults_list(
                    self.config_name, [*self.fixed, *choices], RunMode.RUN)
                self._choices[choices] = dict(defaults.overrides.known_choices)
            except (HydraException, OmegaConfBaseException):
                self._choices[choices] = None
        return self._choices[choices]

    def option_of(self, group: str, choices: tuple[str, ...]) -> ComposedOption | None:
        """``group``'s option under one job's group choices: from its registry entry when Hydra
        finds mammoth's own (no composition), else from the composed config."""
        known = self.known_choices(choices)
        name = known.get(group) if known else None
        option = self.registered(group, name) if isinstance(name, str) else None
        return option if option is not None else self.option(group, self.compose(choices))

    def options(self, group: str) -> list[ComposedOption]:
        """The distinct options of ``group`` over every job (a choice of ``group`` on the command
        line decides alone; otherwise every combination of swept choices)."""
        own = {key: values for key, values in self.sweep_values.items() if key.lstrip("+") == group}
        combinations = own or self.sweep_values
        keys = list(combinations)
        found: dict[str, ComposedOption] = {}
        for values in itertools.product(*(combinations[key] for key in keys)):
            option = self.registered(group, values[0]) if own else None
            if option is None:
                fixed = {key: value[0] for key, value in self.sweep_values.items() if len(value) == 1}
                fixed.update(zip(keys, values))
                option = self.option_of(group, tuple(f"{key}={value}" for key, value in fixed.items()))
            if option is not None:
                found.setdefault(option.name, option)
        return list(found.values())

    def registered(self, group: str, name: str) -> ComposedOption | None:
        """Option ``name`` of ``group`` without composing, when Hydra finds it as mammoth serves it
        (not a user's YAML of that name) and nothing on the command line adds keys to it."""
        if any(line.lstrip("+~").startswith(f"{group}.") for line in self.fixed):
            return None
        try:
            found = self.repository.load_config(f"{group}/{name}")
        except Exception:  # noqa: BLE001 - Hydra reports what it cannot load
            return None
        if found is None or found.path not in [f"pkg://{package}" for package in SERVING_PACKAGES]:
            return None  # a user's file, not the option file mammoth serves (mammoth.config.options)
        entry = served_entries(group).get(name)
        if entry is None:
            return None
        return ComposedOption(entry.name, tuple(argument.name for argument in entry.arguments), entry.describe_arguments())

    @staticmethod
    def option(group: str, cfg: DictConfig | None) -> ComposedOption | None:
        """``group``'s option in ``cfg``, named as registered (else by Hydra's choice), with its fields."""
        if cfg is None or not isinstance(cfg.get(group), DictConfig):
            return None
        node = cfg[group]
        fields = tuple(str(key) for key in node if key != "_target_")
        entry = _registry_entry(group, node.get("_target_"))
        if entry is not None:
            return ComposedOption(entry.name, fields, entry.describe_arguments())
        name = str(cfg.hydra.runtime.choices.get(group, group)) if "hydra" in cfg else group
        return ComposedOption(name, fields, ", ".join(fields) or "(none)")


def _sweep_values(choices: list[Any], repository: Any) -> dict[str, list[str]]:
    """Each group choice's values (one for a plain choice; a glob's matches, as Hydra finds them)."""
    values = {}
    for override in choices:
        key = override.get_key_element()
        if override.value_type == ValueType.GLOB_CHOICE_SWEEP:
            values[key] = _glob_matches(override, repository)
        elif override.is_sweep_override():
            values[key] = list(override.sweep_string_iterator())
        else:
            values[key] = [override.input_line.split("=", 1)[1]]
    return values


def _glob_matches(override: Any, repository: Any) -> list[str]:
    """The options of the group that ``group=glob(...)`` sweeps, as Hydra's sweepers expand it
    (its Glob filter over the group's options); refused when it matches none."""
    group = override.key_or_group
    options = sorted(repository.get_group_options(group, ObjectType.CONFIG))
    matches = override.value().filter(options)
    if not matches:
        patterns = override.value().include
        close = next((found for found in (closest_match(pattern.replace("*", ""), options) for pattern in patterns)
                      if found), None)
        hint = f" (did you mean {close!r}?)" if close else ""
        raise ConfigError(f"{override.input_line}: matches no {group} option; allowed: a glob of "
                          f"{', '.join(options)}{hint}")
    return matches


def _registry_entry(group: str, target: Any) -> Any:
    registry = served_registry(group)  # the registered options, built-ins from their manifest (no torch)
    return registry.find_by_target(target) if isinstance(target, str) else None
