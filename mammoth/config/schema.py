"""Signature -> typed arguments -> dataclass config schema, and build-time value checks.

Used by every registry (backbones, models): a callable's signature becomes a list of
:class:`Argument` (name, inferred type, default), then a dataclass that OmegaConf can hold
(hydra-zen sanitises the types), and the same arguments validate values at build time,
including the types OmegaConf cannot hold (``Literal``, ``Union``, ``Callable``, classes).

Inference rules (``reference/backbones.rst``): the annotation if there is one, else the type
of the default, else ``str`` (``Any`` for the data-filled ``num_classes`` and ``input_shape``);
no default means required (``???``); a ``None`` default means optional.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import inspect
import sys
import typing
from typing import Any, Callable, Literal, Optional, Union

from omegaconf import MISSING

_NO_DEFAULT = inspect.Parameter.empty
#: Arguments the data fills in (a backbone's output size and input shape): left unannotated and
#: without a default (or with None), they are ``Any``, not ``str``, so the data's values pass.
DATA_FILLED_ARGUMENTS = ("num_classes", "input_shape")
_PLAIN_DEFAULT_TYPES = (bool, int, float, str, enum.Enum, type(None))


@dataclasses.dataclass(frozen=True)
class Argument:
    """One configurable argument of a registered callable."""

    name: str
    hint: Any
    default: Any = MISSING

    @property
    def required(self) -> bool:
        """True when the argument has no default (shown as ``???`` in the config)."""
        return is_missing(self.default)

    def describe(self) -> str:
        """``name: type = default`` as shown in help texts and error messages."""
        default = "???" if self.required else repr(self.default)
        return f"{self.name}: {type_name(self.hint)} = {default}"


def is_missing(value: Any) -> bool:
    """True for OmegaConf's ``???`` marker, compared by value: a config that was pickled or
    reloaded from YAML holds an equal but different string."""
    return isinstance(value, str) and value == MISSING


def type_name(hint: Any) -> str:
    """A short readable name for a type hint (``int``, ``Literal[18, 34]``, ``tuple[int, ...]``)."""
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    return str(hint).replace("typing.", "")


def signature_arguments(target: Callable, skip: tuple[str, ...] = ()) -> list[Argument]:
    """Infer the configurable arguments of a function or of a class's ``__init__``.

    ``*args`` and the names in ``skip`` are left out, and so is an argument whose default
    OmegaConf cannot hold (a function, a module): the callable's own default applies. A class
    whose ``__init__`` takes ``**kwargs`` also gets the arguments of its parent's ``__init__``
    (those it does not redefine), so a subclass lists only what it adds.
    """
    if not inspect.isclass(target):
        return _function_arguments(target, inspect.signature(target), skip)
    for index, owner in enumerate(target.__mro__):
        if "__init__" in vars(owner):
            break
    else:
        return []
    signature = inspect.signature(owner.__init__)
    parameters = list(signature.parameters.values())[1:]  # drop self
    arguments = _function_arguments(owner.__init__, signature.replace(parameters=parameters), skip)
    if any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters) and index + 1 < len(target.__mro__):
        own = {argument.name for argument in arguments}
        inherited = signature_arguments(target.__mro__[index + 1], skip + tuple(own))
        arguments += inherited
    return arguments


def _function_arguments(function: Callable, signature: inspect.Signature, skip: tuple[str, ...]) -> list[Argument]:
    hints = _resolved_hints(function)
    arguments = []
    for parameter in signature.parameters.values():
        if parameter.name in skip or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if parameter.default is not _NO_DEFAULT and not _is_plain_default(parameter.default):
            continue
        hint = hints.get(parameter.name, _NO_DEFAULT)
        arguments.append(_infer_argument(parameter.name, hint, parameter.default))
    return arguments


def _resolved_hints(function: Callable) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function)
    except Exception:  # one unresolvable annotation: resolve the others one by one
        namespace = getattr(function, "__globals__", {})
        return {name: _resolve_one(hint, namespace) for name, hint in getattr(function, "__annotations__", {}).items()}


def _resolve_one(hint: Any, namespace: dict[str, Any]) -> Any:
    if not isinstance(hint, str):
        return hint
    try:
        return eval(hint, dict(namespace))  # noqa: S307 - annotations of the registered code itself
    except Exception:
        return Any


def _is_plain_default(value: Any) -> bool:
    if isinstance(value, _PLAIN_DEFAULT_TYPES):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain_default(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _is_plain_default(item) for key, item in value.items())
    return False


def _infer_argument(name: str, hint: Any, default: Any) -> Argument:
    if hint is _NO_DEFAULT:
        filled_by_data = name in DATA_FILLED_ARGUMENTS and (default is _NO_DEFAULT or default is None)
        hint = Any if filled_by_data else _type_of_default(default)
    if default is None and not _accepts_none(hint):
        hint = Optional[hint]
    return Argument(name=name, hint=hint, default=MISSING if default is _NO_DEFAULT else default)


def _type_of_default(default: Any) -> Any:
    if default is _NO_DEFAULT or default is None:
        return str
    if isinstance(default, (list, tuple)):
        item_types = {type(item) for item in default}
        item = item_types.pop() if len(item_types) == 1 else Any
        return list[item] if isinstance(default, list) else tuple[item, ...]
    return type(default)


def _accepts_none(hint: Any) -> bool:
    return hint is Any or (typing.get_origin(hint) is Union and type(None) in typing.get_args(hint))


def schema_hint(hint: Any) -> Any:
    """The type the config schema declares for ``hint``: what OmegaConf can check at compose time.

    ``Literal`` becomes the common type of its values (the allowed set is checked at build
    time); everything else is left to hydra-zen's sanitising (``Any`` where OmegaConf can't).
    """
    origin = typing.get_origin(hint)
    if origin is Literal:
        value_types = {type(value) for value in typing.get_args(hint)}
        return value_types.pop() if len(value_types) == 1 else Any
    if origin is Union:
        members = [schema_hint(member) for member in typing.get_args(hint)]
        non_none = [member for member in members if member is not type(None)]
        if len(non_none) == 1:
            return Optional[non_none[0]] if len(members) > 1 else non_none[0]
        return Any
    return hint


def make_schema(
    *,
    cls_name: str,
    module: str,
    target_path: str,
    arguments: list[Argument],
    doc: str | None,
    key: str | None = None,
) -> type:
    """Build a dataclass schema with ``_target_`` and one typed field per argument.

    The class is set as attribute ``cls_name`` of ``module`` so that it is importable and
    pickles (process-based launchers), and it carries ``doc`` as its docstring. ``key``
    identifies the registration: only a schema of the same key may replace an existing one.
    """
    from hydra_zen import ZenField, make_config  # lazy: hydra_zen (~130 ms), only when a registration makes a schema

    fields = [ZenField(name="_target_", hint=str, default=target_path)]
    for argument in arguments:
        # Required fields get the literal "???" default so the field order matches the signature.
        fields.append(ZenField(name=argument.name, hint=schema_hint(argument.hint), default=argument.default))
    schema = make_config(*fields, zen_dataclass={"cls_name": cls_name, "module": module})
    schema.__doc__ = doc or f"Config of {target_path}."
    owner = sys.modules[module]
    existing = getattr(owner, cls_name, None)
    if existing is not None and (not hasattr(existing, "__mammoth_key__") or existing.__mammoth_key__ != key):
        raise TypeError(f"cannot create config class {module}.{cls_name}: the name is already taken by {existing!r}")
    schema.__mammoth_key__ = key
    setattr(owner, cls_name, schema)
    return schema


def schema_class_name(name: str, suffix: str) -> str:
    """``reduced-resnet18`` + ``BackboneConfig`` -> ``ReducedResnet18BackboneConfig``."""
    words = [word for word in name.replace("_", "-").replace(".", "-").split("-") if word]
    return "".join(word[:1].upper() + word[1:] for word in words) + suffix


class ValueCheckError(ValueError):
    """A value does not match its argument's type; the message names the value and the type."""


def check_value(argument: Argument, value: Any) -> Any:
    """Validate ``value`` against the argument's type; return it converted (list -> tuple ...).

    Raises :class:`ValueCheckError` naming the argument, the value and the allowed type or set.
    """
    try:
        return _convert(argument.hint, value)
    except ValueCheckError as error:
        raise ValueCheckError(f"invalid value {value!r} for argument {argument.name!r}: {error}") from None


def _convert(hint: Any, value: Any) -> Any:
    if hint is Any or hint is _NO_DEFAULT:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        for allowed in args:
            if value == allowed and type(value) is type(allowed):
                return allowed
        raise ValueCheckError(f"allowed values: {', '.join(repr(a) for a in args)}")
    if origin is Union:
        return _convert_union(hint, args, value)
    if inspect.isclass(hint) and issubclass(hint, enum.Enum):
        return _convert_enum(hint, value)
    if origin in (list, tuple, collections.abc.Sequence) or hint in (list, tuple):
        return _convert_sequence(hint, origin or hint, args, value)
    if origin in (dict, collections.abc.Mapping) or hint is dict:
        if not isinstance(value, collections.abc.Mapping):
            raise ValueCheckError(f"expected a mapping, got {type(value).__name__}")
        return dict(value)
    if hint is collections.abc.Callable or origin is collections.abc.Callable:
        if not callable(value):
            raise ValueCheckError("expected a callable")
        return value
    return _convert_scalar(hint, value)


def _convert_union(hint: Any, members: tuple, value: Any) -> Any:
    if value is None and type(None) in members:
        return None
    for member in members:
        if member is type(None):
            continue
        try:
            return _convert(member, value)
        except ValueCheckError:
            continue
    raise ValueCheckError(f"expected {type_name(hint)}")


def _convert_enum(enum_type: type[enum.Enum], value: Any) -> enum.Enum:
    if isinstance(value, enum_type):
        return value
    for member in enum_type:
        if value == member.name or value == member.value:
            return member
    raise ValueCheckError(f"allowed values: {', '.join(member.name for member in enum_type)}")


def _convert_sequence(hint: Any, container: Any, args: tuple, value: Any) -> Any:
    if isinstance(value, (str, bytes)) or not isinstance(value, collections.abc.Sequence):
        raise ValueCheckError(f"expected {type_name(hint)}, got {type(value).__name__}")
    items = list(value)
    if container is tuple and args and args[-1] is not Ellipsis:
        if len(items) != len(args):
            raise ValueCheckError(f"expected {len(args)} items ({type_name(hint)}), got {len(items)}")
        items = [_convert(item_hint, item) for item_hint, item in zip(args, items)]
    elif args:
        items = [_convert(args[0], item) for item in items]
    return tuple(items) if container is tuple else items


def _convert_scalar(hint: Any, value: Any) -> Any:
    if not isinstance(hint, type):
        return value  # a typing construct we do not check (TypeVar, Protocol, ...)
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueCheckError("expected a boolean (true or false)")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueCheckError("expected an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueCheckError("expected a number")
        return float(value)
    if not isinstance(value, hint):
        raise ValueCheckError(f"expected {hint.__name__}, got {type(value).__name__}")
    return value
