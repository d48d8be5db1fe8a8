"""The reproduction ledger: every entry names a real preset, a metric its run reports and a
source; the ledger page's table (docs/presets.md) is `python -m mammoth.reproduce --list`; entries are
checked."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

import composing
from mammoth.datasets import build_dataset
from mammoth.errors import ConfigError
from mammoth.models import MODELS
from mammoth.reporting.ledger import LedgerEntry, comparison_table, entries_of, ledger_table, load_ledger, parse_entries, verdict
from mammoth.reporting.optimized_metric import optimized_metric_names

REPO = Path(__file__).resolve().parents[2]
LEDGER = load_ledger()


DER_TABLE = "Buzzega et al. 2020 (DER) Table 2, as aimagelab/mammoth's README quotes it (commit 7ab9db9)"
# The class-incremental canon's papers (issue 25): preset -> (method, the start of its source). PODNet's Table 1
# (CIFAR100, 50 classes then 5 steps of 10) holds PODNet's number and, starred, LUCIR's own; WA's paper has no B50
# number and averages its steps without the first, so wa-seq-cifar100-b50-inc10 has no entry.
PAPER_SOURCES = {
    "podnet-seq-cifar100-b50-inc10": ("podnet", "Douillard et al. 2020 (PODNet, ECCV; arXiv 2004.13513) Table 1, CIFAR100 column '5 steps' "),
    "lucir-seq-cifar100-b50-inc10": ("lucir", "Hou et al. 2019 (LUCIR, CVPR), CIFAR-100 with 50 classes then 5 phases of 10 "),
}


def values_of(preset: str) -> dict[str, float]:
    return {entry.metric: entry.value for entry in LEDGER if entry.preset == preset}


def test_the_ledger_holds_the_published_numbers() -> None:
    # the DER paper's Table 2 (the original's best_args.py presets) and the original's reproduce.json
    assert values_of("der-seq-cifar10-500") == values_of("der-seq-cifar10") == {"class_il.average": 70.51, "task_il.average": 93.4}
    assert values_of("sgd-perm-mnist") == {"domain_il.average": 40.7}
    assert values_of("joint-seq-tinyimg") == {"class_il.average": 59.99, "task_il.average": 82.04}
    assert values_of("derpp-seq-mnist-5120") == {"class_il.average": 95.3, "task_il.average": 99.47}
    assert values_of("er-seq-cifar10-500") == {"class_il.average": 63.39}  # models/config/er.yaml: reproduce.json's
    assert values_of("der-seq-cifar100-500") == {"class_il.average": 36.6}
    assert values_of("slca-seq-cifar100-224") == {"class_il.average": 91.53}
    # B50 Inc10: average incremental accuracy over every seen class's test images (PyCIL's and the papers' measure)
    assert values_of("podnet-seq-cifar100-b50-inc10") == {"class_il.average_incremental_weighted": 64.83,
                                                         "nme_class_il.average_incremental_weighted": 64.48}
    assert values_of("lucir-seq-cifar100-b50-inc10") == {"class_il.average_incremental_weighted": 63.42,
                                                        "nme_class_il.average_incremental_weighted": 63.12}
    assert values_of("wa-seq-cifar100-b50-inc10") == {}
    from_table = {entry.preset for entry in LEDGER if entry.source == DER_TABLE}
    assert len(from_table) == 57 and len(LEDGER) == 103
    # every preset of Table 2's methods and benchmarks but the one from models/config has its entries
    for method in ("er", "der", "derpp"):
        for dataset in ("seq-cifar10", "seq-tinyimg", "perm-mnist", "rot-mnist", "seq-mnist"):
            assert {f"{method}-{dataset}-{size}" for size in (200, 500, 5120)} - from_table <= {"er-seq-cifar10-500"}


def test_every_entry_names_a_real_preset_a_reported_metric_and_a_source() -> None:
    for preset in dict.fromkeys(entry.preset for entry in LEDGER):
        cfg = composing.compose_mammoth(f"experiment={preset}", return_hydra_config=True)
        choices = cfg.hydra.runtime.choices
        dataset = build_dataset(cfg.dataset)  # its tasks as the preset sets them (no data read)
        top5 = all(len(dataset.task_classes(task)) > 5 for task in range(dataset.n_tasks))
        nme = getattr(MODELS.get(choices["model"]).target, "has_memory", False)  # nme_class_il.* for a method with a memory
        allowed = optimized_metric_names(dataset.setting, top5=top5, cuda=True, weighted=dataset.uneven_tasks, nme=nme)
        entries = [entry for entry in LEDGER if entry.preset == preset]
        for entry in entries:
            assert entry.metric in allowed, (preset, entry.metric)
            if entry.source == DER_TABLE:
                assert choices["model"] in ("sgd", "joint", "er", "der", "derpp")
                assert choices["dataset"] in ("seq-cifar10", "seq-tinyimg", "perm-mnist", "rot-mnist", "seq-mnist")
            elif preset in PAPER_SOURCES:
                method, source = PAPER_SOURCES[preset]
                assert choices["model"] == method and entry.source.startswith(source)
                assert dataset.task_sizes == (50, 10, 10, 10, 10, 10)  # the papers' split: B50 Inc10, 6 tasks
            else:
                assert re.match(r"aimagelab/mammoth scripts/reproduce\.json \(commit [0-9a-f]{7}\), ", entry.source)
                assert f", {choices['model'].replace('-', '_')} class-il: " in entry.source  # the method it ran
        recorded = [{"source": e.source, "metric": e.metric, "value": e.value, "tolerance": e.tolerance} for e in entries]
        assert OmegaConf.to_container(cfg.ledger) == recorded  # recorded with the run's config


def test_the_ledger_page_is_the_list_command(capsys: pytest.CaptureFixture) -> None:
    from mammoth.reproduce import main

    assert main(["--list"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == ledger_table(LEDGER)
    page = (REPO / "docs" / "presets.md").read_text()
    assert printed in page and page.count("\n| `") == printed.count("\n| `")  # the table, and no other row


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
    with pytest.raises(ConfigError, match=r"^experiment=sgd-seq-cifar100 has no ledger entry \(no published result\); "
                                          r"allowed: coda-prompt-seq-cifar100-224, der-perm-mnist-200, "):
        entries_of("sgd-seq-cifar100")
    assert parse_entries("p", yaml.safe_load("model: {lr: 0.1}")) == []


def test_the_verdict_compares_the_mean_with_the_tolerance() -> None:
    entry = LedgerEntry("p", "s", "class_il.average", 50.0, 2.0)
    assert verdict(entry, [49.0, 52.5]) == "reproduced"  # mean 50.75
    assert verdict(entry, [53.0, 53.5]) == "above by 3.25"
    assert verdict(entry, [47.0]) == "below by 3.00"
    table = comparison_table([entry], {"class_il.average": [49.0, 53.0]})
    assert table.splitlines()[-1] == "| `class_il.average` | 50 | 51.00 ± 2.83 | 49.00, 53.00 | ± 2 | reproduced |"
