"""How a benchmark's classes are split into tasks: ``dataset.n_tasks`` (tasks of equal size) or
``dataset.base_classes`` / ``dataset.increment`` (PyCIL's and LAMDA-PILOT's ``init_cls`` /
``increment``: a first task of ``base_classes`` classes, then tasks of ``increment`` classes).

The rules (docs/datasets.md, "Tasks of unequal size"):

- neither given: ``n_tasks`` (null: the benchmark's default) tasks of equal size; it must divide
  the classes;
- ``increment`` alone: ``base_classes`` = ``increment`` (PyCIL's "B0 Inc10");
- ``base_classes`` and ``increment``: PyCIL's ``DataManager`` split: tasks of ``increment`` classes
  after the first while a whole one fits, then the classes left over (fewer than ``increment``)
  as a smaller last task; ``n_tasks`` is derived, and a given one must equal it;
- ``base_classes`` and ``n_tasks``: the other classes split evenly into ``n_tasks - 1`` tasks
  (which must divide them);
- ``base_classes`` alone, and either on a domain-IL benchmark (every task has all the classes),
  are refused.

Every refusal is an ``error_type`` whose one line names the numbers. Nothing here imports torch:
the pre-flight checks a command line with :func:`task_sizes` (exit status 2), and the benchmarks
split their classes with it.
"""

from __future__ import annotations

from typing import Any, Optional

from mammoth.config.value_checks import check_positive_int
from mammoth.errors import ConfigError, MammothError


def pycil_increments(n_classes: int, base_classes: int, increment: int) -> tuple[int, ...]:
    """PyCIL's ``DataManager._increments`` (utils/data_manager.py): ``base_classes``, then
    ``increment`` while the sum stays below ``n_classes``, then what is left (if anything)."""
    sizes = [base_classes]
    while sum(sizes) + increment < n_classes:
        sizes.append(increment)
    if n_classes - sum(sizes) > 0:
        sizes.append(n_classes - sum(sizes))
    return tuple(sizes)


def _sizes_text(sizes: tuple[int, ...]) -> str:
    return ", ".join(map(str, sizes)) if len(sizes) <= 12 else f"{', '.join(map(str, sizes[:11]))}, ... ({len(sizes)} tasks)"


def _divisors(number: int) -> str:
    return ", ".join(str(d) for d in range(1, number + 1) if number % d == 0)


def task_sizes(
    dataset: str, setting: str, n_classes: Optional[int], default_n_tasks: int, n_tasks: Any = None,
    base_classes: Any = None, increment: Any = None, error_type: type[MammothError] = ConfigError,
) -> Optional[tuple[int, ...]]:
    """The number of classes of each task of ``dataset`` (``n_classes`` classes, ``setting``
    ``class-il`` or ``domain-il``) under the rules of the module docstring; in domain-IL every
    task has all ``n_classes``. ``n_classes`` None (a benchmark whose classes are counted from its
    files, before they are read) checks what can be checked without it and returns None."""
    if base_classes == 0 and not isinstance(base_classes, bool):
        raise error_type("dataset.base_classes=0 is not allowed; allowed: an integer >= 1, or null with "
                         "dataset.increment=K for PyCIL's B0 IncK (a first task of K classes)")
    for key, value in (("n_tasks", n_tasks), ("base_classes", base_classes), ("increment", increment)):
        if value is not None:
            check_positive_int(f"dataset.{key}", value, error_type)
    uneven = base_classes is not None or increment is not None
    if setting != "class-il":
        if uneven:
            key, value = ("base_classes", base_classes) if base_classes is not None else ("increment", increment)
            raise error_type(f"dataset.{key}={value} is not allowed for {dataset}: a {setting} benchmark has all its "
                             "classes in every task; allowed: null (dataset.n_tasks sets the number of tasks)")
        return None if n_classes is None else (n_classes,) * (n_tasks or default_n_tasks)
    if base_classes is not None and increment is None and n_tasks is None:
        raise error_type(f"dataset.base_classes={base_classes} is not allowed alone for {dataset}; allowed: with "
                         "dataset.increment=K (the classes of each later task), or dataset.n_tasks=T (the other "
                         "classes split evenly into T - 1 tasks)")
    if n_classes is None:
        return None
    if not uneven:
        wanted = n_tasks or default_n_tasks
        if n_classes % wanted:
            raise error_type(f"dataset.n_tasks={wanted} is not allowed for {dataset}; allowed: a number of tasks that "
                             f"divides its {n_classes} classes evenly: {_divisors(n_classes)} (default {default_n_tasks}), "
                             "or dataset.base_classes and dataset.increment for tasks of unequal size")
        return (n_classes // wanted,) * wanted
    base = base_classes if base_classes is not None else increment
    if base > n_classes:
        key = "base_classes" if base_classes is not None else "increment"
        raise error_type(f"dataset.{key}={base} is not allowed for {dataset}; allowed: 1..{n_classes} "
                         f"(its {n_classes} classes)")
    if increment is None:  # base_classes and n_tasks: the rest split evenly
        rest, later = n_classes - base, n_tasks - 1
        if (later == 0) != (rest == 0) or (later and rest % later):
            allowed = f"dataset.n_tasks=T with T - 1 dividing {rest}: {', '.join(str(d + 1) for d in range(1, rest + 1) if rest % d == 0)}" \
                if rest else "dataset.n_tasks=1"
            raise error_type(f"dataset.base_classes={base} dataset.n_tasks={n_tasks} is not allowed for {dataset}: the "
                             f"other {rest} of its {n_classes} classes do not split evenly into {later} task(s); "
                             f"allowed: {allowed}, or dataset.increment")
        return (base,) + (rest // later,) * later if later else (base,)
    sizes = pycil_increments(n_classes, base, increment)
    if n_tasks is not None and n_tasks != len(sizes):
        given = f"dataset.base_classes={base_classes} " if base_classes is not None else ""
        raise error_type(f"dataset.n_tasks={n_tasks} contradicts {given}dataset.increment={increment}, which split "
                         f"{dataset}'s {n_classes} classes into {len(sizes)} tasks ({_sizes_text(sizes)}); "
                         f"allowed: dataset.n_tasks={len(sizes)} or null")
    return sizes
