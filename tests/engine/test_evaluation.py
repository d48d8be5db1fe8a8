"""evaluate_tasks on hand-built logits: Class-IL hides the classes not seen yet, Task-IL looks
only at the example's own task's classes, Domain-IL at the shared label space; the model is
evaluated in eval mode and left in the mode it was in. Every expected accuracy is worked out by
hand in the comments."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hand_dataset import HandDataset
from mammoth.datasets.source import InMemorySource
from mammoth.engine.evaluation import evaluate_tasks
from mammoth.errors import TrainingError


class LookupModel(nn.Module):
    """Returns row ``i`` of ``logits`` for an image whose single pixel is ``i``; records its mode."""

    def __init__(self, logits: list[list[float]]) -> None:
        super().__init__()
        self.logits = torch.tensor(logits)
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        return self.logits[x.flatten(1)[:, 0].long()]


def make_test_set(indices: list[int], labels: list[int]) -> InMemorySource:
    return InMemorySource(torch.tensor(indices, dtype=torch.float32).view(-1, 1, 1, 1), torch.tensor(labels))


# Two class-IL tasks: classes 0, 1 then 2, 3.
CLASS_IL_LOGITS = [
    [5.0, 1.0, 0.0, 9.0],  # 0: label 0. Seen {0,1}: 0 right. All four: 3 wrong. Task 0's: 0 right.
    [0.0, 2.0, 7.0, 0.0],  # 1: label 1. Seen {0,1}: 1 right. All four: 2 wrong. Task 0's: 1 right.
    [3.0, 1.0, 0.0, 0.0],  # 2: label 1. 0 wrong everywhere.
    [9.0, 0.0, 4.0, 1.0],  # 3: label 2. All four: 0 wrong. Task 1's {2,3}: 2 right.
    [0.0, 0.0, 1.0, 2.0],  # 4: label 3. All four: 3 right. Task 1's: 3 right.
]
TASK_0, TASK_1 = make_test_set([0, 1, 2], [0, 1, 1]), make_test_set([3, 4], [2, 3])


@pytest.mark.parametrize("batch_size", [512, 2])
def test_after_the_first_task_unseen_classes_are_hidden(batch_size):
    model = LookupModel(CLASS_IL_LOGITS)
    accuracies = evaluate_tasks(model, HandDataset("class-il", 2, 2).context(), [TASK_0], batch_size=batch_size)
    # Class-IL over classes {0, 1} only: examples 0 and 1 right (their top logits, 9 and 7, are
    # unseen classes), 2 wrong: 2 of 3. Task-IL over task 0's classes: the same 2 of 3.
    assert accuracies == {"class_il": [pytest.approx(200 / 3)], "task_il": [pytest.approx(200 / 3)]}


@pytest.mark.parametrize("batch_size", [512, 2])
def test_after_the_second_task_task_il_offsets_each_task_to_its_classes(batch_size):
    model = LookupModel(CLASS_IL_LOGITS)
    accuracies = evaluate_tasks(model, HandDataset("class-il", 2, 2).context(), [TASK_0, TASK_1], batch_size=batch_size)
    # Class-IL over all four classes: task 0 0 of 3; task 1 only example 4: 1 of 2.
    # Task-IL: task 0 over {0, 1}: 2 of 3; task 1 over {2, 3} (offset by 2): both right.
    assert accuracies["class_il"] == [0.0, 50.0]
    assert accuracies["task_il"] == [pytest.approx(200 / 3), 100.0]


def test_tasks_of_unequal_size_score_their_own_classes():
    # tasks of 3 classes then 1: {0, 1, 2}, {3}; the examples of task 0 have labels 0, 2, 1
    model, context = LookupModel(CLASS_IL_LOGITS), HandDataset("class-il", 2, [3, 1]).context()
    first, second = make_test_set([0, 1, 2], [0, 2, 1]), make_test_set([3, 4], [3, 3])
    # after task 1, over {0, 1, 2}: example 0 right (5), 1 right (7 on class 2), 2 wrong: 2 of 3, both kinds
    assert evaluate_tasks(model, context, [first], trained_tasks=1) == {
        "class_il": [pytest.approx(200 / 3)], "task_il": [pytest.approx(200 / 3)]}
    # after task 2, Class-IL over all four: task 0 only example 1 (7): 1 of 3; task 1 example 4: 1 of 2.
    # Task-IL: task 0 over {0, 1, 2}: 2 of 3; task 1 over its one class {3}: always right
    assert evaluate_tasks(model, context, [first, second]) == {
        "class_il": [pytest.approx(100 / 3), 50.0], "task_il": [pytest.approx(200 / 3), 100.0]}


def test_domain_il_scores_the_shared_label_space_of_every_task():
    model = LookupModel([
        [1.0, 4.0, 2.0],  # 0: label 1, right
        [3.0, 0.0, 2.0],  # 1: label 2, wrong (0)
        [0.0, 0.0, 5.0],  # 2: label 2, right
        [6.0, 1.0, 1.0],  # 3: label 0, right
    ])
    context = HandDataset("domain-il", 2, 3).context()
    accuracies = evaluate_tasks(model, context, [make_test_set([0, 1], [1, 2]), make_test_set([2, 3], [2, 0])])
    # Task 0: 1 of 2; task 1: 2 of 2. Only the domain_il kind is reported.
    assert accuracies == {"domain_il": [50.0, 100.0]}


@pytest.mark.parametrize("training", [True, False])
def test_the_model_is_evaluated_in_eval_mode_and_left_as_it_was(training):
    model = LookupModel(CLASS_IL_LOGITS)
    model.train(training)
    evaluate_tasks(model, HandDataset("class-il", 2, 2).context(), [TASK_0, TASK_1], batch_size=2)
    assert model.modes and not any(model.modes)  # every forward ran in eval mode
    assert model.training is training


def test_the_mode_is_restored_when_the_forward_fails():
    class Failing(LookupModel):
        def forward(self, x):
            raise RuntimeError("boom")

    model = Failing(CLASS_IL_LOGITS).train()
    with pytest.raises(RuntimeError, match="boom"):
        evaluate_tasks(model, HandDataset("class-il", 2, 2).context(), [TASK_0])
    assert model.training


@pytest.mark.parametrize(("bad_row", "what"), [
    ([float("nan"), 0.0, 0.0, 0.0], "nan"),
    ([0.0, float("inf"), 0.0, 0.0], "+inf"),
    ([float("-inf")] * 4, "no finite score"),
])
def test_non_finite_scores_are_refused_naming_the_task_evaluated(bad_row, what):
    logits = [list(row) for row in CLASS_IL_LOGITS]
    logits[4] = bad_row  # example 4 is in task 1's test set
    with pytest.raises(TrainingError) as error:
        evaluate_tasks(LookupModel(logits), HandDataset("class-il", 2, 2).context(), [TASK_0, TASK_1], batch_size=2)
    assert str(error.value) == (
        "the model's outputs became non-finite (nan or inf) on the test data of task 2, evaluated after task 2/2; "
        "the run stopped without results (lower model.lr, or check the data)"
    ), what


def test_minus_inf_rules_a_class_out_and_is_allowed():
    logits = [list(row) for row in CLASS_IL_LOGITS]
    logits[4] = [float("-inf"), float("-inf"), 1.0, 2.0]  # label 3: still right everywhere
    accuracies = evaluate_tasks(LookupModel(logits), HandDataset("class-il", 2, 2).context(), [TASK_0, TASK_1])
    assert accuracies["class_il"] == [0.0, 50.0] and accuracies["task_il"] == [pytest.approx(200 / 3), 100.0]


def test_a_task_not_trained_yet_is_scored_over_the_classes_up_to_its_own():
    model = LookupModel(CLASS_IL_LOGITS)
    context = HandDataset("class-il", 2, 2).context()
    # After task 0 (eval_future): task 0 over {0, 1}: 2 of 3, as above; task 1 over {0..3}: example 4 only, 1 of 2.
    after_first = evaluate_tasks(model, context, [TASK_0, TASK_1], trained_tasks=1)
    assert after_first == {"class_il": [pytest.approx(200 / 3), 50.0], "task_il": [pytest.approx(200 / 3), 100.0]}
    # The network before the first task scores each task as a task not trained yet: the same here.
    assert evaluate_tasks(model, context, [TASK_0, TASK_1], trained_tasks=0) == after_first


def test_top5_counts_a_label_among_the_five_best_seen_scores():
    ranked = [6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0]  # class 0 best, class 6 worst
    model = LookupModel([ranked, ranked, ranked])
    test_set = make_test_set([0, 1, 2], [6, 2, 0])  # label 6: 7th (miss); label 2: 3rd (hit); label 0: 1st (hit)
    accuracies = evaluate_tasks(model, HandDataset("class-il", 1, 7).context(), [test_set], top5=True)
    assert accuracies["top5"] == [pytest.approx(200 / 3)]
    assert accuracies["class_il"] == [pytest.approx(100 / 3)]  # only label 0 is the argmax
    assert "top5" not in evaluate_tasks(model, HandDataset("class-il", 1, 7).context(), [test_set])


def test_the_random_network_that_goes_non_finite_is_named_as_before_the_first_task():
    logits = [list(row) for row in CLASS_IL_LOGITS]
    logits[0] = [float("nan")] * 4
    with pytest.raises(TrainingError, match=r"on the test data of task 1, evaluated before the first task; "):
        evaluate_tasks(LookupModel(logits), HandDataset("class-il", 2, 2).context(), [TASK_0, TASK_1], trained_tasks=0)


def test_a_method_without_any_class_to_score_before_training_scores_zero():
    # a prototype method (simplecil, slca) rules out every class before the first task
    ruled_out = [[float("-inf")] * 4] * 5
    before = evaluate_tasks(LookupModel(ruled_out), HandDataset("class-il", 2, 2).context(), [TASK_0, TASK_1], trained_tasks=0)
    assert before == {"class_il": [0.0, 0.0], "task_il": [0.0, 0.0]}  # not "class 0 of each task" by argmax


def test_a_future_task_whose_classes_are_all_ruled_out_is_not_scored_by_argmax_order():
    logits = [[1.0, 2.0, float("-inf"), float("-inf")]] * 5  # only task 0's classes have scores
    after_first = evaluate_tasks(LookupModel(logits), HandDataset("class-il", 2, 2).context(), [TASK_0, TASK_1], trained_tasks=1)
    # task 0: predicts class 1 everywhere: examples 1 and 2 (labels 1, 1) right: 2 of 3; task 1: nothing predicted
    assert after_first == {"class_il": [pytest.approx(200 / 3), 0.0], "task_il": [pytest.approx(200 / 3), 0.0]}


def test_shards_with_summed_counts_score_as_the_whole_data():
    # what a distributed run does: each rank scores its shard of every task, sum_counts adds the
    # counts of the other ranks (here: rank 1's, recorded first) before the percentages are taken
    model, context = LookupModel(CLASS_IL_LOGITS), HandDataset("class-il", 2, 2).context()
    whole = evaluate_tasks(model, context, [TASK_0, TASK_1], top5=False)
    rank_1: list[torch.Tensor] = []
    evaluate_tasks(model, context, [TASK_0.shard(1, 2), TASK_1.shard(1, 2)],
                   sum_counts=lambda counts: rank_1.append(counts) or counts)
    # rank 1 holds example 1 of task 0 (Class-IL wrong: class 2's 7 wins; Task-IL right) and example 4 of task 1 (right)
    assert rank_1[0].tolist() == [[0, 1, 1], [1, 1, 1]]  # per task: Class-IL, Task-IL correct, size
    summed = evaluate_tasks(model, context, [TASK_0.shard(0, 2), TASK_1.shard(0, 2)],
                            sum_counts=lambda counts: counts + rank_1[0])
    assert summed == whole == {"class_il": [0.0, 50.0], "task_il": [pytest.approx(200 / 3), 100.0]}
