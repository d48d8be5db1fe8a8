"""The built-in options' config schemas, written down: what Hydra composes without importing torch.

The built-in backbones, datasets and models are defined in modules that import torch at the top
(a backbone is an ``nn.Module``), so their registries cannot be filled without it. Composing a
config (``--help``, ``--cfg job``, completion, an app that opted in) needs only their schemas:
``builtins.json`` beside this module holds, for each built-in option, its ``_target_``, its schema
class's name and fields (name, type, default), its arguments' hints (what their values are checked
against), its arguments as messages describe them and, for a
dataset, its default backbone and what its tasks are split from (setting, classes, default number of tasks).
``tests/config/test_manifest.py`` checks that it matches the registries; after changing a built-in,
regenerate it with ``python scripts/write_builtins_manifest.py``.

The schema classes built from it (:func:`manifest_schema`) are attributes of this module, built on
first use (PEP 562), so a composed config pickles and unpickles (process launchers) without torch.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from importlib import resources
from typing import Any, Literal, Optional

MANIFEST_FILE = "builtins.json"
#: The groups of the built-in options and the suffix of their schema classes' names.
GROUPS = ("backbone", "dataset", "model", "model/regularizer")
_SCALARS = {"int": int, "float": float, "str": str, "bool": bool, "any": Any}


def encode_type(hint: Any) -> Any:
    """A schema field's type or an argument's hint as JSON: ``int``, ``["optional", "int"]``
    (also ``int | None``), ``["tuple", "int", "..."]``, ``["literal", 18, 34]``."""
    for name, scalar in _SCALARS.items():
        if hint is scalar:
            return name
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return ["literal", *args]
    if origin in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
        return ["optional", encode_type(next(arg for arg in args if arg is not type(None)))]
    if origin in (list, tuple, dict):
        return [origin.__name__, *("..." if arg is Ellipsis else encode_type(arg) for arg in args)]
    raise TypeError(f"cannot write down the schema type {hint!r}; allowed: {', '.join(_SCALARS)}, Optional, list, tuple, dict")


def decode_type(encoded: Any) -> Any:
    """The type that :func:`encode_type` wrote down."""
    if isinstance(encoded, str):
        return _SCALARS[encoded]
    kind, *args = encoded
    if kind == "literal":
        return Literal[tuple(args)]
    if kind == "optional":
        return Optional[decode_type(args[0])]
    container = {"list": list, "tuple": tuple, "dict": dict}[kind]
    decoded = tuple(Ellipsis if arg == "..." else decode_type(arg) for arg in args)
    return container[decoded] if decoded else container


def describe_entry(group: str, entry: Any) -> dict[str, Any]:
    """What the manifest keeps of a registry entry: target, schema class name, fields, its arguments
    as error messages describe them, and a dataset's default backbone."""
    fields = []
    for field in dataclasses.fields(entry.schema):
        if field.name == "_target_":
            continue
        default = {"tuple": list(field.default)} if isinstance(field.default, tuple) else field.default
        fields.append([field.name, encode_type(field.type), default])
    hints = [[argument.name, encode_type(argument.hint)] for argument in entry.arguments]
    described = {"target": entry.target_path, "schema": entry.schema.__name__, "fields": fields,
                 "hints": hints, "arguments": entry.describe_arguments()}
    if group == "dataset":
        described["default_backbone"] = entry.target.default_backbone
        described["tasks"] = dataset_task_facts(entry.target)
    return described


def dataset_task_facts(benchmark: Any) -> dict[str, Any]:
    """What the pre-flight checks a benchmark's task split against (:mod:`mammoth.config.task_split`):
    its ``setting``, its number of ``classes`` (None: counted in its files) and ``default_n_tasks``."""
    return {"setting": benchmark.setting, "classes": benchmark.benchmark_classes(),
            "default_n_tasks": benchmark.default_n_tasks}


def manifest_text(manifest: dict[str, dict[str, Any]]) -> str:
    """``builtins.json``'s text: one option a line, so that a change shows as one line."""
    groups = [f" {json.dumps(group)}: {{\n" + ",\n".join(f"  {json.dumps(name)}: {json.dumps(options[name], sort_keys=True)}"
                                                     for name in sorted(options)) + "\n }"
              for group, options in sorted(manifest.items())]
    return "{\n" + ",\n".join(groups) + "\n}\n"


@functools.cache
def load_manifest() -> dict[str, dict[str, Any]]:
    """The built-in options, ``{group: {name: description}}``, as ``builtins.json`` has them."""
    return json.loads(resources.files("mammoth.config").joinpath(MANIFEST_FILE).read_text(encoding="utf-8"))


@functools.cache
def _schemas_by_class_name() -> dict[str, tuple[str, str]]:
    return {description["schema"]: (group, name)
            for group, options in load_manifest().items() for name, description in options.items()}


def manifest_schema(group: str, name: str) -> type:
    """The schema dataclass of built-in option ``group/name``, built from the manifest once: the
    fields, types, defaults and class name of the one its registry builds."""
    class_name = load_manifest()[group][name]["schema"]
    return globals().get(class_name) or __getattr__(class_name)


def manifest_fields(description: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """An option's fields (but ``_target_``) as ``(name, type, default)``, from its manifest description."""
    fields = []
    for name, encoded, default in description["fields"]:
        if isinstance(default, dict):  # {"tuple": [...]}: the only non-scalar default written down
            default = tuple(default["tuple"])
        fields.append((name, decode_type(encoded), default))
    return fields


def manifest_arguments(description: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """An option's arguments as ``(name, hint, default)``: the hints its values are checked
    against (``Literal[18, 34]`` where the schema field holds ``int``), the defaults of its fields."""
    defaults = {name: default for name, _, default in manifest_fields(description)}
    return [(name, decode_type(encoded), defaults[name]) for name, encoded in description["hints"]]


def __getattr__(class_name: str) -> type:
    """Build (once) the manifest's schema class ``class_name``: module attributes, for pickle."""
    found = _schemas_by_class_name().get(class_name)
    if found is None:
        raise AttributeError(f"module {__name__!r} has no attribute {class_name!r}")
    group, name = found
    description = load_manifest()[group][name]
    fields = [("_target_", str, dataclasses.field(default=description["target"]))]
    for field_name, hint, default in manifest_fields(description):
        value = dataclasses.field(default_factory=lambda items=default: list(items)) if isinstance(default, list) \
            else dataclasses.field(default=default)
        fields.append((field_name, hint, value))
    schema = dataclasses.make_dataclass(class_name, fields)
    schema.__module__ = __name__
    schema.__doc__ = f"Config of {description['target']}."
    globals()[class_name] = schema
    return schema
