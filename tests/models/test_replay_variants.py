"""er_ace and mer: the asymmetric mask, the cosine classifier and Reptile's interpolation, by hand."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from mammoth.models.er_ace import MASKED_LOGIT, CosineClassifier, ace_mask
from mammoth.models.mer import reptile


@pytest.fixture
def make_model(make_begun_model):
    """Models begun on task 0, as the harness begins them before the first batch."""
    return make_begun_model


# ---- er_ace ----


def test_ace_mask_keeps_the_present_classes_and_the_unseen_ones() -> None:
    logits = torch.zeros(2, 6)
    # present {2, 3}, seen {0..3}: classes 2, 3 and every class from 3 on -> 0 and 1 masked
    assert ace_mask(logits, torch.tensor([2, 3]), torch.tensor([0, 1, 2, 3])).tolist() == [[0, 0, 1, 1, 1, 1]] * 2
    # present {0, 3}, seen {0..3}: 0, 3, 4, 5
    assert ace_mask(logits, torch.tensor([0, 3]), torch.tensor([0, 1, 2, 3]))[0].tolist() == [1, 0, 0, 1, 1, 1]
    # present {2}, seen {0, 1, 2}: from 2 on
    assert ace_mask(logits, torch.tensor([2]), torch.tensor([0, 1, 2]))[0].tolist() == [0, 0, 1, 1, 1, 1]


def test_cosine_classifier_is_ten_times_the_cosine() -> None:
    classifier = CosineClassifier(2, 2)
    with torch.no_grad():
        classifier.L.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    scores = classifier(torch.tensor([[3.0, 0.0]]))
    # x / (|x| + 1e-5) = (3 / 3.00001, 0); w_c / (|w_c| + 1e-5): (1, 0) / 1.00001, (1, 1) / (sqrt 2 + 1e-5)
    x = 3 / (3 + 1e-5)
    assert scores[0].tolist() == pytest.approx([10 * x / (1 + 1e-5), 10 * x / (math.sqrt(2) + 1e-5)], rel=1e-6)


def test_er_ace_masks_the_old_classes_on_the_incoming_batch_only(make_model, make_batch) -> None:
    model = make_model("er_ace", buffer_size=32)
    assert isinstance(model.net.classifier, CosineClassifier)
    model.begin_task(0)
    inputs, labels, not_aug = make_batch(0)
    expected_first = F.cross_entropy(model.net(inputs), labels)  # task 0: no mask, no replay
    assert model.observe(inputs, labels, not_aug) == pytest.approx(expected_first.item(), rel=1e-6)
    model.begin_task(1)
    inputs, labels, not_aug = make_batch(1)
    net = copy.deepcopy(model.net)
    sample, recorded = model.buffer.sample, []
    model.buffer.sample = lambda size, transform=None: recorded.append(sample(size, transform)) or recorded[-1]
    loss = model.observe(inputs, labels, not_aug)
    (replay,) = recorded
    logits = net(inputs)
    masked = logits.clone()
    masked[:, :2] = MASKED_LOGIT  # classes 0, 1 are seen but not in this batch of classes 2, 3
    expected = F.cross_entropy(masked, labels) + F.cross_entropy(net(replay.examples), replay.labels)
    assert loss == pytest.approx(expected.item(), rel=1e-5)
    assert model.seen_so_far.tolist() == [0, 1, 2, 3]


def test_er_ace_plain_classifier_option(make_model) -> None:
    model = make_model("er_ace", use_custom_classifier=False)
    assert isinstance(model.net.classifier, torch.nn.Linear)


# ---- mer ----


def test_reptile_interpolation_on_params() -> None:
    start, current = torch.tensor([1.0, 1.0]), torch.tensor([3.0, -1.0])
    assert reptile(start, current, 0.25).tolist() == [1.5, 0.5]  # 1 + (3 - 1) / 4, 1 + (-1 - 1) / 4
    assert reptile(torch.tensor([2.0]), torch.tensor([5.0]), 1.0).tolist() == [5.0]


def test_mer_first_example_is_an_sgd_step_scaled_by_beta_times_gamma(make_model, make_batch) -> None:
    model = make_model("mer", beta=0.5, gamma=0.5, lr=0.1)
    inputs, labels, not_aug = make_batch(0, size=1)
    start = model.net.get_params()
    grads = torch.autograd.grad(F.cross_entropy(model.net(inputs), labels), list(model.net.parameters()))
    sgd_step = -0.1 * torch.cat([g.flatten() for g in grads])
    model.observe(inputs, labels, not_aug)  # empty buffer: the step sees the example alone
    # within-batch: theta0 + 0.5 * step; across-batch: theta0 + 0.5 * (that - theta0) = theta0 + 0.25 * step
    assert torch.allclose(model.net.get_params(), start + 0.25 * sgd_step, atol=1e-7)
    assert model.buffer.num_seen == 1


def test_mer_processes_the_batch_one_example_at_a_time(make_model, make_batch) -> None:
    # a batch of 3 ends exactly where 3 batches of 1 in turn end (same generators, replay batches
    # of 2); one step on the whole batch would end elsewhere
    whole, one_by_one = (make_model("mer", beta=0.7, gamma=0.6, batch_num=2, minibatch_size=2) for _ in range(2))
    start = whole.net.get_params()
    inputs, labels, not_aug = make_batch(0, size=3)
    whole.observe(inputs, labels, not_aug)
    for i in range(3):
        one_by_one.observe(inputs[i : i + 1], labels[i : i + 1], not_aug[i : i + 1])
    assert whole.buffer.num_seen == 3  # each example offered once, after its batch_num steps
    assert not torch.equal(whole.net.get_params(), start)
    assert torch.equal(whole.net.get_params(), one_by_one.net.get_params())
    assert torch.equal(whole.buffer.examples, one_by_one.buffer.examples)
