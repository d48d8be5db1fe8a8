"""A registry of named, configurable callables: the one piece of global state in mammoth.

Each registration infers the callable's arguments (:mod:`mammoth.config.schema`) and emits a typed
dataclass schema (an attribute of the callable's module, ``<Name><Kind>Config``). Registering
changes nothing in Hydra: the apps that opt in (and ``python -m mammoth``) get each served
registry's entries as the options of config group ``group`` (:mod:`mammoth.config.options`), so
the user picks one with ``group=name`` and sets its arguments with ``group.arg=value``; any other
key fails where Hydra composes. Backbones
(:mod:`mammoth.backbones.registry`), CL methods (:mod:`mammoth.models.registry`), benchmarks
(:mod:`mammoth.datasets`) and loggers (:mod:`mammoth.reporting.loggers`, not stored) each own
one :class:`Registry`.

Built-ins are found without a hand-kept list: a package of them ends with
:func:`import_modules`, which imports every module of the package whose name does not start
with ``_``. Installed ``mammoth.plugins`` entry points are imported on the first lookup of any
registry (:func:`mammoth.plugins.load_plugins_once`).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import re
from typing import Any, Callable, Iterable, Mapping, TypeVar

from omegaconf import DictConfig, OmegaConf

from mammoth.config.schema import (
    Argument,
    ValueCheckError,
    check_value,
    is_missing,
    make_schema,
    schema_class_name,
    signature_arguments,
)
from mammoth.config.value_checks import exclusive_arguments_error
from mammoth.errors import MammothError, closest_match, unknown_name_message
from mammoth.plugins import load_plugins_once

T = TypeVar("T")
_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]*$")


def canonical_name(name: str) -> str:
    """Names are case-insensitive and ``_`` equals ``-``: ``ResNet_18`` -> ``resnet-18``."""
    return str(name).strip().lower().replace("_", "-")


def import_modules(package: str, path: Iterable[str]) -> list[str]:
    """Import every module of ``package`` (found on ``path``, its ``__path__``) whose name does not
    start with ``_``, so the built-ins they define register themselves; return their names, sorted.

    A new module dropped in the package is registered with no list to edit; a helper module that
    must not be imported eagerly starts with ``_``. Importing a module that registers nothing
    (``base``, ``registry``, ``utils``) is harmless: its importers load it anyway.
    """
    names = sorted(info.name for info in pkgutil.iter_modules(list(path)) if not info.name.startswith("_"))
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names


def schema_node(schema: type) -> DictConfig:
    """The typed, closed config of ``schema``: its fields keep their types and a key it does not
    have fails where Hydra composes (``backbone.deptth=34``: "Key 'deptth' is not in struct"), in
    every app and in the compose API. Hydra's ``++group.key=value`` still adds one on purpose."""
    node = OmegaConf.structured(schema)
    OmegaConf.set_struct(node, True)
    return node


def target_path(target: Callable) -> str:
    """The import path Hydra's ``_target_`` uses for ``target`` (``module.QualName``)."""
    return f"{target.__module__}.{target.__qualname__}"


def _definition_site(target: Callable) -> str:
    try:
        file = inspect.getsourcefile(target)
        line = inspect.getsourcelines(target)[1]
        return f"{target_path(target)} ({file}:{line})"
    except (OSError, TypeError):
        return target_path(target)


def unknown_argument_message(group: str, option: str, argument: str, fields: list[str], description: str) -> str:
    """``unknown argument 'deptth' for backbone 'resnet' (backbone.deptth); its arguments: ...
    (did you mean 'depth'?)``: the option's arguments, then the closest one."""
    message = f"unknown argument {argument!r} for {group} {option!r} ({group}.{argument}); its arguments: {description}"
    suggestion = closest_match(argument, fields)
    return message + (f" (did you mean {suggestion!r}?)" if suggestion else "")


#: Called with ``(group, name)`` after each registration in a registry whose entries are Hydra
#: options: :mod:`mammoth.config.options` listens once it serves them, so a new option is stored
#: before the next composition.
_REGISTRATION_LISTENERS: list[Callable[[str, str], None]] = []


def add_registration_listener(listener: Callable[[str, str], None]) -> None:
    """Call ``listener(group, name)`` after each later registration of a Hydra option (once per listener)."""
    if listener not in _REGISTRATION_LISTENERS:
        _REGISTRATION_LISTENERS.append(listener)


def _load_plugins() -> None:
    load_plugins_once()


@dataclasses.dataclass(frozen=True)
class Entry:
    """A registered callable with its inferred arguments and config schema."""

    name: str
    target: Callable
    arguments: tuple[Argument, ...]
    schema: type

    @property
    def target_path(self) -> str:
        """The ``_target_`` string of this entry's configs."""
        return target_path(self.target)

    @property
    def definition(self) -> str:
        """Where the target is defined, for error messages."""
        return _definition_site(self.target)

    def argument(self, name: str) -> Argument | None:
        """The argument called ``name``, or None."""
        return next((argument for argument in self.arguments if argument.name == name), None)

    def describe_arguments(self) -> str:
        """``depth: int = 18, width: int = 64`` for help texts and errors."""
        return ", ".join(argument.describe() for argument in self.arguments) or "(none)"


class Registry:
    """Named callables of one kind (``backbone``, ``model``) and their Hydra config group."""

    def __init__(
        self,
        kind: str,
        group: str,
        error_type: type[MammothError],
        schema_suffix: str,
        runtime_arguments: tuple[str, ...] = (),
        arguments_of: Callable[[Callable], list[Argument]] | None = None,
        stored: bool = True,
        entries: Mapping[str, Entry] | None = None,
        key: str | None = None,
    ) -> None:
        self.kind = kind
        self.group = group
        #: Where the options' values sit in a config, as messages name them (``model.regularizer``
        #: for the ``model/regularizer`` group); the group itself when None.
        self.key = key or group
        self.error_type = error_type
        self.schema_suffix = schema_suffix
        self.runtime_arguments = runtime_arguments
        #: How a target's arguments are found; None: from its signature (:func:`signature_arguments`).
        self.arguments_of = arguments_of
        #: Whether the entries are options of Hydra config group ``group`` (served by
        #: :mod:`mammoth.config.options` to the apps that opt in); the loggers' are not.
        self.stored = stored
        #: The registered entries by name (``entries``: a registry made of entries found elsewhere).
        self._entries: dict[str, Entry] = dict(entries or {})

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering a class or a function under ``name``; returns it unchanged."""
        key = canonical_name(name)
        if not _NAME_PATTERN.match(key):
            raise self.error_type(
                f"invalid {self.kind} name {name!r}; allowed: letters, digits, '-' and '_', starting with a letter"
            )

        def decorator(target: T) -> T:
            if not callable(target):
                raise self.error_type(f"cannot register {target!r} as {self.kind} {name!r}: not a class or function")
            if key in self._entries:
                raise self.error_type(
                    f"duplicate {self.kind} name {key!r}: already registered by {self._entries[key].definition}, "
                    f"registered again by {_definition_site(target)}"
                )
            self._entries[key] = self._make_entry(key, target)
            if self.stored:
                for listener in _REGISTRATION_LISTENERS:
                    listener(self.group, key)
            return target

        return decorator

    def _make_entry(self, key: str, target: Callable) -> Entry:
        if self.arguments_of is not None:
            arguments = tuple(self.arguments_of(target))
        else:
            arguments = tuple(signature_arguments(target, skip=self.runtime_arguments))
        try:
            schema = make_schema(
                cls_name=schema_class_name(key, self.schema_suffix),
                module=target.__module__,
                target_path=target_path(target),
                arguments=list(arguments),
                doc=inspect.getdoc(target),
                key=f"{self.group}/{key}",
            )
        except TypeError as error:
            raise self.error_type(f"cannot register {self.kind} {key!r}: {error}") from None
        return Entry(name=key, target=target, arguments=arguments, schema=schema)

    def names(self) -> list[str]:
        """The registered names (the installed plugins' included), sorted."""
        _load_plugins()
        return sorted(self._entries)

    def get(self, name: str) -> Entry:
        """The entry registered as ``name`` (case-insensitive, ``_`` = ``-``)."""
        _load_plugins()
        entry = self._entries.get(canonical_name(name))
        if entry is None:
            raise self.error_type(unknown_name_message(self.kind, name, self.names()))
        return entry

    def find_by_target(self, path: str) -> Entry | None:
        """The entry whose ``_target_`` is ``path``, or None when nothing registered has it."""
        _load_plugins()
        return next((entry for entry in self._entries.values() if entry.target_path == path), None)

    def resolve(self, name_or_config: Any) -> tuple[Entry, dict[str, Any]]:
        """The entry and the configured values of a registered name or a config node.

        A config (DictConfig, mapping or schema dataclass) is matched by its ``_target_``;
        one that names anything unregistered is refused, so a shared YAML file cannot make
        mammoth call arbitrary code. Unset values come back as ``MISSING``.
        """
        if isinstance(name_or_config, str):
            return self.get(name_or_config), {}
        configured = self.configured_values(name_or_config)
        target = configured.pop("_target_", None)
        entry = self.find_by_target(target) if isinstance(target, str) else None
        if entry is None:
            raise self.error_type(
                f"refusing to build _target_ {target!r}: it is not a registered {self.kind}; "
                f"registered {self.kind}s: {', '.join(self.names())}"
            )
        return entry, configured

    def configured_values(self, config: Any) -> dict[str, Any]:
        """The keys and values of a config (DictConfig, mapping or schema dataclass) as a plain
        dict, interpolations resolved and unset values left as ``MISSING``."""
        if dataclasses.is_dataclass(config):
            config = OmegaConf.structured(config)
        if isinstance(config, DictConfig):
            return OmegaConf.to_container(config, resolve=True, throw_on_missing=False)
        if isinstance(config, Mapping):
            return dict(config)
        raise self.error_type(
            f"cannot build a {self.kind} from {type(config).__name__}; allowed: a registered name or a {self.kind} config"
        )

    def check_known_arguments(self, entry: Entry, values: Mapping[str, Any]) -> None:
        """Every name in ``values`` is an argument of ``entry``; else the error lists its arguments."""
        unknown = [name for name in values if entry.argument(name) is None]
        if unknown:
            fields = [argument.name for argument in entry.arguments]
            raise self.error_type(
                unknown_argument_message(self.key, entry.name, unknown[0], fields, entry.describe_arguments())
            )

    def check_required(self, entry: Entry, values: Mapping[str, Any], skip: tuple[str, ...] = ()) -> None:
        """Every required argument of ``entry`` (but those in ``skip``) has a value in ``values``;
        else one error names all that are missing."""
        missing = [f"{self.key}.{argument.name}" for argument in entry.arguments
                   if argument.name not in skip and is_missing(values.get(argument.name, argument.default))]
        exclusive = exclusive_arguments_error(  # pairs whose arguments both default to None (a required one is "missing")
            self.group, f"{self.kind} {entry.name!r}",
            {argument.name: values.get(argument.name, argument.default) for argument in entry.arguments
             if argument.default is None})
        if exclusive is not None:
            raise self.error_type(exclusive)
        if missing:
            plural = len(missing) > 1
            raise self.error_type(
                f"missing value{'s' if plural else ''} for {', '.join(missing)} ({self.kind} {entry.name!r}); "
                f"set {'them' if plural else 'it'} with {' '.join(f'{key}=...' for key in missing)}"
            )

    def check_values(self, entry: Entry, values: Mapping[str, Any]) -> dict[str, Any]:
        """Validate ``values`` against the entry's arguments; return them converted.

        Unknown names fail with the list of the entry's arguments; a missing required value
        or a value of the wrong type or outside an allowed set fails naming the argument.
        """
        self.check_known_arguments(entry, values)
        self.check_required(entry, values)
        return self.convert_values(entry, values)

    def convert_values(self, entry: Entry, values: Mapping[str, Any]) -> dict[str, Any]:
        """Every argument of ``entry`` from ``values`` (else its default), converted to its type; a
        wrong type or a value outside an allowed set fails naming the argument. Unknown and
        missing names are :meth:`check_values`' concern (a resolved run checked them already)."""
        converted = {}
        for argument in entry.arguments:
            value = values.get(argument.name, argument.default)
            try:
                converted[argument.name] = check_value(argument, value)
            except ValueCheckError as error:
                raise self.error_type(f"{self.key}.{argument.name}: {error}") from None
        return converted
