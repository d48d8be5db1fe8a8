"""er, der, derpp: what the buffer stores, the exact replay losses, replay sizes, devices, checkpoints."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from mammoth.engine.context import build_context
from mammoth.errors import ConfigError
from mammoth.models.base import ReplayModel
from mammoth.models.buffer import ReplayBatch


@pytest.fixture
def make_model(make_begun_model):
    """Models begun on task 0, as the harness begins them before the first batch."""
    return make_begun_model

REPLAY_METHODS = ("er", "der", "derpp")


class RecordingSample:
    """Wraps ``buffer.sample`` with a seeded generator and records each call's size and result."""

    def __init__(self, buffer) -> None:
        self.sample, self.generator = buffer.sample, torch.Generator().manual_seed(7)
        self.sizes: list[int] = []
        self.batches: list[ReplayBatch] = []

    def __call__(self, size, transform=None, generator=None) -> ReplayBatch:
        batch = self.sample(size, transform=transform, generator=self.generator)
        self.sizes.append(size)
        self.batches.append(batch)
        return batch


def _observe_recorded(model, batch):
    """Observe ``batch`` with a recorded buffer.sample; return (loss, the net before the step, recorder)."""
    recorder = RecordingSample(model.buffer)
    model.buffer.sample = recorder
    net_before = copy.deepcopy(model.net)
    loss = model.observe(*batch)
    return loss, net_before, recorder


# ---- what the buffer stores ----


@pytest.mark.parametrize("name", REPLAY_METHODS)
def test_the_buffer_stores_the_non_augmented_examples(name, make_model, make_batch) -> None:
    model = make_model(name, buffer_size=32)
    inputs, labels, not_aug = make_batch(0)
    model.observe(inputs, labels, not_aug)
    assert model.buffer.num_seen == 8
    assert torch.equal(model.buffer.examples, not_aug)
    assert not torch.equal(model.buffer.examples, inputs)


@pytest.mark.parametrize(
    "name, fields",
    [("er", ("examples", "labels")), ("der", ("examples", "logits")), ("derpp", ("examples", "labels", "logits"))],
)
def test_each_method_stores_its_fields(name, fields, make_model, make_batch) -> None:
    model = make_model(name)
    model.observe(*make_batch(0))
    assert model.buffer.fields == fields
    if "labels" in fields:
        assert torch.equal(model.buffer.labels, make_batch(0)[1])


@pytest.mark.parametrize("name", ["der", "derpp"])
def test_der_stores_the_logits_the_network_produced(name, make_model, make_batch) -> None:
    model = make_model(name)
    model.observe(*make_batch(0))  # fills the buffer, so the next step also replays
    inputs, labels, not_aug = make_batch(0, seed=1)
    net_before = copy.deepcopy(model.net)
    model.observe(inputs, labels, not_aug)
    stored = model.buffer.logits[8:16]
    assert torch.allclose(stored, net_before(inputs), atol=1e-6)
    assert not torch.allclose(stored, model.net(inputs), atol=1e-4)  # not the logits after the step
    assert not stored.requires_grad


# ---- the losses ----


@pytest.mark.parametrize("name", REPLAY_METHODS)
def test_the_first_step_has_nothing_to_replay_and_matches_sgd(name, make_model, make_batch) -> None:
    model, sgd = make_model(name), make_model("sgd")
    batch = make_batch(0)
    loss, _, recorder = _observe_recorded(model, batch)
    assert recorder.sizes == []
    assert loss == pytest.approx(sgd.observe(*batch), rel=1e-6)
    assert torch.allclose(model.net.get_params(), sgd.net.get_params())


def test_er_loss_is_cross_entropy_on_the_batch_joined_with_a_replay_minibatch(make_model, make_batch, dataset) -> None:
    model = make_model("er")
    model.observe(*make_batch(0))
    inputs, labels, not_aug = make_batch(1)
    loss, net, recorder = _observe_recorded(model, (inputs, labels, not_aug))
    (replay,) = recorder.batches
    assert recorder.sizes == [8]
    stored = model.buffer.examples[replay.indices]
    # Replayed examples are augmented at random: each is the stored one, normalised, flipped or not, and
    # some are flipped (the draws of this seeded run), which a replay without augmentation never is.
    plain, flipped = dataset.test_transform(stored), dataset.test_transform(stored.flip(-1))
    is_plain = (replay.examples == plain).flatten(1).all(1)
    is_flipped = (replay.examples == flipped).flatten(1).all(1)
    assert bool((is_plain | is_flipped).all()) and 0 < int((is_flipped & ~is_plain).sum()) < len(stored)
    expected = F.cross_entropy(net(torch.cat([inputs, replay.examples])), torch.cat([labels, replay.labels]))
    assert loss == pytest.approx(expected.item(), rel=1e-6)
    assert loss != pytest.approx(F.cross_entropy(net(inputs), labels).item(), rel=1e-3)


def test_der_loss_adds_alpha_times_the_logit_mse(make_model, make_batch) -> None:
    model = make_model("der", alpha=0.7)
    model.observe(*make_batch(0))
    inputs, labels, not_aug = make_batch(1)
    loss, net, recorder = _observe_recorded(model, (inputs, labels, not_aug))
    (replay,) = recorder.batches
    cross_entropy = F.cross_entropy(net(inputs), labels)
    expected = cross_entropy + 0.7 * F.mse_loss(net(replay.examples), replay.logits)
    assert loss == pytest.approx(expected.item(), rel=1e-6)
    assert loss > cross_entropy.item() + 1e-4


def test_derpp_loss_uses_two_independent_replay_samples(make_model, make_batch) -> None:
    model = make_model("derpp", alpha=0.2, beta=0.9, buffer_size=32)
    for seed in range(3):
        model.observe(*make_batch(0, seed=seed))
    inputs, labels, not_aug = make_batch(1)
    loss, net, recorder = _observe_recorded(model, (inputs, labels, not_aug))
    first, second = recorder.batches
    assert recorder.sizes == [8, 8]
    assert not torch.equal(first.indices, second.indices)
    expected = (
        F.cross_entropy(net(inputs), labels)
        + 0.2 * F.mse_loss(net(first.examples), first.logits)
        + 0.9 * F.cross_entropy(net(second.examples), second.labels)
    )
    assert loss == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("name", REPLAY_METHODS)
def test_minibatch_size_sets_the_replay_size(name, make_model, make_batch) -> None:
    model = make_model(name, minibatch_size=3)
    model.observe(*make_batch(0))
    _, _, recorder = _observe_recorded(model, make_batch(0, seed=1))
    assert set(recorder.sizes) == {3}
    assert all(len(batch.indices) == 3 for batch in recorder.batches)


def test_er_buffer_holds_both_tasks_after_training_on_them(make_model, make_batch) -> None:
    model = make_model("er", buffer_size=20)
    for task in range(2):
        model.begin_task(task)
        for seed in range(10):
            model.observe(*make_batch(task, seed=seed))
    assert model.buffer.num_seen == 160 and len(model.buffer) == 20
    assert set(model.buffer.labels.tolist()) == {0, 1, 2, 3}


# ---- buffer device and checkpoints ----


@pytest.mark.parametrize("name", REPLAY_METHODS)
def test_buffer_device(name, make_model, make_batch) -> None:
    on_cpu = make_model(name, buffer_device="cpu")
    assert on_cpu.buffer.device == torch.device("cpu")
    training = make_model(name)
    assert training.buffer.device is None  # the device of the first examples it is given
    training.observe(*make_batch(0))
    assert training.buffer.device == training.device


@pytest.mark.parametrize("name", REPLAY_METHODS)
def test_extra_state_round_trip_restores_the_buffer(name, make_model, make_batch) -> None:
    model = make_model(name, buffer_size=10)
    for seed in range(3):
        model.observe(*make_batch(0, seed=seed))
    restored = make_model(name, buffer_size=10, seed=1)
    restored.load_state_dict(model.state_dict())
    restored.load_extra_state(copy.deepcopy(model.extra_state()))
    assert restored.buffer.num_seen == 24
    for field in model.buffer.fields:
        assert torch.equal(getattr(restored.buffer, field), getattr(model.buffer, field))
    batch = make_batch(1)
    # the replayed examples' random flips come from the run's generator, which a checkpoint restores
    restored.context.generator.set_state(model.context.generator.get_state())
    torch.manual_seed(5)
    restored_loss = restored.observe(*batch)
    torch.manual_seed(99)  # torch's global generator is not used
    assert restored_loss == pytest.approx(model.observe(*batch), rel=1e-6)
    assert torch.equal(restored.buffer.examples, model.buffer.examples)


@pytest.mark.parametrize("name", REPLAY_METHODS)
def test_the_buffer_generator_is_seeded_from_the_runs_generator(name, make_model, make_net, dataset) -> None:
    net = make_net()
    before = torch.get_rng_state()
    built = ReplayModel(net, dataset, buffer_size=4)
    built.attach(build_context(dataset, "cpu", torch.Generator().manual_seed(4)))
    assert torch.equal(torch.get_rng_state(), before)  # building and attaching draw nothing from torch's generator
    same, again, other = make_model(name, seed=4), make_model(name, seed=4), make_model(name, seed=5)
    assert torch.equal(built.buffer.generator.get_state(), same.buffer.generator.get_state())
    assert torch.equal(same.buffer.generator.get_state(), again.buffer.generator.get_state())
    assert not torch.equal(same.buffer.generator.get_state(), other.buffer.generator.get_state())


def test_a_memory_larger_than_the_runs_training_data_is_refused_at_attach(make_model) -> None:
    with pytest.raises(ConfigError, match=r"^model.buffer_size=33 is larger than the 32 training examples of fake; allowed: at most 32"):
        make_model("er", buffer_size=33)
    with pytest.raises(ConfigError, match=r"^model.buffer_size=33 is larger than the 32 training examples of fake"):
        make_model("gdumb", buffer_size=33)
    assert make_model("er", buffer_size=32).buffer_size == 32


# ---- a memory per class (model.memory_per_class) ----


def test_a_memory_per_class_grows_with_the_classes_at_begin_task(make_model, make_batch) -> None:
    model = make_model("er", memory_per_class=3)  # begun on task 0 of the fake dataset: classes 0, 1 then 2, 3
    assert (model.buffer_size, model.buffer.capacity) == (None, 6) and model.memory_capacity(0) == 6
    for seed in range(4):
        model.observe(*make_batch(0, seed=seed))
    kept = model.buffer.examples.clone()
    assert (len(model.buffer), model.buffer.num_seen) == (6, 32)
    model.begin_task(1)
    assert (model.buffer.capacity, len(model.buffer)) == (12, 6) and torch.equal(model.buffer.examples, kept)
    model.observe(*make_batch(1, seed=0))  # 8 items: the first 6 fill the new slots, 2 go through the reservoir
    assert len(model.buffer) == 12 and model.buffer.num_seen == 40
    assert set(model.buffer.labels[6:].tolist()) <= {2, 3}


def test_the_classes_a_memory_per_class_counts_as_seen() -> None:
    from hand_dataset import HandDataset
    from mammoth.models.base import classes_seen

    # class-IL: the classes of tasks 0..t; domain-IL: each task's 4 classes again, as the original counts them
    assert [classes_seen(HandDataset("class-il", 3, 2).context(), task) for task in range(3)] == [2, 4, 6]
    assert [classes_seen(HandDataset("domain-il", 3, 4).context(), task) for task in range(3)] == [4, 8, 12]


def test_a_class_balanced_memory_keeps_memory_per_class_of_each_class(make_model) -> None:
    extra = {"bic": {"bic_epochs": 1}, "podnet": {"ft_epochs": 1}, "lucir": {"fitting_epochs": 1}}
    for name in ("icarl", "gem", "bic", "wa", "podnet", "lucir"):
        model = make_model(name, memory_per_class=3, **extra.get(name, {}))
        for task in range(2):
            model.begin_task(task)
            model.end_task(task, model.context.task_data(task))
            counts = torch.bincount(model.buffer.labels.cpu(), minlength=4).tolist()
            assert counts == ([3, 3, 0, 0] if task == 0 else [3, 3, 3, 3]), name


@pytest.mark.parametrize("sampler", ["reservoir", "greedy"])
def test_gdumbs_memory_per_class_grows_with_the_classes(sampler, make_model) -> None:
    model = make_model("gdumb", memory_per_class=3, sampler=sampler, fitting_epochs=1)
    for task in range(2):
        model.begin_task(task)
        assert model.memory.capacity == 6 * (task + 1)
        model.end_task(task, model.context.task_data(task))
        assert len(model.memory) == 6 * (task + 1)
    labels = model.memory_data()[1]
    assert set(labels.tolist()) == {0, 1, 2, 3}
    if sampler == "greedy":  # class-balanced: 3 of each class
        assert torch.bincount(labels.cpu(), minlength=4).tolist() == [3, 3, 3, 3]


def test_a_method_with_a_fixed_memory_refuses_a_memory_per_class(make_model) -> None:
    with pytest.raises(ConfigError, match=r"^model.memory_per_class=3 is not supported by XDer, whose memory has a fixed "
                                          r"size \(docs/methods.md\); allowed: model.buffer_size$"):
        make_model("xder", buffer_size=32, memory_per_class=3, alpha=0.5, beta=0.5)


def test_a_memory_per_class_larger_than_the_training_data_is_refused_at_attach(make_model) -> None:
    with pytest.raises(ConfigError) as refused:
        make_model("er", memory_per_class=9)
    assert str(refused.value) == (
        "model.memory_per_class=9 keeps 36 examples of 4 classes, more than the 32 training examples of fake; "
        "allowed: at most 8 per class (a memory that holds everything is joint training: model=joint)")
    assert make_model("er", memory_per_class=8).memory_per_class == 8
