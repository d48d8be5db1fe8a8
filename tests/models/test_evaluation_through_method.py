"""Evaluation goes through the method (``model(x)``), never the backbone behind its back."""

from __future__ import annotations

import json

import pytest
import torch
from hand_dataset import HandDataset
from composing import compose_run

import mammoth
from mammoth.backbones import build_backbone
from mammoth.datasets import build_dataset
from mammoth.datasets.source import InMemorySource
from mammoth.engine.evaluation import evaluate_tasks
from mammoth.models.sgd import SGD
from mammoth.engine.checkpoint import read_checkpoint
from task_tensors import task_tensors


class AlwaysClassOne(SGD):
    """Predicts through forward only: scores prefer class 1 over class 0 and class 3 over class 2."""

    def __init__(self, net, dataset) -> None:
        super().__init__(net, dataset)
        self.modes: list[tuple[bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append((self.training, self.net.training))
        return torch.tensor([0.0, 2.0, 0.5, 1.0]).expand(x.shape[0], 4)


def test_evaluate_tasks_scores_the_methods_forward_in_eval_mode(make_net) -> None:
    dataset = HandDataset("class-il", n_tasks=2, per_task=2)
    model = AlwaysClassOne(make_net(), dataset)
    model.net.forward = None  # calling the backbone directly would fail
    images = torch.zeros(4, 1, 4, 4, dtype=torch.uint8)
    test_sets = [InMemorySource(images, torch.tensor([0, 1, 1, 1])), InMemorySource(images, torch.tensor([2, 3, 3, 2]))]
    accuracies = evaluate_tasks(model, dataset.context(), test_sets, batch_size=3)
    # Class-IL: argmax over the 4 seen classes is always 1 -> task 0: 3/4 correct, task 1: none.
    assert accuracies["class_il"] == [75.0, 0.0]
    # Task-IL: task 0 picks 1 among {0, 1} (3/4); task 1 picks 3 among {2, 3} (2/4).
    assert accuracies["task_il"] == [75.0, 50.0]
    assert model.modes == [(False, False)] * 4  # 2 tasks x 2 batches, all in eval mode
    assert model.training and model.net.training  # restored


@torch.no_grad()
def _evaluate_backbone_directly(net, dataset) -> dict[str, list[float]]:
    """The evaluation as it was before it went through the method: argmax of ``net(x)``."""
    net.eval()
    rows: dict[str, list[float]] = {"class_il": [], "task_il": []}
    seen = dataset.task_classes(dataset.n_tasks - 1).stop
    for task in range(dataset.n_tasks):
        data = task_tensors(dataset, task)
        logits = net(dataset.test_transform(data.test_x))
        classes = dataset.task_classes(task)
        class_il = logits[:, :seen].argmax(1)
        task_il = logits[:, classes.start : classes.stop].argmax(1) + classes.start
        rows["class_il"].append(100.0 * int((class_il == data.test_y).sum()) / len(data.test_y))
        rows["task_il"].append(100.0 * int((task_il == data.test_y).sum()) / len(data.test_y))
    return rows


@pytest.mark.parametrize("name, overrides", [("sgd", ()), ("er", ("model.buffer_size=100",))])
def test_plain_methods_score_exactly_as_their_backbone(tmp_path, name, overrides) -> None:
    mammoth.run(compose_run(tmp_path, "threads=1", "dataset.n_epochs=1", f"model={name}", *overrides, seed=3))
    results = json.loads((tmp_path / "results.json").read_text())
    dataset = build_dataset({"name": "seq-digits", "n_epochs": 1}, seed=3)
    net = build_backbone("mnistmlp", num_classes=dataset.n_classes, input_shape=dataset.input_shape)
    state = read_checkpoint(tmp_path / "checkpoint.pt")["model"]
    net.load_state_dict({key.removeprefix("net."): value for key, value in state.items() if key.startswith("net.")})
    direct = _evaluate_backbone_directly(net, dataset)
    assert results["class_il"]["matrix"][-1] == direct["class_il"]
    assert results["task_il"]["matrix"][-1] == direct["task_il"]
    assert 20.0 < sum(direct["task_il"]) / 5 <= 100.0  # a trained network, not a trivial comparison
