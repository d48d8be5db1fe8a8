"""Value checks shared by the config-driven parts (models, datasets, buffer): each error names the
config key, the bad value and what is allowed, e.g. ``model.lr=-1.0 is not positive; allowed: lr > 0``.

Real-valued settings must also be finite: ``inf`` and ``nan`` are refused before training, and so
is a value beyond float32's range (``model.lr=1e300``: torch turns settings into float32 tensor
arguments, where it overflows). Large values inside it are allowed (no other upper bounds); a run
they make diverge stops at the first non-finite loss (:class:`mammoth.errors.TrainingError`)."""

from __future__ import annotations

import math
import os
from typing import Any

from mammoth.errors import ConfigError, MammothError

#: The largest float32 (torch's default dtype): a real-valued setting beyond it overflows there.
FLOAT32_MAX = 3.4028234663852886e38


def _name(key: str) -> str:
    """``model.lr`` -> ``lr``; ``buffer capacity`` -> ``capacity``."""
    return key.replace(" ", ".").split(".")[-1]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_finite(key: str, value: Any, allowed: str, error_type: type[MammothError]) -> None:
    if not _is_number(value):
        return
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int beyond float range
        finite = False
    if not finite:
        raise error_type(f"{key}={value!r} is not a finite number; allowed: {allowed}")
    if abs(value) > FLOAT32_MAX:
        raise error_type(
            f"{key}={value!r} does not fit float32 (torch's default dtype, largest {FLOAT32_MAX:.7g}); "
            f"allowed: {allowed.replace('< inf', f'<= {FLOAT32_MAX:.7g}')}"
        )


def check_positive(key: str, value: Any, error_type: type[MammothError] = ConfigError) -> float:
    """``value`` as a float if it is a finite number > 0, else an ``error_type`` naming ``key``."""
    _check_finite(key, value, f"0 < {_name(key)} < inf", error_type)
    if not _is_number(value) or not value > 0:
        raise error_type(f"{key}={value!r} is not positive; allowed: {_name(key)} > 0")
    return float(value)


def check_non_negative(key: str, value: Any, error_type: type[MammothError] = ConfigError) -> float:
    """``value`` as a float if it is a finite number >= 0, else an ``error_type`` naming ``key``."""
    _check_finite(key, value, f"0 <= {_name(key)} < inf", error_type)
    if not _is_number(value) or not value >= 0:
        raise error_type(f"{key}={value!r} is negative or not a number; allowed: {_name(key)} >= 0")
    return float(value)


def check_fraction(key: str, value: Any, error_type: type[MammothError] = ConfigError) -> float:
    """``value`` as a float if it is a number in [0, 1], else an ``error_type`` naming ``key``."""
    if not _is_number(value) or not 0 <= value <= 1:
        raise error_type(f"{key}={value!r} is not in [0, 1]; allowed: 0 <= {_name(key)} <= 1")
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


#: Arguments of which a method takes exactly one: a method that has both (each defaulting to
#: None) refuses both set and neither set (``buffer_size``, a fixed total memory, or ``memory_per_class``, a memory that grows
#: with the classes seen). The registry checks it with the required arguments (the command line
#: refuses it, exit status 2) and :class:`mammoth.models.base.ReplayModel` when built from Python.
EXCLUSIVE_ARGUMENTS = (("buffer_size", "memory_per_class"),)


def exclusive_arguments_error(group: str, owner: str, values: dict[str, Any]) -> str | None:
    """The one-line error for ``values`` (an entry's arguments, unset ones None or ``???``) that set
    both or neither of a pair of :data:`EXCLUSIVE_ARGUMENTS`; None when each pair is set once.
    ``group`` prefixes the keys (``model``), ``owner`` names the entry (``model 'er'``)."""
    for pair in EXCLUSIVE_ARGUMENTS:
        if not all(name in values for name in pair):
            continue
        given = [name for name in pair if values[name] is not None and values[name] != "???"]
        keys = [f"{group}.{name}" for name in pair]
        if len(given) > 1:
            shown = " and ".join(f"{group}.{name}={values[name]!r}" for name in pair)
            return (f"{shown} are both set ({owner}); allowed: one of them "
                    f"(set the other to null, e.g. {keys[0]}=null)")
        if not given:
            return (f"missing value for {' or '.join(keys)} ({owner}); set one with "
                    f"{' or '.join(f'{key}=...' for key in keys)}")
    return None


#: The allowed values of the ``precision`` setting (mammoth.engine.precision has their autocast dtypes).
PRECISION_NAMES = ("fp32", "bf16", "fp16")


def check_precision_name(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISION_NAMES`; else a one-line ConfigError naming it."""
    if precision not in PRECISION_NAMES:
        raise ConfigError(f"precision={precision!r} is not supported; allowed: {', '.join(PRECISION_NAMES)}")
    return precision


def check_threads(threads: int | None) -> int | None:
    """``threads`` if this machine has that many CPUs (None: torch's default)."""
    if threads is None:
        return None
    if threads < 1:
        raise ConfigError(f"threads={threads} is not positive; allowed: null (torch's default) or an integer >= 1")
    available = os.cpu_count() or 1
    if threads > available:
        raise ConfigError(
            f"threads={threads} is more than the {available} CPU(s) of this machine; allowed: null or 1..{available}"
        )
    return threads
