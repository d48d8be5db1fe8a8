"""What a sweep planned, read from the config Hydra saved at its start (``multirun.yaml``, or the
first job's ``.hydra`` files for the Optuna sweeper): how many jobs it runs (:func:`planned_jobs`),
whether it has ended (:func:`has_ended`) and, for Optuna, the study (:func:`read_study`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser

from mammoth.config.hydra_private import basic_sweep_jobs
from mammoth.reporting.run_records import MAX_SMALL_FILE_BYTES, RUNNING, JobRow, read_limited, safe_yaml


@dataclass
class Study:
    """An Optuna sweep, read from the sweep's ``multirun.yaml``: the searched parameters
    (override key -> search expression), the direction and the optimised metric
    (``class_il_average``; None: the first kind's average)."""

    params: dict[str, str]
    direction: str
    metric: str | None


def sweep_config(root: Path, rows: Sequence[JobRow] = ()) -> dict[str, Any]:
    """The config Hydra saved at the start of the sweep at ``root`` (``multirun.yaml``); when
    there is none (the Optuna sweeper writes none), the sweeper and ``optimized_metric`` of the
    first job in ``rows`` (its ``.hydra/hydra.yaml`` and ``config.yaml``). Read with the
    summary's limits; empty when nothing can be read."""
    document = _read_yaml(root / "multirun.yaml")
    if document or not rows:
        return document
    sweeper = _sweeper(_read_yaml(rows[0].directory / ".hydra" / "hydra.yaml"))
    if not sweeper:
        return {}
    metric = _read_yaml(rows[0].directory / ".hydra" / "config.yaml").get("optimized_metric")
    return {"hydra": {"sweeper": sweeper}, "optimized_metric": metric}


def _read_yaml(path: Path) -> dict[str, Any]:
    """The YAML mapping in ``path`` (size-limited, no aliases); empty when missing or unreadable."""
    try:
        data = read_limited(path, MAX_SMALL_FILE_BYTES, path.name)
        document = safe_yaml(data) if data is not None else None
    except Exception:  # noqa: BLE001  unreadable: summarised without it
        return {}
    return document if isinstance(document, dict) else {}


def _sweeper(document: dict[str, Any]) -> dict[str, Any]:
    hydra = document.get("hydra")
    sweeper = hydra.get("sweeper") if isinstance(hydra, dict) else None
    return sweeper if isinstance(sweeper, dict) else {}


def planned_jobs(document: dict[str, Any]) -> int | None:
    """How many jobs the sweep of ``document`` (:func:`sweep_config`) runs: the product of its
    sweeps for Hydra's basic sweeper, ``n_trials`` for Optuna; None when unknown."""
    sweeper = _sweeper(document)
    target = str(sweeper.get("_target_", ""))
    if "optuna" in target.lower():
        trials = sweeper.get("n_trials")
        return trials if isinstance(trials, int) and not isinstance(trials, bool) else None
    hydra = document.get("hydra") or {}
    if not target.endswith("BasicSweeper") or "overrides" not in hydra:  # a job's own config: its sweep unknown
        return None
    params = sweeper.get("params") if isinstance(sweeper.get("params"), dict) else {}
    task = (hydra.get("overrides") or {}).get("task") or []
    try:
        overrides = OverridesParser.create().parse_overrides([f"{key}={value}" for key, value in params.items()]
                                                            + [str(item) for item in task])
        return len(basic_sweep_jobs(overrides))
    except Exception:  # noqa: BLE001  a sweep Hydra's parser cannot read again: unknown
        return None


def has_ended(rows: Sequence[JobRow], planned: int | None) -> bool:
    """Whether a sweep has ended: no job is running and, when the number of ``planned`` jobs is
    known, that many have a result."""
    if any(row.status == RUNNING for row in rows):
        return False
    return planned is None or len(rows) >= planned


def read_study(document: dict[str, Any]) -> Study | None:
    """The Optuna study of a sweep's config (:func:`sweep_config`); None when it is not one."""
    sweeper = _sweeper(document)
    if "optuna" not in str(sweeper.get("_target_", "")).lower():
        return None
    params = sweeper.get("params")
    if not isinstance(params, dict) or not params:
        return None
    direction = sweeper.get("direction")
    metric = document.get("optimized_metric")
    return Study(params={str(key): str(value) for key, value in params.items()},
                 direction=direction if direction in ("maximize", "minimize") else "maximize",
                 metric=metric.replace(".", "_") if isinstance(metric, str) else None)
