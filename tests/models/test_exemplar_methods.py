"""icarl, bic, gdumb: herding, nearest-mean, the bias correction and the greedy memory, by hand."""

from __future__ import annotations

import math

import pytest
import torch

from mammoth.models.bic import correct_logits
from mammoth.models.gdumb import GreedyClassBalancedMemory, cutmix
from mammoth.models.icarl import herding, nearest_mean_scores


def _rows(source) -> torch.Tensor:
    """Every example of ``source``, in order."""
    return source.read(torch.arange(len(source)), "cpu")


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
    data = model.context.task_data(0)
    model.begin_task(0)
    assert model.training_data(0, data) is data  # nothing stored yet
    model.observe(*make_batch(0))
    model.end_task(0, data)
    assert sorted(model.buffer.labels.tolist()) == [0] * 4 + [1] * 4  # 8 // 2 seen classes each
    # the exemplars are examples of the task as read (float in [0, 1]), each of its own label
    examples, rows = model.buffer.examples, _rows(data)
    matches = (examples.flatten(1).unsqueeze(1) == rows.flatten(1).unsqueeze(0)).all(2)
    assert matches.any(1).all() and torch.equal(data.labels[matches.float().argmax(1)], model.buffer.labels)
    assert model.old_net is not None
    scores = model(make_batch(0)[0])
    assert scores.shape == (8, 4) and torch.isinf(scores[:, 2:]).all() and torch.isfinite(scores[:, :2]).all()
    # task 1 trains on its data joined with the 8 exemplars, distilling the old classes
    model.begin_task(1)
    joined = model.training_data(1, model.context.task_data(1))
    assert len(joined) == 24 and torch.equal(joined.labels[16:], model.buffer.labels)
    assert torch.equal(_rows(joined)[16:], model.buffer.examples)
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


def test_bic_forward_corrects_the_newest_task_and_the_fit_lowers_the_held_out_loss(make_model, run_task) -> None:
    model = make_model("bic", buffer_size=8, valset_split=0.5, bic_epochs=30)
    run_task(model, 0)
    assert model.corr_factors is None and sorted(model.buffer.task_labels.tolist()) == [0] * 8
    data = model.context.task_data(1)
    model.begin_task(1)
    source = model.training_data(1, data)
    validation = model._validation
    # as many of the task's examples held out as of the memory's, all of them somewhere
    assert len(validation) > 0 and len(source) + len(validation) == 16 + 8
    held_memory = int((validation.labels < 2).sum())
    assert int((validation.labels >= 2).sum()) == held_memory and int((source.labels < 2).sum()) == 8 - held_memory
    model.context.fit(lambda b: model.observe(b.inputs, b.labels, b.not_aug_inputs), source, 1, "task 2")
    val_x, val_y = model.context.test_transform(_rows(validation)), validation.labels
    model.end_task(1, data)
    assert model._validation is None
    assert model.corr_factors is not None and model.corr_factors.tolist() != [0.0, 1.0]
    inputs = val_x[:8]
    raw, corrected = model.net(inputs), model(inputs)
    assert torch.equal(corrected[:, :2], raw[:, :2])
    b, a = model.corr_factors.tolist()
    assert torch.allclose(corrected[:, 2:], a * raw[:, 2:] + b)
    # the fitted factors lower the held-out cross-entropy over the seen classes
    with torch.no_grad():
        before = torch.nn.functional.cross_entropy(model.net(val_x), val_y)
        after = torch.nn.functional.cross_entropy(model(val_x), val_y)
    assert after < before
    assert sorted(model.buffer.task_labels.tolist()) == [0] * 4 + [1] * 4  # 8 // 2 tasks each


def test_bic_held_out_split_comes_from_the_run_generator(make_model, run_task) -> None:
    splits = []
    for _ in range(2):
        model = make_model("bic", buffer_size=8, valset_split=0.5, bic_epochs=1)
        run_task(model, 0)
        model.begin_task(1)
        model.training_data(1, model.context.task_data(1))
        splits.append(model._validation.labels)
    torch.manual_seed(123)  # torch's global generator plays no part
    assert torch.equal(splits[0], splits[1])


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
    x = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 8, 8).contiguous()
    mixed, y_a, y_b, lam = cutmix(x, torch.arange(4), 1.0, torch.Generator().manual_seed(3), probability=1.0)
    assert lam < 1.0
    for i in range(4):
        kept = (mixed[i] == x[i]).float().mean().item()
        if int(y_b[i]) != i:
            assert kept == pytest.approx(lam)
    assert torch.equal(y_a, torch.arange(4))
    again = cutmix(x, torch.arange(4), 1.0, torch.Generator().manual_seed(3), probability=1.0)
    assert torch.equal(again[0], mixed) and again[3] == lam  # every draw from the generator
    unchanged = cutmix(x, torch.arange(4), 1.0, torch.Generator(), probability=0.0)
    assert unchanged[3] == 1.0 and unchanged[0] is x


def test_gdumb_trains_only_after_the_last_task_from_the_initial_weights(make_model, run_task) -> None:
    models = [make_model("gdumb", buffer_size=8, fitting_epochs=2) for _ in range(2)]
    initial = models[0].net.get_params()
    for model in models:
        data = model.context.task_data(0)
        model.begin_task(0)
        assert len(model.training_data(0, data)) == 0  # nothing to train on during the tasks
        model.end_task(0, data)
        assert torch.equal(model.net.get_params(), initial)
        assert len(model.memory) == 8 and model.memory.num_seen == 16  # each example offered once
    models[1].net.set_params(torch.zeros_like(initial))  # whatever the weights were, the fit restarts
    for model in models:
        run_task(model, 1)
    assert models[0].memory.num_seen == 32
    assert not torch.equal(models[0].net.get_params(), initial)
    assert torch.equal(models[0].net.get_params(), models[1].net.get_params())
