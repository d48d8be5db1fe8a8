"""Value checks shared by the config-driven parts (models, datasets, buffer): each error names the
config key, the bad value and what is allowed, e.g. ``model.lr=-1.0 is not positive; allowed: lr > 0``."""

from __future__ import annotations

from typing import Any

from mammoth.errors import ConfigError, MammothError


def _name(key: str) -> str:
    """``model.lr`` -> ``lr``; ``buffer capacity`` -> ``capacity``."""
    return key.replace(" ", ".").split(".")[-1]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_positive(key: str, value: Any, error_type: type[MammothError] = ConfigError) -> float:
    """``value`` as a float if it is a number > 0, else an ``error_type`` naming ``key``."""
    if not _is_number(value) or not value > 0:
        raise error_type(f"{key}={value!r} is not positive; allowed: {_name(key)} > 0")
    return float(value)


def check_non_negative(key: str, value: Any, error_type: type[MammothError] = ConfigError) -> float:
    """``value`` as a float if it is a number >= 0, else an ``error_type`` naming ``key``."""
    if not _is_number(value) or not value >= 0:
        raise error_type(f"{key}={value!r} is negative or not a number; allowed: {_name(key)} >= 0")
    return float(value)


def check_positive_int(key: str, value: Any, error_type: type[MammothError] = ConfigError) -> int:
    """``value`` if it is an integer >= 1, else an ``error_type`` naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise error_type(f"{key}={value!r} is not a positive integer; allowed: {_name(key)} >= 1")
    return value


def check_choice(key: str, value: Any, allowed: tuple[str, ...], error_type: type[MammothError] = ConfigError) -> str:
    """``value`` if it is one of ``allowed``, else an ``error_type`` naming ``key`` and the choices."""
    if value not in allowed:
        raise error_type(f"{key}={value!r} is not supported; allowed: {', '.join(allowed)}")
    return value
