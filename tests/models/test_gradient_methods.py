"""agem and gem: the gradient projections, on vectors small enough to solve by hand."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from mammoth.models.agem import project
from mammoth.models.gem import project_to_cone


@pytest.fixture
def make_model(make_begun_model):
    """Models begun on task 0, as the harness begins them before the first batch."""
    return make_begun_model


# ---- agem ----


def test_agem_projection_removes_the_conflicting_component() -> None:
    gradient, reference = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    # g.r = -1 < 0: g - (g.r / r.r) r = (1, 0) + 1/2 (-1, 1) = (0.5, 0.5), and then g.r = 0.
    projected = project(gradient.clone(), reference)
    assert projected.tolist() == [0.5, 0.5]
    assert torch.dot(projected, reference).item() == 0.0


def test_agem_projection_leaves_a_non_conflicting_gradient_unchanged() -> None:
    gradient = torch.tensor([1.0, 2.0, -3.0])
    for reference in (torch.tensor([1.0, 0.0, 0.0]), torch.tensor([3.0, 0.0, 1.0])):  # g.r = 1 and 0
        assert project(gradient.clone(), reference).tolist() == [1.0, 2.0, -3.0]


def test_agem_step_follows_the_projected_gradient(make_model, make_batch) -> None:
    model = make_model("agem", lr=0.1, buffer_size=16)
    data = model.context.task_data(0)
    model.end_task(0, data)
    assert len(model.buffer) == 8  # one batch (batch_size 8) of the finished task
    stored = data.read(torch.arange(len(data)), "cpu")
    assert all(any(torch.equal(example, row) for row in stored) for example in model.buffer.examples)
    model.begin_task(1)
    inputs, labels, not_aug = make_batch(1)
    net = copy.deepcopy(model.net)
    sample = model.buffer.sample
    recorded = []
    model.buffer.sample = lambda size, transform=None: recorded.append(sample(size, transform)) or recorded[-1]
    model.observe(inputs, labels, not_aug)
    (replay,) = recorded
    g = torch.cat([p.flatten() for p in torch.autograd.grad(F.cross_entropy(net(inputs), labels), list(net.parameters()))])
    r = torch.cat([p.flatten() for p in torch.autograd.grad(
        F.cross_entropy(net(replay.examples), replay.labels), list(net.parameters()))])
    step = (net.get_params() - model.net.get_params()) / 0.1
    expected = g - torch.dot(g, r) / torch.dot(r, r) * r if torch.dot(g, r) < 0 else g
    assert torch.allclose(step, expected, atol=1e-5)
    assert torch.dot(step, r).item() >= -1e-5


# ---- gem ----


def test_gem_projection_on_two_constraints_matches_the_known_optimum() -> None:
    # min ||x - g||^2 s.t. m1.x >= 0, m2.x >= 0 with g = (1, -1), m1 = (-1, 1), m2 = (0, 1): the
    # closest point of the cone {x2 >= x1, x2 >= 0} to (1, -1) is its apex (0, 0) (dual v = (1, 0)).
    memories = torch.tensor([[-1.0, 1.0], [0.0, 1.0]])
    projected = project_to_cone(torch.tensor([1.0, -1.0]), memories, margin=0.0, eps=0.0)
    assert projected.tolist() == pytest.approx([0.0, 0.0], abs=1e-9)
    assert (memories @ projected >= -1e-9).all()


def test_gem_projection_with_the_margin() -> None:
    # One constraint: the dual is v = max(margin, -(m.g) / (m.m + eps)) = max(margin, 1 / 2.001).
    gradient, memory = torch.tensor([1.0, 0.0]), torch.tensor([[-1.0, 1.0]])
    assert project_to_cone(gradient, memory, margin=0.5).tolist() == pytest.approx([0.5, 0.5])  # v = 0.5
    assert project_to_cone(gradient, memory, margin=1.0).tolist() == pytest.approx([0.0, 1.0])  # v = 1
    assert project_to_cone(gradient, memory, margin=0.0).tolist() == pytest.approx([1 - 1 / 2.001, 1 / 2.001])


def test_gem_solution_satisfies_every_constraint_of_a_random_problem() -> None:
    generator = torch.Generator().manual_seed(0)
    memories = torch.randn(4, 30, generator=generator, dtype=torch.float64)
    gradient = -memories.sum(0) + 0.1 * torch.randn(30, generator=generator, dtype=torch.float64)
    assert (memories @ gradient < 0).any()
    # Exact dual (eps = 0): feasible, and optimal by the KKT conditions: x = g + M^T v with
    # v >= 0 and v_k = 0 wherever constraint k is not active.
    exact = project_to_cone(gradient, memories, margin=0.0, eps=0.0)
    products = memories @ exact
    assert (products >= -1e-9).all()
    v = torch.linalg.lstsq(memories.T, exact - gradient).solution
    assert torch.allclose(memories.T @ v, exact - gradient, atol=1e-8)
    assert (v >= -1e-8).all() and torch.all((products < 1e-8) | (v.abs() < 1e-8))
    # GEM's margin bounds the dual from below: x - g = M^T v with every v_k >= 0.5.
    moved = project_to_cone(gradient, memories, margin=0.5) - gradient
    v = torch.linalg.lstsq(memories.T, moved).solution
    assert torch.allclose(memories.T @ v, moved, atol=1e-8) and (v >= 0.5 - 1e-8).all()


def test_gem_memory_is_class_balanced_with_task_labels(make_model, make_batch) -> None:
    model = make_model("gem", buffer_size=8)
    for task in range(2):
        model.begin_task(task)
        data = model.training_data(task, model.context.task_data(task))
        model.end_task(task, data)
    # 8 // 4 seen classes = 2 per class; task 0's classes keep their first 2 of 4.
    assert sorted(model.buffer.labels.tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert model.buffer.task_labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    loss = model.observe(*make_batch(1, seed=3))
    assert loss > 0
