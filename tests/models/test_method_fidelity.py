"""agem, gdumb and mer as the original Mammoth runs them: the memory each keeps and the replay
batch each draws (scripts/compare_original.py runs both codebases side by side)."""

from __future__ import annotations

import pytest
import torch

from mammoth.models.buffer import ReplayBuffer
from mammoth.errors import ConfigError
from mammoth.models.gdumb import GreedyClassBalancedMemory


def _record_samples(model) -> list:
    """Replace ``model.buffer.sample`` by a spy that records each call's size and batch."""
    sample, recorded = model.buffer.sample, []

    def spy(size, transform=None):
        recorded.append((size, sample(size, transform)))
        return recorded[-1][1]

    model.buffer.sample = spy
    return recorded


def _offer_stream(model, make_batch, batches: int = 3) -> list:
    """Offer ``batches`` batches of 8 per task to ``model`` (first epochs); return what was offered."""
    offered = []
    for task in range(2):
        model.begin_task(task)
        for seed in range(batches):
            batch = make_batch(task, size=8, seed=seed)
            model.observe(*batch)
            offered.append((batch[2], batch[1]))
    return offered


# ---- gdumb ----


def test_gdumb_memory_is_the_reservoir_of_the_stream_drawn_with_its_generator(make_model, make_batch) -> None:
    model = make_model("gdumb", buffer_size=8, fitting_epochs=1)
    assert isinstance(model.memory, ReplayBuffer)
    reference = ReplayBuffer(8)
    reference.generator.set_state(model.memory.generator.get_state())
    for examples, labels in _offer_stream(model, make_batch):
        reference.add(examples, labels=labels)
    examples, labels = model.memory_data()
    assert model.memory.num_seen == 48 and len(labels) == 8
    assert torch.equal(examples, reference.examples) and torch.equal(labels, reference.labels)
    # the generator is seeded from the run's seed: the same seed, the same memory
    again = make_model("gdumb", buffer_size=8, fitting_epochs=1)
    _offer_stream(again, make_batch)
    assert torch.equal(again.memory_data()[0], examples)


def test_gdumb_reservoir_follows_the_stream_where_greedy_balances_the_classes(make_model) -> None:
    # 36 examples of class 0 and 4 of class 1 offered to 8 slots
    labels = torch.tensor([0] * 36 + [1] * 4)[torch.randperm(40, generator=torch.Generator().manual_seed(1))]
    examples = torch.arange(40.0).view(40, 1)
    greedy = GreedyClassBalancedMemory(8)
    greedy.add(examples, labels)
    assert sorted(greedy.labels) == [0, 0, 0, 0, 1, 1, 1, 1]
    memory = make_model("gdumb", buffer_size=8).memory
    kept_of_class_1 = []
    for _ in range(300):
        memory.clear()
        memory.add(examples, labels=labels)
        kept_of_class_1.append(int((memory.labels == 1).sum()))
    # a uniform sample of the stream: 8 * 4 / 40 = 0.8 examples of class 1 on average (sd of the mean ~0.045)
    assert sum(kept_of_class_1) / 300 == pytest.approx(0.8, abs=0.2)


def test_gdumb_greedy_sampler_is_the_papers_memory(make_model, make_batch) -> None:
    model = make_model("gdumb", buffer_size=8, fitting_epochs=1, sampler="greedy")
    assert isinstance(model.memory, GreedyClassBalancedMemory)
    _offer_stream(model, make_batch)
    _, labels = model.memory_data()
    assert torch.bincount(labels, minlength=4).tolist() == [2, 2, 2, 2]  # 8 // 4 classes each


def test_gdumb_sampler_is_checked(make_model) -> None:
    with pytest.raises(ConfigError, match=r"^model\.sampler: invalid value 'balanced'.*allowed values: 'reservoir', 'greedy'"):
        make_model("gdumb", sampler="balanced")


def test_gdumb_reservoir_memory_resumes_identically(make_model, make_batch) -> None:
    model = make_model("gdumb", buffer_size=8, fitting_epochs=1)
    model.begin_task(0)
    model.observe(*make_batch(0, size=8))
    model.observe(*make_batch(0, size=8, seed=1))
    resumed = make_model("gdumb", seed=3, buffer_size=8, fitting_epochs=1)
    resumed.load_extra_state(model.extra_state())
    for each in (model, resumed):
        each.observe(*make_batch(0, size=8, seed=2))
    assert resumed.memory.num_seen == 24
    assert torch.equal(resumed.memory_data()[0], model.memory_data()[0])
    assert torch.equal(resumed.memory_data()[1], model.memory_data()[1])


# ---- agem ----


def test_agem_memory_is_one_non_augmented_batch_of_each_finished_task(make_model, dataset) -> None:
    model = make_model("agem", buffer_size=32)
    model.begin_task(0)
    data = model.context.task_data(0)
    model.end_task(0, data)
    # the original's end_task: next(iter(train_loader)) -> batch_size (8) random non-augmented examples
    stored = model.buffer.examples
    assert stored.shape == (8, 1, 4, 4)
    train_x = data.read(torch.arange(len(data)), "cpu")
    rows = [int(torch.nonzero((train_x == example).flatten(1).all(1))[0]) for example in stored]
    assert len(set(rows)) == 8
    assert torch.equal(model.buffer.labels, data.labels[rows])
    # the 8 are drawn from the run's generator: the same run draws the same 8
    again = make_model("agem", buffer_size=32)
    again.begin_task(0)
    again.end_task(0, again.context.task_data(0))
    assert torch.equal(again.buffer.examples, stored)


@pytest.mark.parametrize(("minibatch_size", "expected"), [(None, 4), (6, 6), (128, 8)])
def test_agem_replay_batch_is_the_incoming_batch_size_unless_minibatch_size_is_set(
        make_model, make_batch, dataset, minibatch_size, expected) -> None:
    model = make_model("agem", buffer_size=32, minibatch_size=minibatch_size)
    model.begin_task(0)
    model.end_task(0, model.context.task_data(0))
    model.begin_task(1)
    recorded = _record_samples(model)
    model.observe(*make_batch(1, size=4))
    (size, replay), = recorded
    # null: the batch size, what the original replays (its --batch_size replaces --minibatch_size)
    assert size == (minibatch_size or 4) and replay.examples.shape[0] == expected
    assert set(replay.indices.tolist()) <= set(range(8)) and len(set(replay.indices.tolist())) == expected


# ---- mer ----


def test_mer_replays_the_incoming_batch_size_for_each_example_by_default(make_model, make_batch) -> None:
    model = make_model("mer", beta=1.0, gamma=1.0, batch_num=2)
    model.begin_task(0)
    model.observe(*make_batch(0, size=8))
    assert len(model.buffer) == 8
    recorded = _record_samples(model)
    model.observe(*make_batch(0, size=4, seed=1))
    # the original runs batch_size=1 with --batch_size replays per step; here each of the 4
    # examples runs batch_num=2 steps, each with a replay batch of 4
    assert [size for size, _ in recorded] == [4] * 8
    assert all(batch.examples.shape[0] == 4 for _, batch in recorded)
    assert len(model.buffer) == 12
