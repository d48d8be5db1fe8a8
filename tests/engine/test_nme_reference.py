"""Fidelity of the nearest-mean-of-exemplars accuracy to PyCIL's own ``_reduce_exemplar`` (class
means) and ``_eval_nme`` / ``_evaluate`` (rankings, top-1, top-5), run by scripts/reference_nme.py
on the same tiny network, memory and test examples (tests/engine/data/nme_reference.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from hand_dataset import HandDataset
from mammoth.datasets.source import InMemorySource
from mammoth.engine.evaluation import evaluate_tasks, memory_class_means, nme_scores

REFERENCE = json.loads((Path(__file__).parent / "data" / "nme_reference.json").read_text())


class TinyMethod(nn.Module):
    """A method with the reference's memory; its features are the reference network's, relu(x W^T + b)."""

    has_memory = True

    def __init__(self) -> None:
        super().__init__()
        self.weight, self.bias = torch.tensor(REFERENCE["weight"]), torch.tensor(REFERENCE["bias"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(x), 6)

    def nme_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.weight.T + self.bias)

    def memory_examples(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor(REFERENCE["memory"]), torch.tensor(REFERENCE["memory_labels"])


def test_the_class_means_rankings_and_accuracies_are_pycils():
    model, context = TinyMethod(), HandDataset("class-il", 3, 2).context()  # 6 classes, no transform
    classes, means = memory_class_means(model, context, batch_size=8)
    assert classes.tolist() == list(range(6))
    # float32 features here, PyCIL's float32 features averaged in float64 by NumPy: 1e-6
    assert torch.allclose(means.double(), torch.tensor(REFERENCE["class_means"], dtype=torch.float64), atol=1e-6)
    test = torch.tensor(REFERENCE["test"])
    ranking = nme_scores(model.nme_features(test), classes, means, 6).topk(5, dim=1).indices
    assert ranking.tolist() == REFERENCE["ranking"]  # the nearest two means are >= 0.046 apart: no near tie
    source = InMemorySource(test, torch.tensor(REFERENCE["test_labels"]))
    accuracies = evaluate_tasks(model, context, [source], trained_tasks=3, top5=True)
    # PyCIL rounds to 2 decimals
    assert accuracies["nme_class_il"] == [pytest.approx(REFERENCE["top1"], abs=0.005)]
    assert accuracies["nme_top5"] == [pytest.approx(REFERENCE["top5"], abs=0.005)]
