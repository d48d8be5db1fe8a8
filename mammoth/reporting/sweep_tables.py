"""The jobs of a summary as tables: grouped into configurations (the overrides but the seed and
the run-control settings; mean and sample standard deviation over the complete jobs), written
as Markdown (:func:`format_summary`) and CSV (:func:`format_csv`).

What is written is escaped, as job directories may come from elsewhere: no Markdown or HTML from
overrides in the Markdown (:func:`markdown_text`), no spreadsheet formulas in the CSV
(:func:`csv_text`).
"""

from __future__ import annotations

import csv
import io
import math
import re
import statistics
from dataclasses import dataclass, field
from typing import Sequence

from mammoth.config.run_settings import RUN_CONTROL_KEYS
from mammoth.reporting.results import KIND_TITLES
from mammoth.reporting.run_records import (
    COMPLETE,
    FAILED,
    METRIC_TITLES,
    ONLINE_TITLES,
    RESOURCE_TITLES,
    RUNNING,
    STOPPED,
    UNREADABLE,
    JobRow,
    split_metric_name,
)


ALWAYS_SHOWN = ("average", "forgetting", "bwt")
#: Overrides that do not define a configuration: rows that differ only in these are one group.
NOT_A_CONFIGURATION = ("seed", *RUN_CONTROL_KEYS)
_OVERRIDE_KEY = re.compile(r"^[+~]*(?P<key>[^=]+)")


@dataclass
class ConfigurationRow:
    """The jobs of one configuration (same overrides but for the seed): mean and standard
    deviation of each metric over its complete jobs."""

    overrides: list[str]
    jobs: int
    complete: int
    means: dict[str, float]
    stds: dict[str, float | None]  # None with fewer than two complete jobs
    statuses: dict[str, int] = field(default_factory=dict)  # status -> number of jobs

    @property
    def not_complete(self) -> dict[str, int]:
        """The statuses of the jobs that did not complete: ``{"failed": 2}``."""
        return {status: number for status, number in self.statuses.items() if status != COMPLETE and number}


def override_key(override: str) -> str:
    """``+model.lr=0.1`` -> ``model.lr``."""
    match = _OVERRIDE_KEY.match(override)
    return match["key"] if match else override


def configuration(overrides: Sequence[str]) -> list[str]:
    """The overrides that define a configuration: all but the seed and the run-control settings."""
    return [item for item in overrides if override_key(item) not in NOT_A_CONFIGURATION]


def metric_names(rows: Sequence[JobRow]) -> list[str]:
    """``class_il_average, class_il_forgetting, class_il_bwt, ...`` for the accuracy kinds any row
    has (Class-IL and Task-IL when no row has metrics), the other metrics of :data:`METRIC_TITLES`
    and the ``resources_*`` ones where a row reports them."""
    present = {name for row in rows for name in row.metrics}
    kinds = [kind for kind in KIND_TITLES if any(name.startswith(kind + "_") for name in present)]
    names = [f"{kind}_{metric}" for kind in kinds or ["class_il", "task_il"] for metric in METRIC_TITLES
             if metric in ALWAYS_SHOWN or f"{kind}_{metric}" in present]
    return (names + [f"online_{field_name}" for field_name in ONLINE_TITLES if f"online_{field_name}" in present]
            + [f"resources_{field_name}" for field_name in RESOURCE_TITLES if f"resources_{field_name}" in present])


def group_rows(rows: Sequence[JobRow]) -> list[ConfigurationRow]:
    """One row per configuration, in order of first appearance: the number of jobs, of complete
    jobs, and each metric's mean and sample standard deviation (n - 1) over the complete jobs."""
    groups: dict[tuple[str, ...], list[JobRow]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(configuration(row.overrides))), []).append(row)
    names = metric_names(rows) + ["wall_seconds"]
    grouped = []
    for members in groups.values():
        complete = [row for row in members if row.status == COMPLETE]
        means, stds = {}, {}
        for name in names:
            values = [value for row in complete if (value := _value(row, name)) is not None]
            if values:
                means[name], stds[name] = mean_and_std(values)
        statuses: dict[str, int] = {}
        for row in members:
            statuses[row.status] = statuses.get(row.status, 0) + 1
        grouped.append(ConfigurationRow(configuration(members[0].overrides), len(members), len(complete), means, stds, statuses))
    return grouped


def mean_and_std(values: Sequence[float]) -> tuple[float, float | None]:
    """The mean and sample standard deviation (n - 1; None for one value) of ``values``, which
    may hold NaN, infinities and finite values near the float limit (from a run that diverged):
    the mean of values with a NaN, or with both infinities, is NaN; with one infinity, that
    infinity; the standard deviation of values with a non-finite one is NaN. Finite values are
    scaled by a power of two first (exact), so ``1e308`` and ``1e308`` average to ``1e308``
    instead of overflowing; a deviation beyond the float range is an infinity."""
    if len(values) == 0:
        raise ValueError("mean_and_std needs at least one value")
    spread_of_one = None if len(values) == 1 else math.nan
    if any(math.isnan(value) for value in values) or (math.inf in values and -math.inf in values):
        return math.nan, spread_of_one
    if math.inf in values or -math.inf in values:
        return (math.inf if math.inf in values else -math.inf), spread_of_one
    _, exponent = math.frexp(max(abs(value) for value in values))
    scaled = [math.ldexp(value, -exponent) for value in values]  # each within [-1, 1]
    mean = math.ldexp(statistics.fmean(scaled), exponent)  # |mean| <= the largest value: no overflow
    if len(values) == 1:
        return mean, None
    return mean, _ldexp_or_inf(statistics.stdev(scaled), exponent)


def _ldexp_or_inf(value: float, exponent: int) -> float:
    """``value * 2**exponent``, an infinity of its sign when beyond the float range."""
    try:
        return math.ldexp(value, exponent)
    except OverflowError:
        return math.copysign(math.inf, value)


def _value(row: JobRow, name: str) -> float | None:
    return row.wall_seconds if name == "wall_seconds" else row.metrics.get(name)


def metric_title(name: str) -> str:
    """``class_il_average`` -> ``Class-IL``; ``task_il_bwt`` -> ``Task-IL BWT``."""
    if name == "wall_seconds":
        return "wall (s)"
    kind, metric = split_metric_name(name)
    if kind == "online":
        return ONLINE_TITLES[metric]
    return RESOURCE_TITLES[metric] if kind == "resources" else KIND_TITLES[kind] + METRIC_TITLES[metric]

#: Values at least this large (in magnitude) are written in exponent notation (``1e+308``),
#: not as hundreds of digits; beyond any accuracy, loss or time a run can report.
LARGE_VALUE = 1e9


def format_value(value: float | None, digits: int = 2) -> str:
    """``91.23`` for ``digits`` 2; ``-`` for a missing value; ``nan``, ``inf`` and ``-inf`` as
    such; ``1e+308`` for a value of at least :data:`LARGE_VALUE`."""
    if value is None:
        return "-"
    if math.isfinite(value) and abs(value) >= LARGE_VALUE:
        return f"{value:.4g}"
    return f"{value:.{digits}f}"  # nan, inf and -inf are written as such


def _mean_std(group: ConfigurationRow, name: str) -> str:
    digits = 1 if name == "wall_seconds" else 2
    if name not in group.means:
        return "-"
    std = group.stds.get(name)
    return format_value(group.means[name], digits) + ("" if std is None else f" ± {format_value(std, digits)}")

_MARKDOWN_SPECIAL = re.compile(r"([\\`*\[\]|])")
_CONTROL = re.compile(r"\r\n|[\x00-\x1f\x7f]")


def markdown_text(value: object) -> str:
    """``value`` as inert Markdown text on one line: ``\\``, backticks, ``*``, brackets and ``|``
    backslash-escaped, ``&``, ``<`` and ``>`` as HTML entities (no raw HTML), and newlines and
    other control characters shown as ``\\n``-style escapes instead of breaking the line."""
    text = _CONTROL.sub(lambda match: repr(match.group())[1:-1], str(value))
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table with padded columns (readable as plain text too); every cell escaped
    with :func:`markdown_text`."""
    cells = [[markdown_text(cell) for cell in line] for line in [header, *rows]]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(line, widths)) + " |" for line in cells]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


def overrides_text(overrides: Sequence[str]) -> str:
    return " ".join(overrides) or "(none)"


def format_summary(rows: Sequence[JobRow], title: str) -> str:
    """The markdown summary: counts, the configurations table and the jobs table, and the
    error of every failed job."""
    names = metric_names(rows)
    count_text = status_counts(rows)
    groups = group_rows(rows)
    configurations = markdown_table(
        ["configuration", "n", "jobs", *(metric_title(name) for name in names), "wall (s)"],
        [[overrides_text(group.overrides), str(group.complete), str(group.jobs),
          *(_mean_std(group, name) for name in [*names, "wall_seconds"])] for group in groups],
    )
    jobs = markdown_table(
        ["job", "overrides", "status", *(metric_title(name) for name in names), "wall (s)"],
        [[row.name, overrides_text(row.overrides), row.status,
          *(format_value(row.metrics.get(name)) for name in names), format_value(row.wall_seconds, 1)] for row in rows],
    )
    parts = [
        f"# Summary of {markdown_text(title)}",
        f"{len(rows)} job{'s' if len(rows) != 1 else ''}: {count_text}. Accuracies in percent (final "
        "average, forgetting, backward transfer); configurations: the overrides without `seed` and "
        "run-control settings, mean ± sample standard deviation over the n complete jobs.",
        "## Configurations", configurations, "## Jobs", jobs,
    ]
    errors = [f"- {markdown_text(row.name)} ({markdown_text(overrides_text(row.overrides))}): {markdown_text(row.error)}"
              for row in rows if row.status in (FAILED, UNREADABLE)]
    if errors:
        parts += ["## Failed jobs", "\n".join(errors)]
    return "\n\n".join(parts) + "\n"


def status_counts(rows: Sequence[JobRow], always: Sequence[str] = ()) -> str:
    """``3 complete, 1 failed``: the number of jobs of each status present (and of the
    ``always`` ones, even when 0)."""
    counts = {status: sum(row.status == status for row in rows) for status in (COMPLETE, FAILED, STOPPED, RUNNING, UNREADABLE)}
    return ", ".join(f"{number} {status}" for status, number in counts.items() if number or status in always)

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value: str) -> str:
    """A text cell that no spreadsheet runs as a formula: one starting with ``=``, ``+``, ``-``,
    ``@``, a tab or a carriage return gets a ``'`` in front (OWASP's CSV injection advice)."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def format_csv(rows: Sequence[JobRow]) -> str:
    """One line per job: job, status, overrides (space-separated), the metrics, wall seconds,
    error; empty cells for missing values. Text cells are escaped with :func:`csv_text`;
    numbers are written as numbers (``-48.0``)."""
    names = metric_names(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["job", "status", "overrides", *names, "wall_seconds", "error"])
    for row in rows:
        values = [row.metrics.get(name) for name in names] + [row.wall_seconds]
        writer.writerow([csv_text(row.name), csv_text(row.status), csv_text(" ".join(row.overrides)),
                         *("" if value is None else repr(value) for value in values), csv_text(row.error or "")])
    return buffer.getvalue()
