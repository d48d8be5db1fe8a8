"""icarl, bic, gdumb: herding, nearest-mean, the bias correction and the greedy memory, by hand."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from mammoth.models.bic import correct_logits
from mammoth.models.gdumb import GreedyClassBalancedMemory, cutmix
from mammoth.models.icarl import herding, nearest_mean_scores


def _uint8(not_aug: torch.Tensor) -> torch.Tensor:
    return (not_aug * 255).round().to(torch.uint8)


# ---- icarl ----


def test_herding_picks_the_exemplars_known_for_a_small_point_set() -> None:
    features = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 0.0], [10.0, 0.0]])  # mean (3.25, 0)
    # 1st: the point nearest the mean, 2 (|3.25 - 2| = 1.25). 2nd: (2 + f) / 2 nearest 3.25:
    # f = 1 gives 1.5 (1.75 away) before f = 0 (2.25) and f = 10 (2.75). 3rd: (3 + f) / 3:
    # f = 10 gives 4.33 (1.08 away) before f = 0 (2.25). Nearest-to-the-mean would pick 0 third.
    assert herding(features, 3).tolist() == [1, 2, 3]
    assert herding(features, 10).tolist() == [1, 2, 3, 0]  # at most every point, once
    assert features[3, 0] == 10.0  # the input is not modified


def test_nearest_mean_scores_predict_the_known_class() -> None:
    means = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    scores = nearest_mean_scores(torch.tensor([[3.0, 1.0], [-1.0, 2.0]]), means)
    # f = (3, 1) / sqrt(10): ||m0 - f||^2 = 2 - 6 / sqrt(10), ||m1 - f||^2 = 2 - 2 / sqrt(10).
    assert scores[0].tolist() == pytest.approx([-(2 - 6 / math.sqrt(10)), -(2 - 2 / math.sqrt(10))])
    assert scores.argmax(1).tolist() == [0, 1]


def test_icarl_memory_forward_and_targets(make_model, make_batch) -> None:
    model = make_model("icarl", buffer_size=8)
    _, labels, not_aug = make_batch(0, size=16)
    x = model.training_data(0, _uint8(not_aug), labels)[0]
    assert len(x) == 16  # nothing stored yet
    model.begin_task(0)
    model.observe(*make_batch(0))
    model.end_task(0)
    assert sorted(model.buffer.labels.tolist()) == [0] * 4 + [1] * 4  # 8 // 2 seen classes each
    assert model.buffer.examples.dtype == torch.uint8
    assert model.old_net is not None
    scores = model(make_batch(0)[0])
    assert scores.shape == (8, 4) and torch.isinf(scores[:, 2:]).all() and torch.isfinite(scores[:, :2]).all()
    # task 1 trains on its data joined with the 8 exemplars, distilling the old classes
    _, labels1, not_aug1 = make_batch(1, size=16)
    x1, y1 = model.training_data(1, _uint8(not_aug1), labels1)
    assert len(x1) == 24 and torch.equal(y1[16:], model.buffer.labels)
    model.begin_task(1)
    inputs, labels, not_aug = make_batch(1)
    old = torch.sigmoid(model.old_net(inputs))
    outputs = model.net(inputs)
    targets = torch.cat([old[:, :2], torch.nn.functional.one_hot(labels, 4).float()[:, 2:]], 1)
    weights = sum(p.pow(2).sum() for p in model.net.parameters())
    expected = torch.nn.functional.binary_cross_entropy_with_logits(outputs, targets) + 1e-5 * weights
    assert model.observe(inputs, labels, not_aug) == pytest.approx(expected.item(), rel=1e-5)


def test_icarl_refuses_weight_decay(make_model) -> None:
    from mammoth.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^model\.weight_decay=0\.1 has no effect with model=icarl"):
        make_model("icarl", weight_decay=0.1)


# ---- bic ----


def test_bic_correction_changes_only_the_new_class_logits() -> None:
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    corrected = correct_logits(logits, torch.tensor([1.0, 2.0]), range(2, 4))  # 2 * logit + 1 on classes 2, 3
    assert corrected.tolist() == [[1.0, 2.0, 7.0, 9.0, 5.0, 6.0]]


def test_bic_forward_corrects_the_newest_task_and_the_fit_lowers_the_held_out_loss(make_model, make_batch) -> None:
    model = make_model("bic", buffer_size=8, valset_split=0.5, bic_epochs=30)
    for task in range(2):
        _, labels, not_aug = make_batch(task, size=16)
        model.begin_task(task)
        x, y = model.training_data(task, _uint8(not_aug), labels)
        for start in range(0, len(y), 8):
            batch = model.dataset.to_float(x[start : start + 8])
            model.observe(model.dataset.train_transform(batch), y[start : start + 8], batch)
        if task == 1:
            val_x, val_y = model._validation
            assert len(val_y) > 0 and len(x) + len(val_y) == 16 + 8
        model.end_task(task)
    assert model.corr_factors is not None and model.corr_factors.tolist() != [0.0, 1.0]
    inputs = make_batch(1)[0]
    raw, corrected = model.net(inputs), model(inputs)
    assert torch.equal(corrected[:, :2], raw[:, :2])
    b, a = model.corr_factors.tolist()
    assert torch.allclose(corrected[:, 2:], a * raw[:, 2:] + b)
    # the fitted factors lower the held-out cross-entropy over the seen classes
    val = model.dataset.test_transform(model.dataset.to_float(val_x))
    with torch.no_grad():
        before = torch.nn.functional.cross_entropy(model.net(val), val_y)
        after = torch.nn.functional.cross_entropy(model(val), val_y)
    assert after < before
    assert sorted(model.buffer.task_labels.tolist()) == [0] * 4 + [1] * 4  # 8 // 2 tasks each


# ---- gdumb ----


def test_gdumb_memory_is_greedy_and_class_balanced() -> None:
    torch.manual_seed(0)
    memory = GreedyClassBalancedMemory(4)
    x = torch.arange(8.0).view(8, 1)
    memory.add(x[:4], torch.tensor([0, 0, 0, 0]))
    memory.add(x[4:6], torch.tensor([1, 1]))  # each evicts a 0 (1 has fewer than 4 // 2)
    assert sorted(memory.labels) == [0, 0, 1, 1]
    memory.add(x[6:7], torch.tensor([1]))  # 1 already holds 4 // 2: refused
    assert sorted(memory.labels) == [0, 0, 1, 1]
    memory.add(x[7:8], torch.tensor([2]))  # evicts from the largest class, the smallest label on a tie: 0
    assert sorted(memory.labels) == [0, 1, 1, 2]
    examples, labels = memory.data()
    assert {int(e): int(label) for e, label in zip(examples[:, 0], labels)}[7] == 2
    assert set(examples[labels == 1, 0].tolist()) == {4.0, 5.0}


def test_cutmix_pastes_a_box_and_lam_is_the_kept_area() -> None:
    torch.manual_seed(3)
    x = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 8, 8).contiguous()
    mixed, y_a, y_b, lam = cutmix(x, torch.arange(4), alpha=1.0, probability=1.0)
    for i in range(4):
        kept = (mixed[i] == x[i]).float().mean().item()
        if int(y_b[i]) != i:
            assert kept == pytest.approx(lam)
    assert torch.equal(y_a, torch.arange(4))
    unchanged = cutmix(x, torch.arange(4), alpha=1.0, probability=0.0)
    assert unchanged[3] == 1.0 and unchanged[0] is x


def test_gdumb_trains_only_after_the_last_task_from_the_initial_weights(make_model, make_batch) -> None:
    model = make_model("gdumb", buffer_size=8, fitting_epochs=2)
    initial = model.net.get_params()
    for task in range(2):
        model.begin_task(task)
        assert model.observe(*make_batch(task, size=8)) == 0.0
        model.end_epoch(0)
        model.observe(*make_batch(task, size=8, seed=5))  # second epoch: not stored
        if task == 0:
            model.end_task(task)
            assert torch.equal(model.net.get_params(), initial)
    assert len(model.memory) == 8 and model.memory.num_seen == 16  # the reservoir saw the first epochs only
    other = copy.deepcopy(model)
    other.net.set_params(torch.zeros_like(initial))  # whatever the weights were, the fit restarts
    torch.manual_seed(0)
    model.end_task(1)
    torch.manual_seed(0)
    other.end_task(1)
    assert not torch.equal(model.net.get_params(), initial)
    assert torch.equal(model.net.get_params(), other.net.get_params())
