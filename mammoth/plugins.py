"""Backbones and CL methods from installed packages, found through the ``mammoth.plugins`` entry points.

A package that declares, in its ``pyproject.toml``,

    [project.entry-points."mammoth.plugins"]
    my_backbones = "my_package.backbones"

has that module imported (so its ``@register_backbone`` / ``@register_model`` decorators run)
before ``python -m mammoth`` composes its config: ``backbone=my-net`` works with no code change.

``import mammoth`` imports nothing of this: the entry points are imported once, on the first
lookup in any registry (``list_backbones()``, ``build_model(...)``, ...), or when Hydra lists
the options that ``mammoth.conf`` / ``mammoth.app.conf`` serve (:mod:`mammoth.config.options`).
"""

from __future__ import annotations

import functools
import importlib
import warnings
from importlib.metadata import entry_points

from mammoth.errors import ConfigError

ENTRY_POINT_GROUP = "mammoth.plugins"


@functools.cache
def installed_entry_points() -> tuple:
    """The installed ``mammoth.plugins`` entry points, by name (found once: the search reads every
    installed distribution's metadata)."""
    return tuple(sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda point: point.name))


def load_plugins(strict: bool = True) -> list[str]:
    """Import every module named by a ``mammoth.plugins`` entry point; return their names.

    A plugin that fails to import raises a ConfigError naming the entry point and the error
    (``strict``), or is skipped with a warning saying the same.
    """
    loaded = []
    for entry_point in installed_entry_points():
        try:
            importlib.import_module(entry_point.value.split(":")[0])
        except Exception as error:  # a broken plugin must say which one it is
            message = (
                f"mammoth plugin {entry_point.name!r} ({entry_point.value}) failed to import: "
                f"{type(error).__name__}: {error}"
            )
            if strict:
                raise ConfigError(message) from error
            warnings.warn(message, stacklevel=2)
            continue
        loaded.append(entry_point.name)
    return loaded


# Global state, on purpose: whether the plugins have registered their entries. It belongs to the
# registries, which are process-wide (a plugin's module, once imported, has registered its entries
# for the whole process); loading again would re-import a broken plugin and warn at every lookup.
@functools.cache
def load_plugins_once() -> None:
    """:func:`load_plugins` the first time it is called (a broken plugin is a warning); nothing after."""
    load_plugins(strict=False)
