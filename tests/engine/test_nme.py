"""The nearest-mean-of-exemplars (NME) accuracy on hand-made features: class means of the memory's
normalised features (normalised again), each test feature normalised and given the class of the
nearest mean (squared L2), a class without exemplars never predicted; a method without a memory
reports no NME. Every expected number is worked out by hand in the comments."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hand_dataset import HandDataset
from mammoth.datasets.source import InMemorySource
from mammoth.engine.evaluation import accuracy_kinds, evaluate_tasks, memory_class_means, nme_scores

#: Features of the images, by pixel value: 0-4 are test images, 10-13 the memory's.
FEATURES = {
    0: (1.0, 1.0),    # label 0: normalised (.707, .707), class 0's mean itself: class 0, right
    1: (-2.0, 0.1),   # label 1: ~(-.9988, .0499), next to class 1's mean (-1, 0): right
    2: (0.1, -3.0),   # label 0: ~(.033, -.999), next to class 2's mean (0, -1): wrong
    3: (0.0, -1.0),   # label 2: class 2's mean itself: right
    4: (1.0, 0.0),    # label 3: class 3 has no exemplar; nearest of the others class 0 (0.586 vs 2 and 4): wrong
    10: (3.0, 0.0),   # class 0: normalised (1, 0)
    11: (0.0, 2.0),   # class 0: normalised (0, 1); class 0's mean (.5, .5), normalised (.707, .707)
    12: (-1.0, 0.0),  # class 1: mean (-1, 0)
    13: (0.0, -5.0),  # class 2: mean (0, -1)
}


def images(pixels: list[int]) -> torch.Tensor:
    return torch.tensor(pixels, dtype=torch.float32).view(-1, 1, 1, 1)


class MemoryModel(nn.Module):
    """A method with a memory (pixels 10-13, labels 0, 0, 1, 2), its features looked up by pixel, and
    logits that always say class 3 (its classifier is right on class 3 only)."""

    has_memory = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([[0.0, 0.0, 0.0, 1.0]]).expand(len(x), 4)

    def nme_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([FEATURES[int(value)] for value in x.flatten(1)[:, 0]])

    def memory_examples(self) -> tuple[torch.Tensor, torch.Tensor]:
        return images([10, 11, 12, 13]), torch.tensor([0, 0, 1, 2])


class NoMemoryModel(MemoryModel):
    has_memory = False


TASK_0 = InMemorySource(images([0, 1, 2]), torch.tensor([0, 1, 0]))
TASK_1 = InMemorySource(images([3, 4]), torch.tensor([2, 3]))


def test_the_class_means_are_the_normalised_means_of_the_normalised_features():
    classes, means = memory_class_means(MemoryModel(), HandDataset("class-il", 2, 2).context(), batch_size=3)
    root = 1 / math.sqrt(2)
    assert classes.tolist() == [0, 1, 2]
    assert means.flatten().tolist() == pytest.approx([root, root, -1.0, 0.0, 0.0, -1.0], abs=1e-7)  # float32


def test_scores_are_minus_squared_distances_and_minus_infinity_without_a_mean():
    # (3, 4) normalised is (.6, .8): to (1, 0) .4**2 + .8**2 = .8; to (0, 1) .6**2 + .2**2 = .4.
    scores = nme_scores(torch.tensor([[3.0, 4.0]]), torch.tensor([0, 1]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]), 3)
    assert scores[0, :2].tolist() == pytest.approx([-0.8, -0.4], abs=1e-6)
    assert scores[0, 2].item() == float("-inf")


@pytest.mark.parametrize("batch_size", [512, 1])
def test_nme_accuracy_beside_the_classifiers(batch_size):
    context = HandDataset("class-il", 2, 2).context()
    accuracies = evaluate_tasks(MemoryModel(), context, [TASK_0, TASK_1], batch_size=batch_size, top5=True)
    # NME (FEATURES' comments): task 0 images 0 and 1 right, 2 wrong: 2 of 3; task 1 image 3 right, 4 wrong.
    assert accuracies["nme_class_il"] == [pytest.approx(200 / 3), 50.0]
    # NME top-5 over the 4 classes: every label but class 3 (no exemplar, -inf: never a hit) is among them.
    assert accuracies["nme_top5"] == [100.0, 50.0]
    # The classifier always says 3: right only on image 4.
    assert accuracies["class_il"] == [0.0, 50.0] and accuracies["top5"] == [100.0, 100.0]


def test_after_the_first_task_nme_scores_the_classes_seen_only():
    # Classes 0 and 1 only: image 2 ~(.033, -.999) is nearer class 1's mean (1.067 + .998 = 2.07) than
    # class 0's (.454 + 2.91 = 3.37): still wrong; 0 and 1 right: 2 of 3.
    accuracies = evaluate_tasks(MemoryModel(), HandDataset("class-il", 2, 2).context(), [TASK_0])
    assert accuracies["nme_class_il"] == [pytest.approx(200 / 3)]


def test_a_method_without_a_memory_reports_no_nme():
    context = HandDataset("class-il", 2, 2).context()
    accuracies = evaluate_tasks(NoMemoryModel(), context, [TASK_0, TASK_1], top5=True)
    assert sorted(accuracies) == ["class_il", "task_il", "top5"]
    assert accuracy_kinds("class-il", NoMemoryModel()) == ("class_il", "task_il")
    assert accuracy_kinds("class-il", MemoryModel()) == ("class_il", "task_il", "nme_class_il")
    assert accuracy_kinds("domain-il", MemoryModel()) == ("domain_il",)  # NME is class-il only


def test_an_empty_memory_predicts_nothing():
    model = MemoryModel()
    model.memory_examples = lambda: None
    accuracies = evaluate_tasks(model, HandDataset("class-il", 2, 2).context(), [TASK_0, TASK_1], trained_tasks=0)
    assert accuracies["nme_class_il"] == [0.0, 0.0]


def test_the_built_in_methods_with_a_memory_of_labels_report_nme_and_der_does_not():
    from mammoth.models import MODELS

    with_memory = {name for name in MODELS.names() if accuracy_kinds("class-il", MODELS.get(name).target)[-1] == "nme_class_il"}
    # der's memory holds examples and logits only (as the original's): no labels, no class means
    assert {"agem", "bic", "derpp", "er", "er-ace", "gdumb", "gem", "icarl", "mer", "xder"} <= with_memory
    assert not {"der", "sgd", "joint", "lwf", "ewc-on", "si", "slca", "ranpac", "simplecil", "l2p"} & with_memory
