"""The reproduction ledger: the published results the experiment presets reproduce.

A preset in ``mammoth/app/conf/experiment/`` that reproduces a published number carries it as
``ledger:`` entries, each with the ``source`` (paper and table, or the original Mammoth's
reproduction list), the ``metric`` (an ``optimized_metric`` name, ``class_il.average``), the
published ``value`` and a ``tolerance`` (points) within which a mean over seeds reproduces it.
``python -m mammoth.reproduce`` runs a preset over seeds and compares (:mod:`mammoth.reproduce`).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Sequence

import yaml

from mammoth.errors import ConfigError

#: The package folder of the presets (``experiment=NAME``).
PRESET_PACKAGE = "mammoth.app.conf"
PRESET_FOLDER = "experiment"
ENTRY_KEYS = ("source", "metric", "value", "tolerance")


@dataclass(frozen=True)
class LedgerEntry:
    """One published result a preset reproduces."""

    preset: str
    source: str
    metric: str
    value: float
    tolerance: float


def preset_texts() -> dict[str, str]:
    """Every preset's YAML text by name (``der-seq-cifar100-500``), in name order."""
    # found, not imported: importing mammoth's config package would serve its options to Hydra
    folder = Path(next(iter(find_spec(PRESET_PACKAGE).submodule_search_locations))) / PRESET_FOLDER
    texts = {item.name[: -len(".yaml")]: item.read_text() for item in folder.iterdir() if item.name.endswith(".yaml")}
    return dict(sorted(texts.items()))


def parse_entries(preset: str, document: Any) -> list[LedgerEntry]:
    """The ``ledger:`` entries of one preset's YAML document (none without the key); an entry
    without a source, with a metric not of the form ``KIND.FIELD``, or a value or tolerance that
    is not a positive number raises a one-line ConfigError naming the preset and the entry."""
    entries = document.get("ledger") if isinstance(document, dict) else None
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ConfigError(f"experiment={preset}: ledger is {entries!r}; allowed: a list of entries with {', '.join(ENTRY_KEYS)}")
    parsed = []
    for index, item in enumerate(entries):
        where = f"experiment={preset}: ledger[{index}]"
        if not isinstance(item, dict) or sorted(item) != sorted(ENTRY_KEYS):
            found = ", ".join(sorted(map(str, item))) if isinstance(item, dict) else repr(item)
            raise ConfigError(f"{where} has {found}; allowed: exactly {', '.join(ENTRY_KEYS)}")
        if not isinstance(item["source"], str) or not item["source"].strip():
            raise ConfigError(f"{where}.source={item['source']!r}; allowed: the paper and table, or the list it comes from")
        if not isinstance(item["metric"], str) or item["metric"].count(".") != 1:
            raise ConfigError(f"{where}.metric={item['metric']!r}; allowed: KIND.FIELD of results.json (class_il.average)")
        for key in ("value", "tolerance"):
            if isinstance(item[key], bool) or not isinstance(item[key], (int, float)) or item[key] <= 0:
                raise ConfigError(f"{where}.{key}={item[key]!r}; allowed: a number > 0")
        parsed.append(LedgerEntry(preset, item["source"].strip(), item["metric"], float(item["value"]), float(item["tolerance"])))
    return parsed


def load_ledger() -> list[LedgerEntry]:
    """Every ledger entry of every preset, in preset order."""
    return [entry for name, text in preset_texts().items() for entry in parse_entries(name, yaml.safe_load(text))]


def entries_of(preset: str, ledger: Sequence[LedgerEntry] | None = None) -> list[LedgerEntry]:
    """The entries of ``preset``; a preset without any raises a ConfigError listing those with entries."""
    ledger = load_ledger() if ledger is None else ledger
    found = [entry for entry in ledger if entry.preset == preset]
    if not found:
        names = list(dict.fromkeys(entry.preset for entry in ledger))
        raise ConfigError(f"experiment={preset} has no ledger entry (no published result); allowed: {', '.join(names)}")
    return found


def ledger_table(ledger: Sequence[LedgerEntry]) -> str:
    """The ledger as a Markdown table, one row per preset: its metrics with the published value
    and tolerance (``class_il.average`` 70.51 ± 2), and the source(s)."""
    presets: dict[str, list[LedgerEntry]] = {}
    for entry in ledger:
        presets.setdefault(entry.preset, []).append(entry)
    lines = ["| preset | published (± tolerance) | source |", "|---|---|---|"]
    for preset, entries in presets.items():
        published = ", ".join(f"`{entry.metric}` {entry.value:g} ± {entry.tolerance:g}" for entry in entries)
        lines.append(f"| `{preset}` | {published} | {'; '.join(dict.fromkeys(entry.source for entry in entries))} |")
    return "\n".join(lines)


def verdict(entry: LedgerEntry, values: Sequence[float]) -> str:
    """``reproduced`` when the mean of ``values`` is within ``entry.tolerance`` of the published
    value, else ``above by X`` / ``below by X`` (points, two decimals)."""
    difference = statistics.fmean(values) - entry.value
    if abs(difference) <= entry.tolerance:
        return "reproduced"
    return f"{'above' if difference > 0 else 'below'} by {abs(difference):.2f}"


def comparison_table(entries: Sequence[LedgerEntry], values: dict[str, list[float]]) -> str:
    """Ours against the published values: metric, published, ours (mean ± sample std over the
    seeds, and each seed's), tolerance, verdict; ``values`` maps each entry's metric to its seeds' values."""
    lines = ["| metric | published | ours (mean ± std) | seeds | tolerance | verdict |", "|---|---|---|---|---|---|"]
    for entry in entries:
        ours = values[entry.metric]
        spread = f" ± {statistics.stdev(ours):.2f}" if len(ours) > 1 else ""
        seeds = ", ".join(f"{value:.2f}" for value in ours)
        lines.append(f"| `{entry.metric}` | {entry.value:g} | {statistics.fmean(ours):.2f}{spread} | {seeds} | "
                     f"± {entry.tolerance:g} | {verdict(entry, ours)} |")
    return "\n".join(lines)
