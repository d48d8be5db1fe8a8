"""``python -m mammoth.reproduce experiment=NAME [seeds=3] [OVERRIDES]``: run a preset over seeds
and compare its results with the published values of its ledger (:mod:`mammoth.reporting.ledger`);
``python -m mammoth.reproduce --list`` prints the whole ledger."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

from hydra import compose, initialize_config_module
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

import mammoth
from mammoth.config.value_checks import check_positive_int
from mammoth.errors import MammothError
from mammoth.reporting.ledger import LedgerEntry, comparison_table, entries_of, ledger_table, load_ledger, verdict
from mammoth.reporting.optimized_metric import optimized_value
from mammoth.reporting.results import RESULTS_NAME

USAGE = "usage: python -m mammoth.reproduce experiment=NAME [seeds=3] [output=DIR] [OVERRIDES] | --list"
DEFAULT_SEEDS = 3


def reproduce(preset: str, seeds: int = DEFAULT_SEEDS, overrides: Sequence[str] = (), output: Path | None = None,
              entries: Sequence[LedgerEntry] | None = None) -> tuple[str, bool]:
    """Run ``experiment=preset`` with seeds ``0..seeds-1`` (each in ``output/seed-S``, default
    ``reproduce/PRESET``), with ``overrides`` after the preset's, and compare the value of each of
    its ledger ``entries`` in every run's results.json with the published one. Returns the
    comparison table and whether every entry is reproduced."""
    check_positive_int("seeds", seeds)
    entries = list(entries) if entries is not None else entries_of(preset)
    output = Path("reproduce") / preset if output is None else output
    values: dict[str, list[float]] = {entry.metric: [] for entry in entries}
    for seed in range(seeds):
        directory = (output / f"seed-{seed}").resolve()
        mammoth.run(compose_preset(preset, seed, directory, overrides))
        results = json.loads((directory / RESULTS_NAME).read_text())
        for metric in values:
            values[metric].append(optimized_value(results, metric))
    reproduced = all(verdict(entry, values[entry.metric]) == "reproduced" for entry in entries)
    return comparison_table(entries, values), reproduced


def compose_preset(preset: str, seed: int, directory: Path, overrides: Sequence[str]) -> object:
    """The config of ``python -m mammoth experiment=PRESET seed=SEED output_dir=DIRECTORY OVERRIDES``."""
    with initialize_config_module(config_module="mammoth.app.conf", version_base="1.3"):
        return compose(config_name="config",
                       overrides=[f"experiment={preset}", f"seed={seed}", f"output_dir={directory}", *overrides])


def parse_arguments(argv: Sequence[str]) -> tuple[str, int, Path | None, list[str]]:
    """``(preset, seeds, output, overrides)`` from ``experiment=NAME seeds=N output=DIR ...``; a
    missing preset or a bad ``seeds`` raises a MammothError."""
    preset, seeds, output, overrides = None, DEFAULT_SEEDS, None, []
    for argument in argv:
        key, _, value = argument.partition("=")
        if key == "experiment":
            preset = value
        elif key == "seeds":
            try:
                seeds = check_positive_int("seeds", int(value))
            except ValueError:
                raise MammothError(f"seeds={value!r} is not allowed; allowed: an integer >= 1") from None
        elif key == "output":
            output = Path(value)
        else:
            overrides.append(argument)
    if not preset:
        raise MammothError(f"experiment=NAME is missing; {USAGE}")
    return preset, seeds, output, overrides


def main(argv: Sequence[str] | None = None) -> int:
    """The command: 0 when every entry is reproduced (or with ``--list``), 1 when one is not,
    2 on bad arguments (one ``Error:`` line)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv == ["--list"]:
            print(ledger_table(load_ledger()))
            return 0
        if not argv or argv[0] in ("-h", "--help"):
            print(USAGE)
            return 0 if argv else 2
        preset, seeds, output, overrides = parse_arguments(argv)
        table, reproduced = reproduce(preset, seeds, overrides, output)
    except MammothError as error:
        print(f"Error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001 - Hydra's and OmegaConf's errors for a bad override, in one line

        if not isinstance(error, (HydraException, OmegaConfBaseException)):
            raise
        print(f"Error: {(str(error).strip().splitlines() or [type(error).__name__])[0]}", file=sys.stderr)
        return 2
    print(f"experiment={preset}, {seeds} seed(s):")
    print(table)
    return 0 if reproduced else 1


if __name__ == "__main__":
    sys.exit(main())
