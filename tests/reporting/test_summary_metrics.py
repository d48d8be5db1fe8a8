"""The summary reports the metrics of issue 15 (forward transfer, average incremental, old/new,
top-5, training time and peak memory) where a job's results.json has them, and only then."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from mammoth.reporting.sweep_tables import format_summary, metric_names, metric_title
from mammoth.reporting.run_records import gather
from mammoth.reporting.summary_files import update_summary


def write_results(directory: Path, overrides: list[str], results: dict) -> None:
    (directory / ".hydra").mkdir(parents=True)
    (directory / ".hydra" / "overrides.yaml").write_text("".join(f"- {item}\n" for item in overrides))
    (directory / "results.json").write_text(json.dumps({"status": "complete", **results}))


def block(average: float, fwt: float | None, old: float, new: float, **extra: float) -> dict:
    return {"average": average, "forgetting": 10.0, "bwt": -10.0, "forward_transfer": fwt,
            "average_incremental": average + 5, "old_accuracy": old, "new_accuracy": new, **extra}


def test_new_metrics_get_columns_with_means_over_seeds(tmp_path: Path) -> None:
    for seed, (average, fwt, seconds) in enumerate([(40.0, 2.0, 10.0), (44.0, 4.0, 14.0)]):
        write_results(tmp_path / str(seed), [f"seed={seed}", "eval_future=true"], {
            "class_il": block(average, fwt, 30.0 + seed, 90.0, top5=70.0),
            "task_il": block(80.0, None, 75.0, 95.0),
            "resources": {"train_seconds": seconds, "peak_rss_mb": 500.0 + seed, "peak_cuda_mb": None},
        })
    rows = gather([tmp_path])
    assert rows[0].metrics["class_il_forward_transfer"] == 2.0 and "task_il_forward_transfer" not in rows[0].metrics
    assert metric_names(rows) == [
        "class_il_average", "class_il_forgetting", "class_il_bwt", "class_il_forward_transfer",
        "class_il_average_incremental", "class_il_old_accuracy", "class_il_new_accuracy", "class_il_top5",
        "task_il_average", "task_il_forgetting", "task_il_bwt", "task_il_average_incremental",
        "task_il_old_accuracy", "task_il_new_accuracy", "resources_train_seconds", "resources_peak_rss_mb",
    ]
    assert [metric_title(name) for name in ("class_il_forward_transfer", "task_il_old_accuracy", "resources_peak_rss_mb")] == [
        "Class-IL FWT", "Task-IL old", "peak RSS (MiB)"]
    text = format_summary(rows, "sweep")
    line = next(line for line in text.splitlines() if line.startswith("| eval_future=true"))
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    # FWT (2 + 4) / 2 = 3, sample std sqrt(2); training seconds 12 ± 2.83; peak RSS 500.5 ± 0.71
    assert cells[6] == "3.00 ± 1.41" and cells[-3:-1] == ["12.00 ± 2.83", "500.50 ± 0.71"]
    update_summary(tmp_path)
    lines = list(csv.DictReader(io.StringIO((tmp_path / "summary.csv").read_text())))
    assert float(lines[1]["class_il_top5"]) == 70.0 and float(lines[1]["resources_train_seconds"]) == 14.0


def test_jobs_without_the_new_metrics_keep_the_three_columns_per_kind(tmp_path: Path) -> None:
    write_results(tmp_path / "0", ["seed=0"], {"class_il": {"average": 40.0, "forgetting": None, "bwt": None}})
    rows = gather([tmp_path])
    assert rows[0].metrics == {"class_il_average": 40.0}  # null forgetting and bwt (joint) are not numbers
    assert metric_names(rows) == ["class_il_average", "class_il_forgetting", "class_il_bwt"]


def test_a_validation_run_gets_a_test_column_beside_its_validation_average(tmp_path: Path) -> None:
    write_results(tmp_path / "0", ["seed=0", "dataset.validation=0.1"], {
        "evaluated_on": "validation", "class_il": {"average": 40.0, "forgetting": 5.0, "bwt": -5.0},
        "test": {"class_il": {"accuracies": [30.0, 36.0], "average": 33.0}},
    })
    rows = gather([tmp_path])
    assert rows[0].metrics["class_il_test"] == 33.0 and rows[0].metrics["class_il_average"] == 40.0
    assert metric_names(rows) == ["class_il_average", "class_il_forgetting", "class_il_bwt", "class_il_test"]
    assert metric_title("class_il_test") == "Class-IL test"


def test_runs_of_tasks_of_unequal_size_get_the_averages_over_examples(tmp_path: Path) -> None:
    for seed, weighted in enumerate([60.0, 64.0]):
        write_results(tmp_path / str(seed), [f"seed={seed}", "dataset.base_classes=50", "dataset.increment=10"], {
            "class_il": {"average": 40.0, "forgetting": 10.0, "bwt": -10.0, "average_weighted": weighted,
                         "average_incremental_weighted": weighted + 10}})
    rows = gather([tmp_path])
    assert metric_names(rows) == ["class_il_average", "class_il_forgetting", "class_il_bwt",
                                  "class_il_average_weighted", "class_il_average_incremental_weighted"]
    assert [metric_title(name) for name in metric_names(rows)[3:]] == [
        "Class-IL over examples", "Class-IL avg incr. over examples"]
    line = next(line for line in format_summary(rows, "sweep").splitlines() if line.startswith("| dataset.base_classes=50"))
    # (60 + 64) / 2 = 62, sample std sqrt(8) = 2.83; then 72 ± 2.83
    assert [cell.strip() for cell in line.strip("|").split("|")][6:8] == ["62.00 ± 2.83", "72.00 ± 2.83"]


def test_the_nearest_mean_accuracy_gets_columns_of_its_own(tmp_path: Path) -> None:
    write_results(tmp_path / "0", ["seed=0", "model=er"], {
        "class_il": {"average": 40.0, "forgetting": 30.0, "bwt": -30.0, "top5": 70.0},
        "nme_class_il": {"average": 55.0, "forgetting": 12.0, "bwt": -12.0, "top5": 80.0},
    })
    rows = gather([tmp_path])
    assert rows[0].metrics["nme_class_il_average"] == 55.0 and rows[0].metrics["nme_class_il_top5"] == 80.0
    assert metric_names(rows) == ["class_il_average", "class_il_forgetting", "class_il_bwt", "class_il_top5",
                                  "nme_class_il_average", "nme_class_il_forgetting", "nme_class_il_bwt", "nme_class_il_top5"]
    assert metric_title("nme_class_il_average") == "NME Class-IL" and metric_title("nme_class_il_top5") == "NME Class-IL top-5"
    header = next(line for line in format_summary(rows, "sweep").splitlines() if "NME Class-IL" in line)
    assert "| NME Class-IL |" in header and "| Class-IL |" in header
def test_online_runs_get_their_stream_columns(tmp_path: Path) -> None:
    for seed, anytime in enumerate([50.0, 60.0]):
        write_results(tmp_path / str(seed), [f"seed={seed}", "dataset.stream=online"], {
            "class_il": {"average": 40.0, "forgetting": 5.0, "bwt": -5.0},
            "online": {"accuracy": 40.0, "anytime_accuracy": anytime, "forgetting": 7.0, "throughput": 1000.0 + seed,
                       "samples": 100, "eval_points": [50, 100], "eval_accuracies": [[80.0], [40.0, 40.0]]},
        })
    rows = gather([tmp_path])
    assert metric_names(rows) == ["class_il_average", "class_il_forgetting", "class_il_bwt",
                                  "online_anytime_accuracy", "online_forgetting", "online_throughput"]
    assert [metric_title(name) for name in metric_names(rows)[3:]] == ["anytime acc.", "online forgetting", "samples/s"]
    line = next(line for line in format_summary(rows, "sweep").splitlines() if line.startswith("| dataset.stream=online"))
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    assert cells[-4:-1] == ["55.00 ± 7.07", "7.00 ± 0.00", "1000.50 ± 0.71"]
