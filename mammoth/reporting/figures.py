"""The summary picture (``summary.png``): one bar per configuration (:func:`bar_figure`), or for
an Optuna study the metric against each searched parameter (:func:`study_figure`). matplotlib's
object API only (no pyplot: no global figure state, no GUI backend), imported when a picture is
drawn.
"""

from __future__ import annotations

import io
import math
import re
from typing import Any, Sequence

from mammoth.reporting.results import KIND_TITLES
from mammoth.reporting.run_records import COMPLETE, FAILED, RESOURCE_TITLES, JobRow, split_metric_name
from mammoth.reporting.sweep_plan import Study, has_ended
from mammoth.reporting.sweep_tables import (
    LARGE_VALUE,
    ConfigurationRow,
    format_value,
    group_rows,
    metric_names,
    override_key,
    overrides_text,
    status_counts,
)


MAX_PLOTTED = 40  # configurations in summary.png; more would not be readable


def plotted_configurations(groups: Sequence[ConfigurationRow]) -> list[ConfigurationRow]:
    """The configurations with complete jobs, in order; when there are more than ``MAX_PLOTTED``,
    the ``MAX_PLOTTED`` with the best final average of the first accuracy kind, best first."""
    shown = [group for group in groups if group.complete]
    if len(shown) <= MAX_PLOTTED:
        return shown
    kind = next(kind for kind in KIND_TITLES if any(f"{kind}_average" in group.means for group in shown))
    return sorted(shown, key=lambda group: _best_first(group.means.get(f"{kind}_average")))[:MAX_PLOTTED]


def _best_first(value: float | None) -> tuple[int, float]:
    """A sort key: the largest finite value first; NaN, infinities and missing values last."""
    return (0, -value) if value is not None and math.isfinite(value) else (1, 0.0)

_FLOAT = re.compile(r"(?<![\w.])-?(?:\d+\.\d*|\.\d+|\d+(?=[eE]))(?:[eE][-+]?\d+)?(?![\w.])")


def short_floats(text: str) -> str:
    """``model.lr=0.10000000001`` -> ``model.lr=0.1``: every decimal number in ``text`` with at
    most 6 significant digits; other text unchanged."""
    return _FLOAT.sub(lambda match: format(float(match.group()), ".6g"), text)


def figure_heading(rows: Sequence[JobRow], name: str, ended: bool | None, planned: int | None = None) -> str:
    """The first lines of the summary picture: the dataset(s) the runs trained on (``name``, e.g.
    the sweep directory's name, when no complete run says), then the count of jobs by status:
    ``4 complete, 1 failed`` once the sweep has ended (``ended`` None: :func:`has_ended`),
    ``in progress: ... of N jobs`` before (N: the ``planned`` jobs, when known)."""
    datasets = sorted({row.dataset for row in rows if row.dataset})
    heading = ", ".join(datasets) if datasets else name
    if ended is None:
        ended = has_ended(rows, planned)
    if ended:
        return f"{heading}\n{status_counts(rows, always=(COMPLETE, FAILED))}"
    of = f" of {planned} jobs" if planned else ""
    return f"{heading}\nin progress: {status_counts(rows) or 'no job has ended'}{of}"


def summary_figure(rows: Sequence[JobRow], name: str = "", ended: bool | None = None, study: Study | None = None,
                   planned: int | None = None) -> Any:
    """The matplotlib Figure of the summary picture (not saved): for an Optuna ``study``, the
    metric against each searched parameter with the best trial marked; otherwise one bar per
    configuration (see :func:`bar_figure`). Titled by :func:`figure_heading`."""
    heading = figure_heading(rows, name, ended, planned)
    if study is not None and any(row.status == COMPLETE for row in rows):
        return study_figure(rows, study, heading)
    return bar_figure(group_rows(rows), heading)


def bar_figure(groups: Sequence[ConfigurationRow], heading: str) -> Any:
    """A horizontal bar per configuration and accuracy kind (final average), the standard
    deviation over seeds as error bars and the values written on the bars, on an axis that
    spans the values (not from 0). At most ``MAX_PLOTTED`` configurations with complete jobs
    (the best by the first kind's average); then every configuration without a complete job,
    marked with its jobs' statuses. Labels show the overrides that differ between
    configurations (numbers shortened); the ones they share go in the title."""
    from matplotlib.figure import Figure  # lazy: matplotlib (heavy), only where a picture is drawn; no pyplot

    complete_groups = plotted_configurations(groups)
    unfinished = [group for group in groups if not group.complete][:MAX_PLOTTED]
    shown = complete_groups + unfinished
    kinds = [kind for kind in KIND_TITLES if any(f"{kind}_average" in group.means for group in shown)]
    n_complete = sum(bool(group.complete) for group in groups)
    if len(complete_groups) < n_complete:
        heading += f"\nthe {len(complete_groups)} best of {n_complete} configurations ({KIND_TITLES[kinds[0]]})"
    common = set.intersection(*(set(group.overrides) for group in shown)) if len(shown) > 1 else set()
    labels = [short_floats(overrides_text([item for item in group.overrides if item not in common])) + "  " + _jobs_note(group)
              for group in shown]
    figure = Figure(figsize=(9, 1.6 + 0.45 * max(len(shown), 1) * max(len(kinds), 1)), layout="constrained")
    axes = figure.subplots()
    if common:
        heading += f"\nall: {short_floats(' '.join(sorted(common)))}"
    figure.suptitle(heading, fontsize=10)
    if not shown:
        axes.text(0.5, 0.5, "no jobs", ha="center", va="center", transform=axes.transAxes)
        axes.set_axis_off()
        return figure
    left, right = _value_range(complete_groups, kinds)
    height = 0.8 / max(len(kinds), 1)
    positions = range(len(shown))
    for k, kind in enumerate(kinds):
        name = f"{kind}_average"
        means = [group.means.get(name) for group in shown]
        errors = [group.stds.get(name) for group in shown]
        offsets = [position + (k - (len(kinds) - 1) / 2) * height for position in positions]
        axes.barh(offsets, [_drawable(mean) for mean in means], height, xerr=[_drawable(error) for error in errors],
                  capsize=3, label=KIND_TITLES[kind])  # NaN, infinities, 1e308: no bar, the value written
        for y, mean, error in zip(offsets, means, errors):
            if mean is not None:
                text = format_value(mean, 1) + ("" if error is None else f" ± {format_value(error, 1)}")
                axes.text(left + 0.01 * (right - left), y, text, va="center", ha="left", fontsize=8)
    for position, group in zip(positions, shown):
        if not group.complete:
            axes.text(left + 0.01 * (right - left), position, f"✗ no complete job ({_status_text(group)})",
                      va="center", ha="left", fontsize=8, color="tab:red")
    axes.set_yticks(positions, labels)
    for tick, group in zip(axes.get_yticklabels(), shown):
        if not group.complete:
            tick.set_color("tab:red")
    axes.set_ylim(len(shown) - 0.5, -0.5)  # top to bottom; rows without bars keep their place
    axis_note = f"; the axis starts at {left:g}" if left > 0 else ""
    axes.set(xlim=(left, right), xlabel=f"final average accuracy (%), mean ± std over seeds{axis_note}")
    axes.grid(axis="x", alpha=0.3)
    if kinds:
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    return figure


def _drawable(value: float | None) -> float:
    """``value`` when a bar can show it (finite, below :data:`LARGE_VALUE`); NaN otherwise (for
    None, NaN, infinities, 1e308), which matplotlib does not draw: the value is written instead."""
    return value if value is not None and math.isfinite(value) and abs(value) < LARGE_VALUE else math.nan


def _jobs_note(group: ConfigurationRow) -> str:
    """``(n=2)``, ``(n=1, 1 failed)`` or ``(2 failed)``: a configuration's complete jobs and the others."""
    parts = [f"n={group.complete}"] if group.complete else []
    parts += [f"{number} {status}" for status, number in group.not_complete.items()]
    return f"({', '.join(parts)})"


def _status_text(group: ConfigurationRow) -> str:
    return ", ".join(f"{number} {status}" for status, number in group.not_complete.items()) or "no jobs"


def _value_range(groups: Sequence[ConfigurationRow], kinds: Sequence[str]) -> tuple[float, float]:
    """An x range that shows the differences between the plotted averages (± std), within 0..100."""
    lows, highs = [], []
    for group in groups:
        for kind in kinds:
            mean = _drawable(group.means.get(f"{kind}_average"))
            if not math.isnan(mean):  # NaN, infinities and 1e308 have no bar: they do not stretch the axis
                std = _drawable(group.stds.get(f"{kind}_average"))
                std = 0.0 if math.isnan(std) else std
                lows.append(mean - std)
                highs.append(mean + std)
    if not lows:
        return 0.0, 100.0
    low, high = min(lows), max(highs)
    pad = max(0.25 * (high - low), 2.0)
    left = max(0.0, math.floor(low - pad))
    right = max(min(100.0, math.ceil(high + pad)), high)
    return left, max(right, left + 1.0)


def study_figure(rows: Sequence[JobRow], study: Study, heading: str) -> Any:
    """For an Optuna study: the optimised metric of each trial against each searched parameter
    (one panel each; log scale for ``log`` searches; choices as categories), the best trial
    marked with a star and its value, failed trials as red crosses along the bottom."""
    from matplotlib.figure import Figure  # lazy: matplotlib (heavy), only where a picture is drawn; no pyplot

    metric = study.metric or next(name for name in metric_names(rows) if name.endswith("_average"))
    trials = [(row, row.metrics.get(metric)) for row in rows]
    # NaN, infinities and 1e308 (a diverged trial) are neither plotted nor the best
    scored = [(row, value) for row, value in trials if row.status == COMPLETE and not math.isnan(_drawable(value))]
    pick = max if study.direction == "maximize" else min
    best = pick(scored, key=lambda item: item[1])[0] if scored else None
    unfinished = [row for row, value in trials if row.status != COMPLETE]
    columns = min(len(study.params), 3)
    rows_of_panels = math.ceil(len(study.params) / columns)
    figure = Figure(figsize=(max(4.5 * columns, 6.5), 1.2 + 3.4 * rows_of_panels), layout="constrained")
    panels = figure.subplots(rows_of_panels, columns, squeeze=False).ravel()
    metric_label = _metric_label(metric)
    values = [value for _, value in scored]
    bottom = min(values) - 0.08 * ((max(values) - min(values)) or 1.0) if values else 0.0  # failed trials, below the rest
    figure.suptitle(f"{heading}\nOptuna study: {metric_label}, {study.direction}", fontsize=10)
    for axes, (key, expression) in zip(panels, study.params.items()):
        positions, ticks = _parameter_positions([_override_value(row, key) for row in rows])
        xs = [positions.get(_override_value(row, key)) for row, _ in scored]
        axes.scatter([x for x in xs if x is not None], [v for x, (_, v) in zip(xs, scored) if x is not None],
                     color="tab:blue", label="trial")
        crosses = [positions.get(_override_value(row, key)) for row in unfinished]
        crosses = [x for x in crosses if x is not None]
        if crosses:
            axes.scatter(crosses, [bottom] * len(crosses), marker="x", color="tab:red", label="failed or unfinished")
        if best is not None and positions.get(_override_value(best, key)) is not None:
            x, y = positions[_override_value(best, key)], best.metrics[metric]
            axes.scatter([x], [y], marker="*", s=250, color="tab:orange", edgecolor="black", zorder=3,
                         label=f"best {format_value(y)} ({key}={short_floats(_override_value(best, key) or '')})")
        if ticks:
            axes.set_xticks(range(len(ticks)), ticks)
        elif "log" in expression and all(isinstance(x, float) and x > 0 for x in positions.values()):
            axes.set_xscale("log")
        axes.set(title=key, xlabel=short_floats(expression), ylabel=metric_label)
        axes.margins(x=0.12, y=0.15)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7, loc="best")
    for axes in panels[len(study.params):]:
        axes.set_axis_off()
    return figure


def _metric_label(metric: str) -> str:
    kind, field_name = split_metric_name(metric)
    if kind == "resources":
        return RESOURCE_TITLES.get(field_name, field_name)
    words = {"average": "average accuracy (%)", "forgetting": "forgetting", "bwt": "backward transfer",
             "forward_transfer": "forward transfer", "average_incremental": "average incremental accuracy (%)",
             "old_accuracy": "accuracy on old classes (%)", "new_accuracy": "accuracy on new classes (%)",
             "top5": "top-5 accuracy (%)", "test": "test accuracy (%)",
             "average_weighted": "accuracy over the test examples (%)",
             "average_incremental_weighted": "average incremental accuracy over the test examples (%)"}
    return f"{KIND_TITLES.get(kind, kind)} {words.get(field_name, field_name)}"


def _override_value(row: JobRow, key: str) -> str | None:
    """The value ``row``'s overrides give ``key`` (``model.lr=0.01`` -> ``0.01``), or None."""
    for item in row.overrides:
        if override_key(item) == key and "=" in item:
            return item.split("=", 1)[1]
    return None


def _parameter_positions(values: Sequence[str | None]) -> tuple[dict[str, float], list[str]]:
    """x positions of a parameter's values: the numbers themselves, or (when some value is not a
    number) one position per category, with the category names as tick labels."""
    present = [value for value in dict.fromkeys(values) if value is not None]
    try:
        return {value: float(value) for value in present}, []
    except ValueError:
        return {value: float(index) for index, value in enumerate(present)}, present


def plot_summary(rows: Sequence[JobRow], name: str = "", ended: bool | None = None, study: Study | None = None,
                 planned: int | None = None) -> bytes:
    """PNG bytes of :func:`summary_figure`."""
    buffer = io.BytesIO()
    summary_figure(rows, name, ended, study, planned).savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
