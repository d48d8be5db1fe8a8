"""python -m mammoth.reproduce: runs a preset over seeds and compares results.json with the
ledger, on seq-digits here (the ledger's presets need CIFAR and hours: tests/test_reproduce_ledger.py)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from mammoth.reporting.ledger import LedgerEntry
from mammoth.reproduce import main, parse_arguments, reproduce

ON_DIGITS = ["dataset=seq-digits", "dataset.n_epochs=1", "threads=1", "~logger"]


def test_reproduce_runs_each_seed_and_compares_the_mean_with_the_published_value(tmp_path: Path) -> None:
    entries = [LedgerEntry("sgd-seq-mnist", "a test", "class_il.average", 19.0, 5.0),
               LedgerEntry("sgd-seq-mnist", "a test", "task_il.average", 10.0, 1.0)]
    table, reproduced = reproduce("sgd-seq-mnist", 2, ON_DIGITS, tmp_path, entries)
    runs = [json.loads((tmp_path / f"seed-{seed}" / "results.json").read_text()) for seed in (0, 1)]
    assert [run["config"]["seed"] for run in runs] == [0, 1]
    assert runs[0]["config"]["model"]["lr"] == 0.03  # the preset's value
    class_il = [run["class_il"]["average"] for run in runs]
    task_il = [run["task_il"]["average"] for run in runs]
    rows = table.splitlines()[2:]
    assert rows[0].startswith(f"| `class_il.average` | 19 | {statistics.fmean(class_il):.2f} ± {statistics.stdev(class_il):.2f} | "
                              f"{class_il[0]:.2f}, {class_il[1]:.2f} | ± 5 | ")
    assert rows[1].endswith(f"| above by {statistics.fmean(task_il) - 10:.2f} |")  # sgd's Task-IL is far above 10
    assert reproduced is False


def test_the_command_lists_the_ledger_and_refuses_bad_arguments(capsys: pytest.CaptureFixture) -> None:
    assert main(["--list"]) == 0 and capsys.readouterr().out.startswith("| preset | published (± tolerance) | source |\n")
    assert main(["seeds=2"]) == 2
    assert capsys.readouterr().err.startswith("Error: experiment=NAME is missing; usage: python -m mammoth.reproduce")
    assert main(["experiment=sgd-seq-cifar100"]) == 2
    assert capsys.readouterr().err.startswith("Error: experiment=sgd-seq-cifar100 has no ledger entry (no published result); allowed: ")
    assert main(["experiment=der-seq-cifar100-500", "seeds=two"]) == 2
    assert capsys.readouterr().err == "Error: seeds='two' is not allowed; allowed: an integer >= 1\n"


def test_arguments_split_into_preset_seeds_output_and_overrides() -> None:
    assert parse_arguments(["experiment=er-seq-cifar10-500", "device=cuda", "seeds=5", "output=runs/r",
                            "dataset.root=/data"]) == ("er-seq-cifar10-500", 5, Path("runs/r"), ["device=cuda", "dataset.root=/data"])
    assert parse_arguments(["experiment=er-seq-cifar10-500"])[1:3] == (3, None)
