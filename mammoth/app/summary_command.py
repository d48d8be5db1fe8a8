"""``python -m mammoth.summary``: print the summary tables of the runs under directories, and with
``--write`` write the summary files (:mod:`mammoth.reporting.summary_files`) into the first one.

    python -m mammoth.summary multirun/2026-01-01/12-00-00            # print the tables
    python -m mammoth.summary sweep_a sweep_b --write                   # and write the files into sweep_a
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from mammoth.errors import ConfigError
from mammoth.reporting.run_records import gather
from mammoth.reporting.summary_files import CSV_NAME, MARKDOWN_NAME, PLOT_NAME, update_summary
from mammoth.reporting.sweep_tables import format_summary


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mammoth.summary DIR [DIR ...] [--write]``: print the summary tables of the
    runs under the directories; with ``--write`` also write the files into the first one.
    Returns the exit status (2: a usage error, such as a directory without runs; 1: the files
    cannot be written)."""
    parser = argparse.ArgumentParser(
        prog="python -m mammoth.summary",
        description="Summarise mammoth runs and sweeps: one row per job, one row per configuration "
                    "(mean ± std over seeds).",
    )
    parser.add_argument("directories", nargs="+", type=Path, metavar="DIR", help="a run or sweep directory")
    parser.add_argument("--write", action="store_true",
                        help=f"also write {CSV_NAME}, {MARKDOWN_NAME} and {PLOT_NAME} into the first DIR")
    arguments = parser.parse_args(argv)
    roots = list(arguments.directories)
    title = " ".join(str(path) for path in roots)
    try:
        rows = update_summary(roots[0], roots[1:]) if arguments.write else gather(roots)
    except FileNotFoundError as error:  # a directory that does not exist or holds no runs
        print(f"Error: {error}", file=sys.stderr)
        return 2
    except (OSError, ConfigError) as error:  # the summary files cannot be written
        print(f"Error: cannot write the summary into {str(roots[0])!r}: {error}", file=sys.stderr)
        return 1
    print(format_summary(rows, title), end="")
    if arguments.write:
        print(f"Wrote {', '.join(str(roots[0] / name) for name in (CSV_NAME, MARKDOWN_NAME, PLOT_NAME))}")
    return 0
