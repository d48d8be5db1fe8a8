"""The summary files of a sweep: ``summary.csv``, ``summary.md`` and ``summary.png`` of the runs
under a directory, written into it atomically (:func:`write_summary`), under the directory's
lock so that the jobs of a sweep that end together take turns (:func:`update_summary`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from mammoth.files import exclusive_lock, remove_stale_temporaries, write_atomic
from mammoth.reporting.figures import plot_summary
from mammoth.reporting.run_records import JobRow, check_directory, gather
from mammoth.reporting.sweep_plan import planned_jobs, read_study, sweep_config
from mammoth.reporting.sweep_tables import format_csv, format_summary


CSV_NAME, MARKDOWN_NAME, PLOT_NAME = "summary.csv", "summary.md", "summary.png"
LOCK_NAME = ".summary.lock"


def write_summary(root: Path, rows: Sequence[JobRow], title: str | None = None, ended: bool | None = None) -> list[Path]:
    """Write summary.csv, summary.md and summary.png of ``rows`` into ``root``; return their
    paths. ``ended``: whether the sweep has ended (None: :func:`has_ended`, with the jobs its
    ``multirun.yaml`` plans)."""
    title = title or str(root)
    sweep = sweep_config(root, rows)
    picture = plot_summary(rows, root.absolute().name, ended, read_study(sweep), planned_jobs(sweep))
    return [
        write_atomic(root / CSV_NAME, format_csv(rows).encode(), "summary"),
        write_atomic(root / MARKDOWN_NAME, format_summary(rows, title).encode(), "summary"),
        write_atomic(root / PLOT_NAME, picture, "summary"),
    ]


def update_summary(root: Path, others: Sequence[Path] = (), ended: bool | None = None) -> list[JobRow]:
    """Under the lock of ``root``: gather the runs under ``root`` and ``others`` and write the
    summary files into ``root`` (``ended`` as in :func:`write_summary`). Returns the rows."""
    check_directory(root)
    with exclusive_lock(root / LOCK_NAME):  # processes that update one summary take turns
        remove_stale_temporaries(root, before=time.time(), names=(CSV_NAME, MARKDOWN_NAME, PLOT_NAME))  # a writer killed mid-write
        rows = gather([root, *others])
        write_summary(root, rows, " ".join(str(path) for path in [root, *others]), ended)
    return rows
