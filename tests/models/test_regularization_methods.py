"""lwf, ewc_on, si: the defining step of each, on cases small enough to compute by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mammoth.backbones.base import MammothBackbone
from mammoth.datasets.source import InMemorySource
from mammoth.engine.context import build_context
from mammoth.models import build_model
from mammoth.models.ewc_on import EwcOn
from mammoth.models.lwf import distillation_loss
from mammoth.models.si import SI


class TwoWeights(MammothBackbone):
    """logits = [w0 * x, w1 * x] for a scalar input x: two parameters, (w0, w1)."""

    def __init__(self, w0: float = 0.0, w1: float = 0.0) -> None:
        super().__init__()
        self.stages = nn.ModuleList([nn.Flatten()])
        self.classifier = nn.Linear(1, 2, bias=False)
        self.num_features, self.num_classes = 1, 2
        with torch.no_grad():
            self.classifier.weight.copy_(torch.tensor([[w0], [w1]]))


class ScalarData:
    """Identity transforms on (N, 1, 1, 1) float "images"; one task of classes {0, 1}."""

    name, setting, n_classes, n_tasks = "scalar", "domain-il", 2, 2

    class config:
        batch_size, n_epochs = 8, 1

    def task_classes(self, task: int) -> range:
        return range(2)

    @staticmethod
    def train_transform(x, generator=None):
        return x

    test_transform = train_transform


def scalars(*values: float) -> torch.Tensor:
    return torch.tensor(values).view(-1, 1, 1, 1)


def attached(model):
    """``model`` attached to a CPU context on :class:`ScalarData`."""
    model.attach(build_context(ScalarData(), "cpu", torch.Generator().manual_seed(0)))
    return model


# ---- lwf ----


def test_lwf_distillation_of_hand_logits() -> None:
    old = torch.tensor([[0.0, math.log(3.0)]])  # softmax (1/4, 3/4); smoothed with T=2: sqrt, renormalised
    q = torch.tensor([0.5, math.sqrt(0.75)]) / (0.5 + math.sqrt(0.75))  # (0.36603, 0.63397)
    # Against a uniform new distribution the cross-entropy is log 2 whatever q is.
    assert distillation_loss(old, torch.zeros(1, 2), 2.0).item() == pytest.approx(math.log(2.0), rel=1e-6)
    # Against itself it is the entropy of q: 0.366025 * 1.005053 + 0.633975 * 0.455746 = 0.656806.
    entropy = -(q * q.log()).sum().item()
    assert entropy == pytest.approx(0.656806, abs=1e-6)
    assert distillation_loss(old, old, 2.0).item() == pytest.approx(entropy, rel=1e-6)


def test_lwf_warm_up_trains_only_the_new_classes_rows_then_distils(make_model, make_batch, run_task) -> None:
    model = make_model("lwf", alpha=0.5, softmax_temp=2.0)
    run_task(model, 0)
    stages = [p.detach().clone() for p in model.net.stages.parameters()]
    weight = model.net.classifier.weight.detach().clone()
    model.begin_task(1)  # warms up on the task's data, through the context
    assert all(torch.equal(a, b) for a, b in zip(stages, model.net.stages.parameters()))
    assert torch.equal(model.net.classifier.weight[:2], weight[:2])  # old classes untouched
    assert not torch.equal(model.net.classifier.weight[2:], weight[2:])  # new classes warmed up
    assert model.net.training  # the warm-up ran in eval mode and put the mode back
    assert model.old_net is not None and not model.old_net.net.training
    assert torch.equal(model.old_net.net.classifier.weight, model.net.classifier.weight)  # frozen after the warm-up
    data = model.context.task_data(1)
    assert model.training_data(1, data) is data
    inputs, labels, not_aug = make_batch(1)
    net, old = [p.detach().clone() for p in model.net.parameters()], model.old_net
    outputs = model.net(inputs)
    old_p = torch.softmax(old(model.context.test_transform(not_aug))[:, :2], 1).sqrt()
    new_p = torch.softmax(outputs[:, :2], 1).sqrt()
    old_p, new_p = old_p / old_p.sum(1, keepdim=True), new_p / new_p.sum(1, keepdim=True)
    expected = F.cross_entropy(outputs[:, :4], labels) - 0.5 * (old_p * new_p.log()).sum(1).mean()
    assert model.observe(inputs, labels, not_aug) == pytest.approx(expected.item(), rel=1e-5)
    assert not all(torch.equal(a, b) for a, b in zip(net, model.net.parameters()))
    model.end_task(1, data)
    assert model.old_net is None and model.extra_state() == {}


# ---- ewc_on ----


def test_ewc_penalty_and_its_gradient_on_a_two_parameter_net() -> None:
    model = attached(EwcOn(TwoWeights(1.5, -1.0), ScalarData(), e_lambda=2.0, gamma=1.0))
    assert model.penalty().item() == 0.0
    model.fisher, model.checkpoint = torch.tensor([0.5, 3.0]), torch.tensor([1.0, 0.0])
    # 2 * (0.5 * (1.5 - 1)**2 + 3 * (-1 - 0)**2) = 2 * (0.125 + 3) = 6.25
    assert model.penalty().item() == pytest.approx(6.25)
    # 2 * lambda * F * (theta - theta*) = 4 * (0.5 * 0.5, 3 * -1) = (1, -12)
    assert model.penalty_grads().tolist() == pytest.approx([1.0, -12.0])


def test_ewc_step_adds_the_penalty_gradient_to_the_cross_entropy_one() -> None:
    model = attached(EwcOn(TwoWeights(1.5, -1.0), ScalarData(), e_lambda=2.0, gamma=1.0, lr=0.1))
    model.begin_task(1)
    model.fisher, model.checkpoint = torch.tensor([0.5, 3.0]), torch.tensor([1.0, 0.0])
    # x = 1, y = 0: logits (1.5, -1), p0 = 1 / (1 + e^-2.5); dCE/dw0 = -(1 - p0), dCE/dw1 = 1 - p0.
    p1 = 1 / (1 + math.exp(2.5))
    loss = model.observe(scalars(1.0), torch.tensor([0]), scalars(1.0))
    assert loss == pytest.approx(-math.log(1 - p1), rel=1e-6)
    expected = [1.5 - 0.1 * (-p1 + 1.0), -1.0 - 0.1 * (p1 - 12.0)]
    assert model.net.get_params().tolist() == pytest.approx(expected, rel=1e-6)


def test_ewc_fisher_is_the_likelihood_weighted_squared_gradient() -> None:
    model = attached(EwcOn(TwoWeights(0.0, 0.0), ScalarData(), e_lambda=1.0, gamma=0.5))
    data = InMemorySource(scalars(1.0, 2.0), torch.tensor([0, 1]))
    model.begin_task(0)
    model.end_task(0, data)
    # w = 0: p = (1/2, 1/2). (x=1, y=0): grad log p = (1/2, -1/2) -> 1/2 * 1/4 each;
    # (x=2, y=1): grad log p = (-1, 1) -> 1/2 * 1 each. Sum 0.625, over 1 batch * batch_size 8.
    assert model.fisher.tolist() == pytest.approx([0.625 / 8, 0.625 / 8])
    assert model.checkpoint.tolist() == [0.0, 0.0]
    model.begin_task(1)
    model.end_task(1, data)
    assert model.fisher.tolist() == pytest.approx([1.5 * 0.625 / 8] * 2)  # gamma * F + F


# ---- si ----


def test_si_accumulates_minus_gradient_times_delta_and_folds_it_at_the_end_of_the_task() -> None:
    model = attached(SI(TwoWeights(0.0, 0.0), ScalarData(), c=1.0, xi=0.1, lr=0.5))
    model.begin_task(0)
    # x = 1, y = 0 at w = 0: g = (-1/2, 1/2); the step moves w by delta = -0.5 * g = (0.25, -0.25).
    model.observe(scalars(1.0), torch.tensor([0]), scalars(1.0))
    assert model.net.get_params().tolist() == pytest.approx([0.25, -0.25])
    assert model.small_omega.tolist() == pytest.approx([0.125, 0.125])  # -g * delta = 0.5 * g**2
    model.end_task(0, InMemorySource(scalars(1.0), torch.tensor([0])))
    # big_omega = 0.125 / (0.25**2 + 0.1) = 0.125 / 0.1625 = 10 / 13
    assert model.big_omega.tolist() == pytest.approx([10 / 13, 10 / 13])
    assert model.checkpoint.tolist() == pytest.approx([0.25, -0.25])
    assert model.small_omega.tolist() == [0.0, 0.0]


def test_si_clips_the_step_but_accumulates_the_unclipped_gradient() -> None:
    model = attached(SI(TwoWeights(0.0, 0.0), ScalarData(), c=1.0, xi=0.1, lr=0.5))
    model.begin_task(0)
    # x = 4, y = 0: g = (-2, 2), clipped to (-1, 1); delta = (0.5, -0.5); -g * delta = (1, 1).
    model.observe(scalars(4.0), torch.tensor([0]), scalars(4.0))
    assert model.net.get_params().tolist() == pytest.approx([0.5, -0.5])
    assert model.small_omega.tolist() == pytest.approx([1.0, 1.0])


def test_si_penalty_gradient_pulls_towards_the_anchor() -> None:
    model = attached(SI(TwoWeights(0.0, 0.0), ScalarData(), c=2.0, xi=0.1, lr=0.1))
    model.begin_task(1)
    model.big_omega, model.checkpoint = torch.tensor([0.5, 0.25]), torch.tensor([-1.0, 0.4])
    assert model.penalty().item() == pytest.approx(0.5 * 1.0 + 0.25 * 0.16)
    # x = 0: the cross-entropy gradient is 0; penalty gradient 2c * omega * (w - w*) = (2, -0.4)
    model.observe(scalars(0.0), torch.tensor([0]), scalars(0.0))
    assert model.net.get_params().tolist() == pytest.approx([-0.1 * 1.0, 0.04])  # (2 clipped to 1, -0.4)
    assert model.small_omega.tolist() == [0.0, 0.0]  # g = 0 contributes nothing


def test_required_arguments_and_their_errors(make_net, dataset) -> None:
    from mammoth.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model\.e_lambda"):
        build_model("ewc_on", net=make_net(), dataset=dataset, gamma=1.0)
    with pytest.raises(ConfigError, match=r"^model\.xi=0\.0 is not positive; allowed: xi > 0"):
        build_model("si", net=make_net(), dataset=dataset, c=1.0, xi=0.0)
    with pytest.raises(ConfigError, match=r"^model=lwf does not support domain-il datasets"):
        build_model("lwf", net=make_net(), dataset=ScalarData())


@pytest.mark.parametrize("name", ["lwf", "icarl", "er_ace", "gdumb", "bic", "xder"])
def test_class_il_methods_refuse_a_domain_il_dataset(name: str, make_net) -> None:
    from mammoth.errors import ConfigError

    required = {"buffer_size": 10, "alpha": 0.3, "beta": 0.5} if name == "xder" else {}
    if name not in ("lwf",):
        required.setdefault("buffer_size", 10)
    with pytest.raises(ConfigError, match=rf"^model={name.replace('_', '-')} does not support domain-il datasets"):
        build_model(name, net=make_net(), dataset=ScalarData(), **required)
