"""Command-line checks that run before Hydra composes: friendly errors for names and arguments.

Hydra reports an unknown option or key without the closest match or the list of arguments;
these checks give that message first, and normalise names (``backbone=ResNet_18`` ->
``backbone=resnet-18``) so registered names are case-insensitive on the command line too.
"""

from __future__ import annotations

import re
from typing import Callable

from mammoth.errors import ConfigError, MammothError, unknown_name_message
from mammoth.registry import Registry, canonical_name

#: Defaults of the primary config (conf/config.yaml), used to know which option is selected.
DEFAULT_DATASET = "seq-digits"
DEFAULT_MODEL = "sgd"
_OVERRIDE = re.compile(r"^(?P<prefix>[+~]{0,2})(?P<key>[A-Za-z0-9_.\-/@]+)=(?P<value>.*)$")


def _registries() -> dict[str, Registry]:
    from mammoth.backbones import BACKBONES
    from mammoth.models import MODELS

    return {"backbone": BACKBONES, "model": MODELS}


def _dataset_names() -> list[str]:
    from mammoth.datasets import list_datasets

    return list_datasets()


def _simple_choices(value: str) -> list[str] | None:
    """``a,b`` -> [a, b]; None for sweep functions (``glob(...)``, ``range(...)``) we don't parse."""
    if any(char in value for char in "()[]{}$'\""):
        return None
    return [choice.strip() for choice in value.split(",")]


def normalise_overrides(overrides: list[str]) -> list[str]:
    """Check and normalise Hydra overrides; raise a MammothError naming the bad value.

    - ``backbone=``, ``model=``, ``dataset=``: case-insensitive, ``_`` = ``-``; unknown names
      list the choices and the closest one.
    - ``backbone.ARG=`` / ``model.ARG=``: ARG must be an argument of the selected option
      (the one on the command line, else the default); else the error lists its arguments.
    """
    groups: dict[str, tuple[list[str], Callable[[str], str]]] = {
        group: (registry.names(), canonical_name) for group, registry in _registries().items()
    }
    groups["dataset"] = (_dataset_names(), canonical_name)
    normalised, selected = [], {}
    for override in overrides:
        match = _OVERRIDE.match(override)
        if match and match["key"] in groups and not match["prefix"].startswith("~"):
            override, selected[match["key"]] = _normalise_choice(match, *groups[match["key"]])
        normalised.append(override)
    if "experiment" not in " ".join(overrides):
        _check_arguments(normalised, selected)
    return normalised


def _normalise_choice(match: re.Match, names: list[str], normalise: Callable[[str], str]) -> tuple[str, list[str] | None]:
    choices = _simple_choices(match["value"])
    if choices is None:
        return match.group(0), None
    fixed = []
    for choice in choices:
        name = normalise(choice)
        if name not in names:
            raise ConfigError(unknown_name_message(match["key"], choice, names))
        fixed.append(name)
    return f"{match['prefix']}{match['key']}={','.join(fixed)}", fixed


def _check_arguments(overrides: list[str], selected: dict[str, list[str] | None]) -> None:
    registries = _registries()
    for override in overrides:
        match = _OVERRIDE.match(override)
        if not match or "." not in match["key"]:
            continue
        group, argument = match["key"].split(".", 1)
        if group not in registries or "." in argument:
            continue
        for option in _selected_options(group, selected):
            entry = registries[group].get(option)
            if entry.argument(argument) is None:
                raise ConfigError(
                    f"unknown argument {argument!r} for {group} {option!r} ({group}.{argument}); "
                    f"its arguments: {entry.describe_arguments()}"
                )


def _selected_options(group: str, selected: dict[str, list[str] | None]) -> list[str]:
    if group in selected:
        return selected[group] or []
    if group == "model":
        return [DEFAULT_MODEL]
    from mammoth.datasets import get_dataset_class

    datasets = selected.get("dataset", [DEFAULT_DATASET]) or []
    return sorted({get_dataset_class(name).default_backbone for name in datasets})


def exit_with(error: MammothError, status: int = 2) -> None:
    """Print ``Error: <message>`` to stderr and exit (status 2: a usage error; 1: a failed run)."""
    import sys

    print(f"Error: {error}", file=sys.stderr)
    raise SystemExit(status)
