"""mammoth: Hydra-native continual learning for PyTorch.

Registered backbones become typed Hydra configs (``backbone=name backbone.arg=value``);
``python -m mammoth`` trains and evaluates a continual-learning run.

``import mammoth`` is cheap: it imports neither torch nor the built-ins. Each public name is
imported on first use (``mammoth.list_backbones`` imports :mod:`mammoth.backbones`, which
registers the built-in backbones); the first registry lookup also imports the installed
``mammoth.plugins`` entry points (:mod:`mammoth.plugins`).

Run as ``python -m mammoth`` (or ``-m mammoth.summary``, ``-m mammoth.reproduce``), this package
is imported first: its first statements take the working directory off ``sys.path`` before
anything else is imported (see :func:`_drop_working_directory`). No ``from __future__`` import
here: it would import a ``__future__.py`` lying in the working directory.
"""

import os
import sys


def _drop_working_directory() -> None:
    """Under ``python -m mammoth...``, take the working directory off the front of ``sys.path``,
    where ``-m`` puts it (as ``python -P`` / ``PYTHONSAFEPATH`` would), so that no Python file that
    merely lies where the command runs (``hydra.py``, ``logging.py``, ``argparse.py``) is imported
    in place of a library. Imported as a library, also by another ``python -m`` module,
    ``sys.path`` is left as the importing program has it."""
    if _module_run_by_python() in ("mammoth", "mammoth.__main__", "mammoth.summary", "mammoth.reproduce") \
            and sys.argv[:1] == ["-m"] and sys.path \
            and (sys.path[0] == "" or os.path.realpath(sys.path[0]) == os.path.realpath(os.getcwd())):
        del sys.path[0]


def _module_run_by_python() -> "str | None":
    """The module of ``python [OPTIONS] -m MODULE`` (``sys.orig_argv``), None for another command."""
    arguments = list(getattr(sys, "orig_argv", ()))[1:]
    index = 0
    while index < len(arguments) and arguments[index].startswith("-") and arguments[index] not in ("-", "--"):
        argument, index = arguments[index], index + 1
        if argument.startswith("--"):
            index += argument == "--check-hash-based-pycs"
            continue
        for position, flag in enumerate(argument[1:], start=2):
            if flag == "m":
                rest = argument[position:]
                return rest or (arguments[index] if index < len(arguments) else None)
            if flag == "c":
                return None
            if flag in "WX":  # an option with a value, attached or the next argument
                index += not argument[position:]
                break
    return None


_drop_working_directory()  # before any other import (Python loaded os and sys before the working directory)

import importlib  # noqa: E402

__version__ = "0.1.0"
#: The distribution of this package; ``python -m mammoth`` checks it (:mod:`mammoth.app.import_name`).
__distribution__ = "mammoth-cl"

#: Public name -> the module that defines it (imported on first access, PEP 562).
_PUBLIC_NAMES = {
    "BackboneError": "mammoth.errors",
    "ConfigError": "mammoth.errors",
    "ContinualDataset": "mammoth.datasets",
    "ContinualModel": "mammoth.models",
    "DatasetError": "mammoth.errors",
    "MammothBackbone": "mammoth.backbones",
    "MammothError": "mammoth.errors",
    "ReplayModel": "mammoth.models",
    "TrainingError": "mammoth.errors",
    "build_backbone": "mammoth.backbones",
    "build_dataset": "mammoth.datasets",
    "build_model": "mammoth.models",
    "list_backbones": "mammoth.backbones",
    "list_datasets": "mammoth.datasets",
    "list_models": "mammoth.models",
    "register_backbone": "mammoth.backbones",
    "register_dataset": "mammoth.datasets",
    "register_model": "mammoth.models",
    "run": "mammoth.app.runner",
}

__all__ = sorted(_PUBLIC_NAMES)


def __getattr__(name: str) -> object:
    """Import the module of public name ``name`` and return the name (kept for later accesses)."""
    module = _PUBLIC_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'mammoth' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names (imported or not) and ``__version__``."""
    return sorted([*__all__, "__version__"])
