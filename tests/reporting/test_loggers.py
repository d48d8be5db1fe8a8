"""The logger config group: metrics.csv (the default), TensorBoard, wandb (offline), several at
once, the registry's refusals, and the per-epoch loss in the log when progress bars are off."""

from __future__ import annotations

import csv
import json
import logging
import re
import struct
from pathlib import Path

import pytest

import mammoth
from mammoth.errors import ConfigError
from mammoth.reporting.loggers import (
    CSV_COLUMNS, CsvLogger, RunInfo, RunLogger, build_loggers, output_paths, register_logger, task_metrics,
)
import composing
from log_records import mammoth_log_records
from registries import restored

N_TASKS, N_EPOCHS = 5, 2  # seq-digits


def compose_run(output_dir: Path, *overrides: str):
    return composing.compose_run(output_dir, "threads=1", f"dataset.n_epochs={N_EPOCHS}", *overrides)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def read_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the TensorBoard event files in ``log_dir``: tag -> [(step, value)] (TFRecord framing)."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


@pytest.fixture(scope="module")
def default_run(tmp_path_factory) -> tuple[Path, float, list[logging.LogRecord]]:
    """One seq-digits run with the default logger; its directory, return value and log records."""
    run_dir = tmp_path_factory.mktemp("default")
    with mammoth_log_records() as records:
        value = mammoth.run(compose_run(run_dir))
    return run_dir, value, records


def test_default_logger_is_csv(tmp_path):
    cfg = compose_run(tmp_path)
    assert dict(cfg.logger) == {"csv": {"name": "csv", "filename": "metrics.csv"}}


def test_metrics_csv_columns_and_losses(default_run):
    run_dir, _, _ = default_run
    rows = read_csv(run_dir / "metrics.csv")
    assert tuple(rows[0]) == CSV_COLUMNS == ("task", "epoch", "kind", "metric", "evaluated_task", "value")
    losses = [row for row in rows if row["metric"] == "loss"]
    assert [(row["task"], row["epoch"]) for row in losses] == [
        (str(task), str(epoch)) for task in range(1, N_TASKS + 1) for epoch in range(1, N_EPOCHS + 1)
    ]
    assert all(row["kind"] == "train" and row["evaluated_task"] == "" and 0.0 < float(row["value"]) < 10.0 for row in losses)


def test_metrics_csv_accuracies_match_results_json(default_run):
    run_dir, _, _ = default_run
    results = json.loads((run_dir / "results.json").read_text())
    rows = read_csv(run_dir / "metrics.csv")
    for kind in ("class_il", "task_il"):
        accuracy = {(int(r["task"]), int(r["evaluated_task"])): float(r["value"])
                    for r in rows if r["kind"] == kind and r["metric"] == "accuracy"}
        expected = {(i + 1, j + 1): value for i, row in enumerate(results[kind]["matrix"])
                    for j, value in enumerate(row) if value is not None}
        assert accuracy == expected and len(expected) == 15  # 1 + 2 + 3 + 4 + 5 tasks evaluated
        averages = {int(r["task"]): float(r["value"]) for r in rows if r["kind"] == kind and r["metric"] == "average"}
        for task in range(1, N_TASKS + 1):
            seen = [expected[task, j] for j in range(1, task + 1)]
            assert averages[task] == pytest.approx(sum(seen) / task)
        last = {r["metric"]: float(r["value"]) for r in rows if r["kind"] == kind and r["task"] == str(N_TASKS)
                and r["metric"] in ("average", "forgetting", "bwt")}
        assert last == {field: results[kind][field] for field in ("average", "forgetting", "bwt")}


def test_epoch_losses_go_to_the_log_when_progress_bars_are_off(default_run):
    run_dir, _, records = default_run  # pytest's stderr is not a terminal: tqdm's bars are off
    logged = [re.fullmatch(r"task (\d)/5, epoch (\d)/2: loss (\d+\.\d{4})", record.getMessage()) for record in records]
    logged = [(int(m[1]), int(m[2]), float(m[3])) for m in logged if m]
    csv_losses = [(int(r["task"]), int(r["epoch"]), round(float(r["value"]), 4))
                  for r in read_csv(run_dir / "metrics.csv") if r["metric"] == "loss"]
    assert logged == csv_losses and len(logged) == N_TASKS * N_EPOCHS


def test_epoch_losses_stay_out_of_the_log_when_progress_bars_show(tmp_path, monkeypatch, caplog):
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    with caplog.at_level(logging.INFO, logger="mammoth"):
        mammoth.run(compose_run(tmp_path, "dataset.n_epochs=1", "~logger", "stop_after_task=1"))
    messages = [record.getMessage() for record in caplog.records]
    assert "task 1/5: Class-IL" in " ".join(messages)
    assert not any(re.search(r"epoch \d+/\d+", message) for message in messages)


def test_csv_logger_rows_computed_by_hand(tmp_path):
    run = RunInfo(run_dir=tmp_path, title="t", config={}, n_tasks=2, n_epochs=1)
    logger = CsvLogger(run)
    logger.log_epoch(0, 0, 0.5)
    logger.log_task(0, {"class_il": [[80.0]]})
    logger.log_epoch(1, 0, 0.25)
    logger.log_task(1, {"class_il": [[80.0], [20.0, 60.0]]})
    logger.close()
    with (tmp_path / "metrics.csv").open(newline="") as file:
        rows = list(csv.reader(file))
    assert rows == [
        list(CSV_COLUMNS),
        ["1", "1", "train", "loss", "", "0.5"],
        ["1", "", "class_il", "accuracy", "1", "80.0"],
        ["1", "", "class_il", "average", "", "80.0"],
        ["1", "", "class_il", "forgetting", "", "0.0"],
        ["1", "", "class_il", "bwt", "", "0.0"],
        ["2", "1", "train", "loss", "", "0.25"],
        ["2", "", "class_il", "accuracy", "1", "20.0"],
        ["2", "", "class_il", "accuracy", "2", "60.0"],
        ["2", "", "class_il", "average", "", "40.0"],      # (20 + 60) / 2
        ["2", "", "class_il", "forgetting", "", "60.0"],   # 80 - 20
        ["2", "", "class_il", "bwt", "", "-60.0"],         # 20 - 80
    ]


def test_a_method_that_trains_only_at_the_end_logs_no_forgetting_nor_bwt(tmp_path):
    run = RunInfo(run_dir=tmp_path, title="t", config={}, n_tasks=2, n_epochs=1, trains_only_at_end=True)
    logger = CsvLogger(run)
    logger.log_task(0, {"class_il": [[50.0]]})
    logger.log_task(1, {"class_il": [[50.0], [90.0, 95.0]]})
    logger.close()
    with (tmp_path / "metrics.csv").open(newline="") as file:
        rows = list(csv.reader(file))
    assert [row[3] for row in rows[1:]] == ["accuracy", "average", "accuracy", "accuracy", "average"]
    assert task_metrics({"class_il": [[50.0], [90.0, 95.0]]}, run.summary_fields) == {
        "class_il/accuracy_task_1": 90.0, "class_il/accuracy_task_2": 95.0, "class_il/average": 92.5}


def test_csv_logger_on_resume_keeps_finished_tasks_and_rewrites_the_rest(tmp_path):
    run = RunInfo(run_dir=tmp_path, title="t", config={}, n_tasks=3, n_epochs=1)
    first = CsvLogger(run)
    first.log_epoch(0, 0, 0.5)
    first.log_epoch(1, 0, 0.75)  # task 2 was interrupted after this epoch
    first.close()
    resumed = CsvLogger(RunInfo(run_dir=tmp_path, title="t", config={}, n_tasks=3, n_epochs=1, resume=True))
    resumed.log_epoch(1, 0, 0.25)
    resumed.close()
    rows = read_csv(tmp_path / "metrics.csv")
    assert [(r["task"], r["value"]) for r in rows] == [("1", "0.5"), ("2", "0.25")]


def test_task_metrics_computed_by_hand():
    metrics = task_metrics({"task_il": [[90.0], [70.0, 100.0]]})
    assert metrics == {"task_il/accuracy_task_1": 70.0, "task_il/accuracy_task_2": 100.0,
                       "task_il/average": 85.0, "task_il/forgetting": 20.0, "task_il/bwt": -20.0}


@pytest.mark.parametrize(
    ("selection", "message"),
    [
        ({"csv": {"name": "tensorbord"}}, r"unknown logger 'tensorbord'; allowed: csv, tensorboard, wandb \(did you mean 'tensorboard'\?\)"),
        ({"mlflow": {}}, r"unknown logger 'mlflow'; allowed: csv, tensorboard, wandb"),
        ({"csv": {"name": "csv", "path": "x.csv"}}, r"unknown option 'path' for logger 'csv' \(logger.csv.path\); its options: filename"),
        ({"x": {"name": "os.system"}}, r"unknown logger 'os.system'; allowed: csv, tensorboard, wandb"),
    ],
)
def test_unknown_loggers_and_options_are_refused(tmp_path, selection, message):
    with pytest.raises(ConfigError, match=f"^{message}$"):
        build_loggers(selection, RunInfo(run_dir=tmp_path, title="t", config={}, n_tasks=1, n_epochs=1))


def test_a_target_in_a_logger_config_is_not_run(tmp_path):
    selection = {"csv": {"name": "csv", "_target_": "os.system"}}
    with pytest.raises(ConfigError, match=r"unknown option '_target_' for logger 'csv'"):
        build_loggers(selection, RunInfo(run_dir=tmp_path, title="t", config={}, n_tasks=1, n_epochs=1))


def test_a_user_logger_config_picks_a_registered_logger_by_name(tmp_path):
    loggers = build_loggers({"mine": {"name": "CSV", "filename": "mine.csv"}},
                            RunInfo(run_dir=tmp_path, title="t", config={}, n_tasks=1, n_epochs=1))
    assert [type(logger) for logger in loggers] == [CsvLogger]
    loggers[0].close()
    assert (tmp_path / "mine.csv").read_text().splitlines() == [",".join(CSV_COLUMNS)]


INSIDE = "allowed: a relative path inside the run directory, without '..' and without symlinks leading out"


@pytest.mark.parametrize(("selection", "message"), [
    ({"mine": {"name": "csv", "filename": "/tmp/metrics.csv"}}, "logger.mine.filename=/tmp/metrics.csv is an absolute path"),
    ({"csv": {"filename": "../../.bashrc"}}, "logger.csv.filename=../../.bashrc goes up with '..'"),
    ({"tensorboard": {"log_dir": "../tb"}}, "logger.tensorboard.log_dir=../tb goes up with '..'"),
])
def test_logger_paths_outside_the_run_directory_are_refused_before_anything_is_written(tmp_path, selection, message):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(ConfigError) as error:
        build_loggers(selection, RunInfo(run_dir=run_dir, title="t", config={}, n_tasks=1, n_epochs=1))
    assert str(error.value) == f"{message}; {INSIDE}"
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["run"]


@pytest.mark.parametrize("selection, link, key", [
    ({"wandb": {"mode": "offline"}}, "wandb", "logger.wandb=wandb"),
    ({"tensorboard": {}}, "tensorboard", "logger.tensorboard.log_dir=tensorboard"),
])
def test_a_logger_directory_planted_as_a_symlink_out_is_refused(tmp_path, selection, link, key):
    run_dir, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    run_dir.mkdir()
    elsewhere.mkdir()
    (run_dir / link).symlink_to(elsewhere)
    with pytest.raises(ConfigError) as error:
        build_loggers(selection, RunInfo(run_dir=run_dir, title="t", config={}, n_tasks=1, n_epochs=1))
    assert str(error.value) == f"{key} leads out of the run directory {run_dir} through a symlink (to {elsewhere}); {INSIDE}"
    assert list(elsewhere.iterdir()) == []


def test_output_paths_lists_every_loggers_paths_with_their_defaults():
    selection = {"csv": {}, "tb": {"name": "tensorboard", "log_dir": "runs/tb"}, "wandb": {"mode": "offline"}}
    assert output_paths(selection) == {"logger.csv.filename": "metrics.csv", "logger.tb.log_dir": "runs/tb",
                                       "logger.wandb": "wandb"}


def test_a_metrics_csv_planted_as_a_symlink_out_is_refused_and_its_target_untouched(tmp_path):
    run_dir, target = tmp_path / "run", tmp_path / "shell_rc"
    run_dir.mkdir()
    target.write_text("export PATH=/usr/bin\n")
    (run_dir / "metrics.csv").symlink_to(target)
    with pytest.raises(ConfigError) as error:
        mammoth.run(compose_run(run_dir, "dataset.n_epochs=1"))
    assert str(error.value) == (
        f"logger.csv.filename=metrics.csv leads out of the run directory {run_dir} through a symlink (to {target}); {INSIDE}")
    assert target.read_text() == "export PATH=/usr/bin\n"
    assert not (run_dir / "results.json").exists()


def test_a_metrics_csv_linked_to_another_file_of_the_run_is_refused_and_that_file_untouched(tmp_path):
    (tmp_path / "results.json").write_text("{}")
    (tmp_path / "metrics.csv").symlink_to(tmp_path / "results.json")
    with pytest.raises(ConfigError, match=rf"^{tmp_path / 'metrics.csv'} is a symbolic link \(to {tmp_path / 'results.json'}\); "):
        CsvLogger(RunInfo(run_dir=tmp_path, title="t", config={}, n_tasks=1, n_epochs=1))
    assert (tmp_path / "results.json").read_text() == "{}"


def test_a_csv_file_in_a_subdirectory_of_the_run_is_written_there(tmp_path):
    logger = CsvLogger(RunInfo(run_dir=tmp_path, title="t", config={}, n_tasks=1, n_epochs=1), filename="logs/m.csv")
    logger.log_epoch(0, 0, 0.5)
    logger.close()
    assert read_csv(tmp_path / "logs" / "m.csv") == [
        {"task": "1", "epoch": "1", "kind": "train", "metric": "loss", "evaluated_task": "", "value": "0.5"}]


def test_no_logger_writes_no_metrics_file(tmp_path):
    mammoth.run(compose_run(tmp_path, "logger=[]", "dataset.n_epochs=1"))
    assert (tmp_path / "results.json").is_file()
    assert not (tmp_path / "metrics.csv").exists() and not (tmp_path / "tensorboard").exists()


def test_csv_and_tensorboard_at_once(tmp_path):
    cfg = compose_run(tmp_path, "logger=[csv,tensorboard]", "dataset.n_epochs=1")
    assert sorted(cfg.logger) == ["csv", "tensorboard"]
    mammoth.run(cfg)
    results = json.loads((tmp_path / "results.json").read_text())
    losses = [float(r["value"]) for r in read_csv(tmp_path / "metrics.csv") if r["metric"] == "loss"]
    assert len(losses) == N_TASKS
    scalars = read_scalars(tmp_path / "tensorboard")
    assert [step for step, _ in scalars["train/loss"]] == [1, 2, 3, 4, 5]  # one epoch per task
    assert [value for _, value in scalars["train/loss"]] == pytest.approx(losses, rel=1e-6)  # float32 in the file
    assert [step for step, _ in scalars["class_il/average"]] == [1, 2, 3, 4, 5]
    assert scalars["class_il/average"][-1][1] == pytest.approx(results["class_il"]["average"], rel=1e-6)
    assert scalars["task_il/forgetting"][-1][1] == pytest.approx(results["task_il"]["forgetting"], rel=1e-6, abs=1e-5)
    assert [value for _, value in scalars["class_il/accuracy_task_1"]] == pytest.approx(
        [row[0] for row in results["class_il"]["matrix"]], rel=1e-6)


def test_wandb_offline_run_is_written_inside_the_run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    mammoth.run(compose_run(run_dir, "logger=wandb", "dataset.n_epochs=1", "logger.wandb.run_name=digits-test"))
    import wandb

    wandb.teardown()  # the wandb service writes the run file in the background; at exit it is complete
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    [records] = list(runs[0].glob("run-*.wandb"))
    content = records.read_bytes()
    for expected in (b"train/loss", b"class_il/average", b"task_il/forgetting", b"digits-test"):
        assert expected in content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing written outside the run dir


def test_a_resume_may_change_the_loggers_and_metrics_csv_matches_an_uninterrupted_run(tmp_path):
    mammoth.run(compose_run(tmp_path / "whole", "dataset.n_epochs=1"))
    mammoth.run(compose_run(tmp_path / "part", "dataset.n_epochs=1", "stop_after_task=2"))
    value = mammoth.run(compose_run(tmp_path / "part", "dataset.n_epochs=1", "resume=true",
                                    "logger=[csv,tensorboard]", "optimized_metric=task_il.average"))
    results = json.loads((tmp_path / "part" / "results.json").read_text())
    assert value == results["task_il"]["average"]
    assert (tmp_path / "part" / "metrics.csv").read_text() == (tmp_path / "whole" / "metrics.csv").read_text()
    assert [step for step, _ in read_scalars(tmp_path / "part" / "tensorboard")["class_il/average"]] == [3, 4, 5]


@pytest.mark.parametrize(("name", "module"), [("tensorboard", "tensorboardX"), ("wandb", "wandb")])
def test_a_logger_whose_package_is_missing_names_the_extra(tmp_path, monkeypatch, name, module):
    import sys

    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=rf"^logger={name} needs the {module} package, which is not installed; "
                                          r"install it with: pip install 'mammoth-cl\[loggers\]'$"):
        build_loggers({name: {}}, RunInfo(run_dir=tmp_path, title="t", config={}, n_tasks=1, n_epochs=1))


class Recorder(RunLogger):
    """Records every event; raises in log_task after task ``fail_at`` (from 0) when set."""

    def __init__(self, run: RunInfo, fail_at: int | None = None) -> None:
        super().__init__(run)
        self.fail_at, self.events = fail_at, []
        RECORDED.append(self)

    def log_epoch(self, task, epoch, loss):
        self.events.append(("epoch", task, epoch))

    def log_task(self, task, accuracies):
        self.events.append(("task", task, len(accuracies["class_il"])))
        if task == self.fail_at:
            raise RuntimeError("logger failed")

    def log_results(self, results):
        self.events.append(("results", results["status"]))

    def close(self, failed=False):
        self.events.append(("close", failed))


RECORDED: list[Recorder] = []


@pytest.fixture
def recorder():
    from mammoth.reporting.loggers import LOGGERS

    with restored(LOGGERS):
        register_logger("recorder", Recorder)
        RECORDED.clear()
        yield RECORDED


def test_a_registered_logger_sees_the_runs_events_in_order(tmp_path, recorder):
    cfg = composing.compose_mammoth(f"output_dir={tmp_path}", "device=cpu", "threads=1", "dataset.n_epochs=2", "~logger")
    cfg.logger = {"rec": {"name": "recorder"}}
    mammoth.run(cfg)
    [logger] = recorder
    assert logger.events == [
        *[event for task in range(5) for event in (("epoch", task, 0), ("epoch", task, 1), ("task", task, task + 1))],
        ("results", "complete"), ("close", False),
    ]
    assert logger.run.n_tasks == 5 and logger.run.n_epochs == 2 and logger.run.run_dir == tmp_path
    assert logger.run.title == "seq-digits · sgd · mnistmlp"


def test_loggers_are_closed_as_failed_when_the_run_fails(tmp_path, recorder):
    cfg = composing.compose_mammoth(f"output_dir={tmp_path}", "device=cpu", "threads=1", "dataset.n_epochs=1", "~logger")
    cfg.logger = {"rec": {"name": "recorder", "fail_at": 1}}
    with pytest.raises(RuntimeError, match="logger failed"):
        mammoth.run(cfg)
    [logger] = recorder
    assert logger.events == [("epoch", 0, 0), ("task", 0, 1), ("epoch", 1, 0), ("task", 1, 2), ("close", True)]
    assert not (tmp_path / "results.json").exists()


def test_a_duplicate_logger_name_is_refused_and_the_first_kept(recorder):
    from mammoth.reporting.loggers import LOGGERS

    class Other(Recorder):
        pass

    with pytest.raises(ConfigError) as error:
        register_logger("Recorder", Other)
    assert str(error.value).startswith(f"duplicate logger name 'recorder': already registered by {__name__}.Recorder (")
    assert f"registered again by {__name__}.{Other.__qualname__} (" in str(error.value)
    assert LOGGERS.get("recorder").target is Recorder and LOGGERS.names() == ["csv", "recorder", "tensorboard", "wandb"]


def test_only_run_logger_classes_can_be_registered():
    with pytest.raises(ConfigError, match=r"^cannot register <built-in function system> as logger 'shell': "
                                          r"not a subclass of mammoth.reporting.loggers.RunLogger$"):
        import os

        register_logger("shell", os.system)


def test_a_csv_filename_that_is_a_directory_is_one_line(tmp_path):
    (tmp_path / "logs").mkdir()
    with pytest.raises(ConfigError) as error:
        CsvLogger(RunInfo(run_dir=tmp_path, title="t", config={}, n_tasks=1, n_epochs=1), filename="logs")
    assert str(error.value) == (
        f"logger.csv.filename: cannot write {tmp_path / 'logs'}: is a directory; allowed: a file name inside the run directory")


