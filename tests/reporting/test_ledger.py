"""The reproduction ledger: every entry names a real preset, a metric its run reports and a
source; the README's table is `python -m mammoth.reproduce --list`; entries are checked."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

import composing
from mammoth.datasets import DATASETS
from mammoth.errors import ConfigError
from mammoth.reporting.ledger import LedgerEntry, comparison_table, entries_of, ledger_table, load_ledger, parse_entries, verdict
from mammoth.reporting.optimized_metric import optimized_metric_names

REPO = Path(__file__).resolve().parents[2]
LEDGER = load_ledger()


def test_the_ledger_holds_the_original_mammoths_published_numbers() -> None:
    assert {entry.preset: entry.value for entry in LEDGER} == {
        "coda-prompt-seq-cifar100-224": 86.25, "der-seq-cifar100-500": 36.6, "derpp-seq-cifar100-500": 38.25,
        "dualprompt-seq-cifar100-224": 86.51, "er-seq-cifar10-500": 63.39, "l2p-seq-cifar100-224": 83.83,
        "slca-seq-cifar100-224": 91.53,
    }


@pytest.mark.parametrize("entry", LEDGER, ids=[entry.preset for entry in LEDGER])
def test_every_entry_names_a_real_preset_a_reported_metric_and_a_source(entry: LedgerEntry) -> None:
    cfg = composing.compose_mammoth(f"experiment={entry.preset}", return_hydra_config=True)
    dataset = DATASETS.get(cfg.hydra.runtime.choices["dataset"]).target
    per_task = getattr(dataset, "n_classes_per_task", 0)
    assert entry.metric in optimized_metric_names(dataset.setting, top5=per_task > 5, cuda=True)
    assert re.search(r"reproduce\.json \(commit [0-9a-f]{7}\)|Table \d", entry.source), entry.source
    assert f", {cfg.hydra.runtime.choices['model'].replace('-', '_')} class-il: " in entry.source  # the method it ran
    assert list(cfg.ledger) == [{"source": entry.source, "metric": entry.metric, "value": entry.value,
                                 "tolerance": entry.tolerance}]  # recorded with the run's config


def test_the_readme_table_is_the_list_command(capsys: pytest.CaptureFixture) -> None:
    from mammoth.reproduce import main

    assert main(["--list"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == ledger_table(LEDGER)
    assert printed in (REPO / "README.md").read_text()


@pytest.mark.parametrize(("document", "message"), [
    ({"ledger": {"source": "x"}}, "experiment=p: ledger is {'source': 'x'}; allowed: a list of entries with source, metric, value, tolerance"),
    ({"ledger": [{"source": "x", "metric": "class_il.average", "value": 1}]},
     "experiment=p: ledger[0] has metric, source, value; allowed: exactly source, metric, value, tolerance"),
    ({"ledger": [{"source": " ", "metric": "class_il.average", "value": 1, "tolerance": 1}]},
     "experiment=p: ledger[0].source=' '; allowed: the paper and table, or the list it comes from"),
    ({"ledger": [{"source": "x", "metric": "average", "value": 1, "tolerance": 1}]},
     "experiment=p: ledger[0].metric='average'; allowed: KIND.FIELD of results.json (class_il.average)"),
    ({"ledger": [{"source": "x", "metric": "class_il.average", "value": 1, "tolerance": 0}]},
     "experiment=p: ledger[0].tolerance=0; allowed: a number > 0"),
])
def test_a_malformed_entry_is_refused_in_one_line(document: dict, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_entries("p", document)
    assert str(error.value) == message


def test_a_preset_without_entries_is_refused_naming_those_with_entries() -> None:
    with pytest.raises(ConfigError, match=r"^experiment=sgd-seq-mnist has no ledger entry \(no published result\); "
                                          r"allowed: coda-prompt-seq-cifar100-224, der-seq-cifar100-500, "):
        entries_of("sgd-seq-mnist")
    assert parse_entries("p", yaml.safe_load("model: {lr: 0.1}")) == []


def test_the_verdict_compares_the_mean_with_the_tolerance() -> None:
    entry = LedgerEntry("p", "s", "class_il.average", 50.0, 2.0)
    assert verdict(entry, [49.0, 52.5]) == "reproduced"  # mean 50.75
    assert verdict(entry, [53.0, 53.5]) == "above by 3.25"
    assert verdict(entry, [47.0]) == "below by 3.00"
    table = comparison_table([entry], {"class_il.average": [49.0, 53.0]})
    assert table.splitlines()[-1] == "| `class_il.average` | 50 | 51.00 ± 2.83 | 49.00, 53.00 | ± 2 | reproduced |"
