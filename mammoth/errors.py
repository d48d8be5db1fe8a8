"""Exception types, one per domain. The first line of every message names the bad value and what is allowed."""

from __future__ import annotations

import difflib


class MammothError(Exception):
    """Base class of every error mammoth raises on purpose."""


class BackboneError(MammothError, ValueError):
    """A backbone name, argument, config or flat-vector operation is invalid."""


class ConfigError(MammothError, ValueError):
    """A run-wide setting (model, dataset, device, hyper-parameter) is invalid."""


class DatasetError(MammothError, RuntimeError):
    """A dataset is unknown, missing on disk or corrupt."""


class TrainingError(MammothError, RuntimeError):
    """Training diverged: a loss or a weight became NaN or infinite (no results are written)."""


def closest_match(name: str, allowed: "list[str] | tuple[str, ...]") -> str | None:
    """Return the allowed name closest to ``name`` (or None when nothing is close)."""
    matches = difflib.get_close_matches(name.lower(), [a.lower() for a in allowed], n=1, cutoff=0.5)
    if not matches:
        return None
    return next(a for a in allowed if a.lower() == matches[0])


def unknown_name_message(kind: str, name: object, allowed: "list[str] | tuple[str, ...]") -> str:
    """Message for an unknown ``kind`` called ``name``: the allowed names, then the closest one."""
    message = f"unknown {kind} {name!r}; allowed: {', '.join(allowed)}"
    suggestion = closest_match(str(name), allowed)
    if suggestion is not None:
        message += f" (did you mean {suggestion!r}?)"
    return message
