"""The metrics the loop measures for results.json (issue 15 §2) on real seq-digits runs:
eval_future's matrix above the diagonal and the random network's accuracies, forward transfer
from them, old/new accuracy, per-task time and memory; a resumed run reports exactly the same
accuracies; a method that trains only at the end reports no forgetting or transfer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import mammoth
from mammoth.engine.checkpoint import RESTART, TrainingState, load_checkpoint, save_checkpoint
from mammoth.errors import ConfigError
from mammoth.reporting.metrics import forward_transfer
from mammoth.reporting.results import Measurements, format_table
import composing

ACCURACY_KEYS = ("matrix", "average", "forgetting", "bwt", "forward_transfer", "random_init", "average_incremental",
                 "old_accuracy", "new_accuracy", "old_accuracy_per_task", "new_accuracy_per_task")


def run(directory: Path, *overrides: str) -> dict:
    mammoth.run(composing.compose_run(directory, "threads=1", "dataset.n_epochs=1", "~logger", *overrides))
    return json.loads((directory / "results.json").read_text())


@pytest.fixture(scope="module")
def future_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run(tmp_path_factory.mktemp("future"), "eval_future=true")


def test_eval_future_fills_the_matrix_and_gives_forward_transfer(future_run: dict) -> None:
    for kind in ("class_il", "task_il"):
        block = future_run[kind]
        assert [len(row) for row in block["matrix"]] == [5] * 5
        assert all(value is not None for row in block["matrix"] for value in row)
        assert len(block["random_init"]) == 5 and all(0 <= value <= 100 for value in block["random_init"])
        expected = sum(block["matrix"][i - 1][i] - block["random_init"][i] for i in range(1, 5)) / 4
        assert block["forward_transfer"] == pytest.approx(expected)
        assert block["forward_transfer"] == forward_transfer(block["matrix"], block["random_init"])
    assert future_run["class_il"]["average"] == pytest.approx(sum(future_run["class_il"]["matrix"][-1]) / 5)


def test_old_and_new_accuracy_and_resources_per_task(future_run: dict) -> None:
    sizes = future_run["test_sizes"]
    assert len(sizes) == 5 and sum(sizes) == 359  # the digits test split
    block = future_run["class_il"]
    last = block["matrix"][-1]
    assert block["new_accuracy"] == last[-1]
    assert block["old_accuracy"] == pytest.approx(sum(a * n for a, n in zip(last[:4], sizes[:4])) / sum(sizes[:4]))
    assert block["old_accuracy_per_task"][0] is None and len(block["new_accuracy_per_task"]) == 5
    resources = future_run["resources"]
    assert len(resources["train_seconds_per_task"]) == 5
    assert resources["train_seconds"] == pytest.approx(sum(resources["train_seconds_per_task"]))
    assert len(resources["peak_rss_mb_per_task"]) == 5 and resources["peak_rss_mb"] > 10  # a Python with torch
    assert resources["peak_rss_mb_per_task"] == sorted(resources["peak_rss_mb_per_task"])  # a lifetime peak never falls
    assert resources["peak_cuda_mb"] is None  # a CPU run
    assert "top5" not in block  # seq-digits has 2 classes per task


def test_without_eval_future_nothing_above_the_diagonal_and_no_forward_transfer(tmp_path: Path) -> None:
    results = run(tmp_path)
    block = results["class_il"]
    assert block["matrix"][0][1:] == [None] * 4
    assert block["forward_transfer"] is None and block["random_init"] is None
    assert block["average_incremental"] == pytest.approx(sum(block["average_per_task"]) / 5)


def test_a_resumed_eval_future_run_reports_exactly_the_uninterrupted_accuracies(tmp_path: Path, future_run: dict) -> None:
    mammoth.run(composing.compose_run(tmp_path, "threads=1", "dataset.n_epochs=1", "~logger", "eval_future=true",
                                      "stop_after_task=2"))
    assert not (tmp_path / "results.json").exists()
    resumed = run(tmp_path, "eval_future=true", "resume=true")
    for kind in ("class_il", "task_il"):
        assert {key: resumed[kind][key] for key in ACCURACY_KEYS} == {key: future_run[kind][key] for key in ACCURACY_KEYS}
    assert len(resumed["resources"]["peak_rss_mb_per_task"]) == 5


def test_eval_future_must_match_on_resume(tmp_path: Path) -> None:
    mammoth.run(composing.compose_run(tmp_path, "threads=1", "dataset.n_epochs=1", "~logger", "stop_after_task=1"))
    with pytest.raises(ConfigError, match=r"differs from the checkpoint's in: eval_future"):
        run(tmp_path, "eval_future=true", "resume=true")


def test_joint_reports_no_forgetting_nor_transfer_and_says_why(tmp_path: Path) -> None:
    results = run(tmp_path, "model=joint", "eval_future=true")
    for kind in ("class_il", "task_il"):
        block = results[kind]
        assert block["forgetting"] is None and block["bwt"] is None and block["forward_transfer"] is None
        assert block["forgetting_over"].startswith("not computed: the method trains only after the last task")
        assert block["average"] == pytest.approx(sum(block["matrix"][-1]) / 5)
    with pytest.raises(ConfigError, match=r"^optimized_metric='class_il.forgetting' is not computed for Joint"):
        run(tmp_path / "refused", "model=joint", "optimized_metric=class_il.forgetting")


def test_joint_cumulative_trains_every_task_and_reports_forgetting(tmp_path: Path) -> None:
    block = run(tmp_path, "model=joint-cumulative")["class_il"]
    assert isinstance(block["forgetting"], float) and block["forgetting_over"].startswith("every task but the last")


def test_top5_where_every_task_has_more_than_5_classes(tmp_path: Path) -> None:
    results = run(tmp_path, "dataset.n_tasks=1", "optimized_metric=class_il.top5")
    block = results["class_il"]
    assert block["top5"] >= block["average"] and block["top5_per_task"] == [block["top5"]]
    assert "top5" not in results["task_il"]


class Plain(nn.Linear):
    """A module with the extra-state hooks a checkpoint reads."""

    def __init__(self) -> None:
        super().__init__(2, 2)

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass


def measured_state(**changes) -> TrainingState:
    state = TrainingState(2, {"class_il": [[90.0], [45.0, 80.0]]}, [1.0, 2.0], [0.1, 0.2],
                          random_init={"class_il": [50.0, 10.0, 0.0]}, future={"class_il": [[5.0, 1.0], [2.0]]},
                          top5=[[99.0], [90.0, 95.0]], peak_rss_mb=[600.0, 610.5])
    for key, value in changes.items():
        setattr(state, key, value)
    return state


def test_the_measurements_travel_in_the_checkpoint(tmp_path: Path) -> None:
    model = Plain()
    save_checkpoint(tmp_path / "checkpoint.pt", model, torch.Generator(), measured_state(), {"seed": 1})
    assert load_checkpoint(tmp_path / "checkpoint.pt", Plain(), torch.Generator(), {"seed": 1}) == measured_state()


@pytest.mark.parametrize(("change", "message"), [
    ({"future": {"class_il": [[5.0, 1.0]]}}, "future['class_il'] is [[5.0, 1.0]]; expected 2 row(s), row i with the tasks after i"),
    ({"random_init": {"class_il": [50.0, 101.0, 0.0]}}, "random_init['class_il'] is [50.0, 101.0, 0.0]; expected one percentage per task"),
    ({"future": {}}, "its random_init and future accuracies are not of the kinds class_il"),
    ({"top5": [[99.0]]}, "top5 is [[99.0]]; expected none or 2 row(s) of percentages"),
    ({"peak_rss_mb": [600.0, -1.0]}, "peak_rss_mb is [600.0, -1.0]; expected none or 2 size(s) >= 0"),
    ({"final_test": {"class_il": [50.0]}}, "final_test is {'class_il': [50.0]}; expected none or 2 percentage(s) per kind"),
])
def test_inconsistent_measurements_are_refused_in_one_line(tmp_path: Path, change: dict, message: str) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, Plain(), torch.Generator(), measured_state(**change), {"seed": 1})
    with pytest.raises(ConfigError) as error:
        load_checkpoint(path, Plain(), torch.Generator(), {"seed": 1})
    assert str(error.value) == f"checkpoint {path} is inconsistent: {message}; {RESTART}"


def test_with_a_validation_split_the_matrix_is_of_it_and_the_test_set_is_evaluated_at_the_end(tmp_path: Path) -> None:
    results = run(tmp_path / "full", "dataset.validation=0.2")
    assert results["evaluated_on"] == "validation"
    assert sum(results["test_sizes"]) < 359  # a fifth of the training data, not the 359 test digits
    for kind in ("class_il", "task_il"):
        test = results["test"][kind]
        assert len(test["accuracies"]) == 5 and test["average"] == pytest.approx(sum(test["accuracies"]) / 5)
    assert "Test: Class-IL" in format_table({"class_il": results["class_il"]["matrix"][-1:]}, 5,
                                           Measurements(validation=True, final_test={"class_il": [50.0] * 5}))
    mammoth.run(composing.compose_run(tmp_path / "resumed", "threads=1", "dataset.n_epochs=1", "~logger",
                                      "dataset.validation=0.2", "stop_after_task=4"))
    resumed = run(tmp_path / "resumed", "dataset.validation=0.2", "resume=true")
    assert resumed["test"] == results["test"] and resumed["class_il"]["matrix"] == results["class_il"]["matrix"]


def test_without_a_validation_split_the_matrix_is_of_the_test_set(future_run: dict) -> None:
    assert future_run["evaluated_on"] == "test" and "test" not in future_run


def test_on_cuda_each_task_records_the_peak_allocated_since_its_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from mammoth.engine import loop

    calls = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: calls.append(("reset", device.type)))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: 3 * 2**20 + 2**19)
    state = TrainingState.empty("class-il")
    cuda = torch.device("cuda", 0)
    loop._reset_peak_memory(cuda)
    loop._record_peak_memory(state, cuda)
    assert calls == [("reset", "cuda")] and state.peak_cuda_mb == [3.5]
    loop._reset_peak_memory(torch.device("cpu"))
    loop._record_peak_memory(state, torch.device("cpu"))
    assert calls == [("reset", "cuda")] and state.peak_cuda_mb == [3.5]  # nothing on the CPU
    assert len(state.peak_rss_mb) == 2 and state.peak_rss_mb[0] > 0


def test_the_final_test_data_is_the_benchmarks_test_split_without_the_validation_split() -> None:
    from mammoth.datasets import build_dataset
    from mammoth.app.runner import final_test_sources

    validated = build_dataset({"name": "seq-digits", "validation": 0.2}, seed=1)
    sources = final_test_sources(validated)()
    plain = build_dataset({"name": "seq-digits"}, seed=1)
    assert [len(source) for source in sources] == [len(plain.test_source(task)) for task in range(5)] == [72, 72, 72, 72, 71]
    assert all(torch.equal(source.labels, plain.test_source(task).labels) for task, source in enumerate(sources))
    assert final_test_sources(plain) is None
    # with a class order, the test split is relabelled as the run's tasks are
    permuted = build_dataset({"name": "seq-digits", "validation": 0.2, "class_order": "permute"}, seed=1)
    plain_permuted = build_dataset({"name": "seq-digits", "class_order": "permute"}, seed=1)
    for task, source in enumerate(final_test_sources(permuted)()):
        assert torch.equal(source.labels, plain_permuted.test_source(task).labels)
        assert torch.equal(source.read(torch.arange(len(source)), "cpu"),
                           plain_permuted.test_source(task).read(torch.arange(len(source)), "cpu"))


def test_a_method_with_a_memory_reports_the_nearest_mean_accuracy_and_resumes_it_exactly(tmp_path: Path, future_run: dict) -> None:
    overrides = ("model=er", "model.memory_per_class=5", "eval_future=true")
    value = mammoth.run(composing.compose_run(tmp_path / "whole", "threads=1", "dataset.n_epochs=1", "~logger", *overrides,
                                              "optimized_metric=nme_class_il.average"))
    whole = json.loads((tmp_path / "whole" / "results.json").read_text())
    block = whole["nme_class_il"]
    assert value == block["average"] and set(ACCURACY_KEYS) <= set(block)
    assert [len(row) for row in block["matrix"]] == [5] * 5
    assert block["random_init"] == [0.0] * 5  # the memory is empty before the first task: no class mean, nothing predicted
    assert block["matrix"][0][1:] == [0.0] * 4  # tasks not trained yet: their classes have no exemplar
    assert "nme_class_il" not in future_run  # sgd has no memory: no NME block, not zeros
    mammoth.run(composing.compose_run(tmp_path / "resumed", "threads=1", "dataset.n_epochs=1", "~logger", *overrides,
                                      "stop_after_task=2"))
    resumed = run(tmp_path / "resumed", *overrides, "resume=true")
    for kind in ("class_il", "task_il", "nme_class_il"):
        assert {key: resumed[kind][key] for key in ACCURACY_KEYS} == {key: whole[kind][key] for key in ACCURACY_KEYS}


def test_the_nearest_mean_top5_where_every_task_has_more_than_5_classes(tmp_path: Path) -> None:
    results = run(tmp_path, "model=er", "model.buffer_size=50", "dataset.n_tasks=1", "optimized_metric=nme_class_il.top5")
    block = results["nme_class_il"]
    assert block["top5"] >= block["average"] > 0 and block["top5_per_task"] == [block["top5"]]
    assert results["class_il"]["top5"] >= results["class_il"]["average"]
