"""ReplayBuffer: filling, reservoir uniformity, later-wins on shared slots, sampling, checkpoints, errors."""

from __future__ import annotations

import io
import math
import random
from typing import Callable

import pytest
import torch

from mammoth.models.buffer import FIELDS, ReplayBuffer, replacement_slots
from mammoth.errors import ConfigError

# ---- construction and filling ----


@pytest.mark.parametrize("capacity", [0, -3, 2.5, True, "10"])
def test_invalid_capacity_raises_config_error(capacity: object) -> None:
    with pytest.raises(ConfigError, match=r"^buffer capacity=.* is not a positive integer; allowed: capacity >= 1"):
        ReplayBuffer(capacity)  # type: ignore[arg-type]


def test_fills_slots_in_arrival_order_before_capacity() -> None:
    buffer = ReplayBuffer(10, seed=0)
    assert buffer.is_empty() and len(buffer) == 0 and buffer.num_seen == 0 and buffer.examples is None
    buffer.add(torch.arange(3.0).view(3, 1), labels=torch.tensor([10, 11, 12]))
    buffer.add(torch.arange(3.0, 7.0).view(4, 1), labels=torch.tensor([13, 14, 15, 16]))
    assert not buffer.is_empty()
    assert len(buffer) == 7 and buffer.num_seen == 7
    assert buffer.examples.view(-1).tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert buffer.labels.tolist() == [10, 11, 12, 13, 14, 15, 16]
    assert buffer.logits is None and buffer.task_labels is None
    assert buffer.fields == ("examples", "labels")


def test_num_seen_counts_every_item_and_len_stops_at_capacity() -> None:
    buffer = ReplayBuffer(5, seed=0)
    for start in range(0, 23, 4):
        buffer.add(torch.arange(start, min(start + 4, 23)))
    assert buffer.num_seen == 23
    assert len(buffer) == 5
    assert buffer.examples.unique().numel() == 5


def test_a_batch_larger_than_capacity_fills_then_replaces() -> None:
    buffer = ReplayBuffer(4, seed=1)
    buffer.add(torch.arange(50))
    assert buffer.num_seen == 50 and len(buffer) == 4
    assert buffer.examples.unique().numel() == 4
    assert set(buffer.examples.tolist()) <= set(range(50))


def test_stores_detached_copies_with_the_incoming_dtypes() -> None:
    source = torch.ones(2, 3, requires_grad=True)
    logits = source * 2
    buffer = ReplayBuffer(4, seed=0)
    buffer.add(source, logits=logits, task_labels=torch.tensor([0, 0], dtype=torch.int8))
    with torch.no_grad():
        source.add_(5)
    assert torch.equal(buffer.examples, torch.ones(2, 3))
    assert not buffer.examples.requires_grad and not buffer.logits.requires_grad
    assert buffer.task_labels.dtype == torch.int8
    assert buffer.fields == ("examples", "logits", "task_labels")


def test_device_defaults_to_the_examples_device_or_the_given_one() -> None:
    lazy = ReplayBuffer(3)
    assert lazy.device is None
    lazy.add(torch.zeros(2, 1))
    assert lazy.device == torch.device("cpu")
    assert ReplayBuffer(3, device="cpu").device == torch.device("cpu")
    assert lazy.to("cpu") is lazy and lazy.examples.device == torch.device("cpu")


def test_add_refuses_other_fields_shapes_or_batch_sizes_than_the_first_add() -> None:
    buffer = ReplayBuffer(4, seed=0)
    buffer.add(torch.zeros(2, 3), labels=torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"got fields \['examples'\]; allowed: exactly the stored fields"):
        buffer.add(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"examples of item shape \(4,\); allowed: the stored shape \(3,\)"):
        buffer.add(torch.zeros(2, 4), labels=torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="batch sizes differ"):
        buffer.add(torch.zeros(2, 3), labels=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="allowed: a tensor with a batch dimension"):
        buffer.add(torch.tensor(1.0), labels=torch.zeros(2, dtype=torch.long))
    assert buffer.num_seen == 2


# ---- reservoir uniformity ----

N_ITEMS, CAPACITY, BATCH, TRIALS = 2000, 100, 100, 300

StreamFn = Callable[[int], list[int]]  # seed -> the item ids kept after streaming N_ITEMS items


def _stream_buffer(seed: int) -> list[int]:
    buffer = ReplayBuffer(CAPACITY, seed=seed)
    ids = torch.arange(N_ITEMS)
    for start in range(0, N_ITEMS, BATCH):
        buffer.add(ids[start : start + BATCH])
    return buffer.examples.tolist()


def _stream_reference(choose: Callable[[random.Random, int, int], int]) -> StreamFn:
    """A sequential reservoir whose replacement draw is ``choose(rng, position, batch_start)``."""

    def stream(seed: int) -> list[int]:
        rng, kept = random.Random(seed), []
        for position in range(N_ITEMS):
            if position < CAPACITY:
                kept.append(position)
                continue
            slot = choose(rng, position, position - position % BATCH)
            if slot < CAPACITY:
                kept[slot] = position
        return kept

    return stream


CORRECT_REFERENCE = _stream_reference(lambda rng, position, batch_start: rng.randint(0, position))
#: A plausible vectorisation bug: every item of a batch draws in [0, num_seen at the batch start].
BATCH_START_BUG = _stream_reference(lambda rng, position, batch_start: rng.randint(0, batch_start))
#: "Ignore later batch items": only the first item of each batch may replace a slot.
FIRST_OF_BATCH_ONLY = _stream_reference(
    lambda rng, position, batch_start: rng.randint(0, position) if position == batch_start else CAPACITY
)


def _keep_last(seed: int) -> list[int]:
    return list(range(N_ITEMS - CAPACITY, N_ITEMS))


def _keep_counts(stream: StreamFn) -> torch.Tensor:
    counts = torch.zeros(N_ITEMS)
    for trial in range(TRIALS):
        kept = stream(trial)
        assert len(kept) == CAPACITY == len(set(kept))
        counts[torch.tensor(kept)] += 1
    return counts


def _uniformity_failures(counts: torch.Tensor) -> list[str]:
    """Why the keep counts are not consistent with keep-probability capacity/seen for every item.

    Three checks, each with a ~5-sigma bound: the chi-square statistic over items (expected
    ``N(1-p)`` with standard deviation ``sqrt(2N(1-p))``), the kept count of each block of 100
    consecutive items (arrival order), and of each within-batch position.
    """
    p = CAPACITY / N_ITEMS
    expected = TRIALS * p
    failures = []
    chi_square = float(((counts - expected) ** 2 / expected).sum())
    chi_mean = N_ITEMS * (1 - p)
    if abs(chi_square - chi_mean) > 5 * math.sqrt(2 * chi_mean):
        failures.append(f"chi-square {chi_square:.0f}, expected {chi_mean:.0f}")
    for name, groups in [("arrival block", counts.view(20, -1)), ("batch position", counts.view(-1, BATCH).T)]:
        group_expected = expected * groups.shape[1]
        sigma = math.sqrt(group_expected * (1 - p))
        worst = float((groups.sum(1) - group_expected).abs().max())
        if worst > 5 * sigma:
            failures.append(f"{name} deviates by {worst:.0f} (5 sigma = {5 * sigma:.0f})")
    return failures


def test_every_item_is_kept_with_probability_capacity_over_seen() -> None:
    counts = _keep_counts(_stream_buffer)
    assert counts.sum() == TRIALS * CAPACITY
    assert _uniformity_failures(counts) == []
    # The mean keep frequency of the first and the last 500 items are both close to 100/2000.
    assert abs(counts[:500].mean() / TRIALS - 0.05) < 0.005
    assert abs(counts[-500:].mean() / TRIALS - 0.05) < 0.005


def test_the_uniformity_check_accepts_a_correct_reference() -> None:
    assert _uniformity_failures(_keep_counts(CORRECT_REFERENCE)) == []


@pytest.mark.parametrize(
    "broken",
    [_keep_last, BATCH_START_BUG, FIRST_OF_BATCH_ONLY],
    ids=["keep_last", "batch_start_bug", "first_of_batch_only"],
)
def test_the_uniformity_check_rejects_biased_reservoirs(broken: StreamFn) -> None:
    assert _uniformity_failures(_keep_counts(broken)) != []


# ---- later items win when several items of a batch pick the same slot ----


def test_replacement_slots_keep_the_last_item_of_each_slot() -> None:
    first, count, capacity = 5, 400, 5
    draws = torch.randint(0, 2**62, (count,), generator=torch.Generator().manual_seed(0))
    slots = (draws % torch.arange(first + 1, first + count + 1)).tolist()
    last = {}
    for item, slot in enumerate(slots):
        if slot < capacity:
            last[slot] = item
    assert len(last) == capacity and sum(slot < capacity for slot in slots) > capacity  # collisions happen
    expected = [capacity] * count  # the scratch row
    for slot, item in last.items():
        expected[item] = slot
    assert replacement_slots(first, count, capacity, torch.Generator().manual_seed(0)).tolist() == expected


def test_replacement_slots_send_items_beyond_the_capacity_to_the_scratch_row() -> None:
    slots = replacement_slots(10_000, 64, 5, torch.Generator().manual_seed(3))
    assert all(0 <= slot <= 5 for slot in slots.tolist())
    kept = [slot for slot in slots.tolist() if slot < 5]
    assert len(kept) == len(set(kept)) and slots.tolist().count(5) >= 64 - 5


def _sequential_reference(batches: list[list[int]], capacity: int, seed: int) -> tuple[list[int], int]:
    """Algorithm R one item at a time, with the buffer's draws: one integer in [0, 2**62) per item that
    arrives after the buffer is full, drawn per batch, taken modulo ``position + 1``.
    Returns the slots and how many times an item overwrote a slot written earlier in the same batch."""
    generator = torch.Generator().manual_seed(seed)
    slots: list[int] = []
    seen = collisions = 0
    for batch in batches:
        num_full = sum(1 for i in range(len(batch)) if seen + i >= capacity)
        draws = iter(torch.randint(0, 2**62, (num_full,), generator=generator).tolist())
        written: set[int] = set()
        for item in batch:
            if seen < capacity:
                slots.append(item)
                slot = seen
            else:
                slot = next(draws) % (seen + 1)
                if slot < capacity:
                    collisions += slot in written
                    slots[slot] = item
            written.add(slot)
            seen += 1
    return slots, collisions


@pytest.mark.parametrize("capacity", [1, 3, 8])
def test_vectorised_add_matches_the_sequential_algorithm(capacity: int) -> None:
    total_collisions = 0
    for seed in range(20):
        sizes = [5, 16, 1, 16, 16, 7, 30]
        ids = torch.arange(sum(sizes))
        batches = [chunk.tolist() for chunk in ids.split(sizes)]
        buffer = ReplayBuffer(capacity, seed=seed)
        for batch in batches:
            buffer.add(torch.tensor(batch), labels=torch.tensor(batch) * 10)
        expected, collisions = _sequential_reference(batches, capacity, seed)
        total_collisions += collisions
        assert buffer.examples.tolist() == expected
        assert buffer.labels.tolist() == [10 * item for item in expected]
    assert total_collisions > 10  # the streams do exercise several items of a batch picking one slot


# ---- sampling ----


def _filled_buffer(capacity: int = 20, items: int = 50, seed: int = 0) -> ReplayBuffer:
    buffer = ReplayBuffer(capacity, seed=seed)
    examples = torch.arange(items, dtype=torch.float32).view(items, 1, 1, 1).expand(items, 1, 2, 2).contiguous()
    buffer.add(examples, labels=torch.arange(items), logits=torch.arange(items, dtype=torch.float32).view(-1, 1) * 2)
    return buffer


@pytest.mark.parametrize("size, expected", [(5, 5), (20, 20), (64, 20), (0, 0)])
def test_sample_returns_distinct_items_with_their_indices(size: int, expected: int) -> None:
    buffer = _filled_buffer()
    batch = buffer.sample(size)
    assert batch.indices.shape == (expected,)
    assert batch.indices.unique().numel() == expected
    assert batch.examples.shape == (expected, 1, 2, 2)
    assert torch.equal(batch.examples, buffer.examples[batch.indices])
    assert torch.equal(batch.labels, buffer.labels[batch.indices])
    assert torch.equal(batch.logits, buffer.logits[batch.indices])
    assert batch.task_labels is None
    assert batch.examples.device == buffer.examples.device


def test_sample_from_a_partly_filled_buffer_only_uses_filled_slots() -> None:
    buffer = ReplayBuffer(100, seed=0)
    buffer.add(torch.arange(7))
    batch = buffer.sample(50)
    assert sorted(batch.examples.tolist()) == list(range(7))


def test_transform_is_applied_to_the_samples_only() -> None:
    buffer = _filled_buffer()
    stored = buffer.examples.clone()
    batch = buffer.sample(8, transform=lambda x, generator=None: (x - 0.5) / 0.5)
    assert torch.equal(batch.examples, (stored[batch.indices] - 0.5) / 0.5)
    assert torch.equal(buffer.examples, stored)
    assert torch.equal(batch.labels, buffer.labels[batch.indices])


def test_sample_is_reproducible_with_a_generator() -> None:
    buffer = _filled_buffer()
    first = buffer.sample(6, generator=torch.Generator().manual_seed(3))
    second = buffer.sample(6, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first.indices, second.indices)


def test_sample_errors() -> None:
    with pytest.raises(ValueError, match="the buffer is empty"):
        ReplayBuffer(3).sample(1)
    with pytest.raises(ValueError, match=r"size=-1; allowed: an integer >= 0"):
        _filled_buffer().sample(-1)


def test_replay_batch_to_moves_every_tensor() -> None:
    batch = _filled_buffer().sample(3).to("cpu")
    assert batch.task_labels is None and batch.examples.device == torch.device("cpu")
    assert batch._fields == (*FIELDS, "indices")


# ---- checkpoints ----


def _continue(buffer: ReplayBuffer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    examples = torch.arange(100, 160, dtype=torch.float32).view(60, 1, 1, 1).expand(60, 1, 2, 2).contiguous()
    buffer.add(examples, labels=torch.arange(100, 160), logits=torch.zeros(60, 1))
    batch = buffer.sample(7)
    return buffer.examples.clone(), buffer.labels.clone(), batch.indices


def test_state_dict_round_trip_continues_identically() -> None:
    original = _filled_buffer(seed=4)
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    buffer.seek(0)
    restored = ReplayBuffer(20, seed=999)
    restored.load_state_dict(torch.load(buffer))
    assert restored.num_seen == original.num_seen == 50 and len(restored) == 20
    assert restored.fields == original.fields
    assert torch.equal(restored.logits, original.logits)
    for after_original, after_restored in zip(_continue(original), _continue(restored)):
        assert torch.equal(after_original, after_restored)


def test_state_dict_is_a_snapshot() -> None:
    original = _filled_buffer()
    state = original.state_dict()
    saved = state["fields"]["examples"].clone()
    _continue(original)
    assert torch.equal(state["fields"]["examples"], saved)


def test_state_dict_of_an_empty_buffer_round_trips() -> None:
    restored = ReplayBuffer(5)
    restored.load_state_dict(ReplayBuffer(5, seed=0).state_dict())
    assert restored.is_empty() and restored.fields == ()
    restored.add(torch.zeros(2, 3))
    assert len(restored) == 2


def test_load_state_dict_refuses_another_capacity() -> None:
    with pytest.raises(ConfigError, match=r"^buffer capacity=20 in the state does not match; allowed: capacity=10"):
        ReplayBuffer(10).load_state_dict(_filled_buffer(capacity=20).state_dict())


# ---- a growing capacity (a memory per class) ----


def test_a_grown_reservoir_keeps_its_items_fills_the_new_slots_then_samples_the_whole_stream() -> None:
    buffer = ReplayBuffer(4, seed=3)
    buffer.add(torch.arange(10.0).view(10, 1), labels=torch.arange(10))
    kept = buffer.examples.view(-1).tolist()
    buffer.grow(7)
    assert (buffer.capacity, len(buffer), buffer.num_seen) == (7, 4, 10)
    assert buffer.examples.view(-1).tolist() == kept
    buffer.add(torch.arange(10.0, 12.0).view(2, 1), labels=torch.arange(10, 12))  # two of the 3 new slots
    assert buffer.examples.view(-1).tolist() == [*kept, 10.0, 11.0] and buffer.num_seen == 12
    # Item 12 fills the last slot; items 13..19 are positions 13..19 of the stream: each draws j in
    # [0, position] and replaces slot j when j < 7 (probability 7 / (position + 1)), the later one winning.
    replay = torch.Generator()
    replay.set_state(buffer.generator.get_state())
    draws = torch.randint(0, 2**62, (7,), generator=replay)
    expected = [*kept, 10.0, 11.0, 12.0]
    for item, draw in zip(range(13, 20), draws.tolist()):
        slot = draw % (item + 1)
        if slot < 7:
            expected[slot] = float(item)
    buffer.add(torch.arange(12.0, 20.0).view(8, 1), labels=torch.arange(12, 20))
    assert buffer.examples.view(-1).tolist() == expected and buffer.labels.tolist() == [int(v) for v in expected]
    assert (len(buffer), buffer.num_seen) == (7, 20)


def test_a_grown_buffer_round_trips_through_its_state() -> None:
    buffer = ReplayBuffer(3, seed=0)
    buffer.add(torch.arange(5.0).view(5, 1))
    buffer.grow(6)
    state = buffer.state_dict()
    assert (state["capacity"], state["num_seen"], state["filled"]) == (6, 5, 3)
    restored = ReplayBuffer(6, seed=1)
    restored.load_state_dict(state)
    assert (len(restored), restored.num_seen) == (3, 5) and torch.equal(restored.examples, buffer.examples)
    restored.add(torch.tensor([[7.0]]))
    assert restored.examples.view(-1).tolist()[3] == 7.0
    old_state = {key: value for key, value in state.items() if key != "filled"}  # before grow() existed
    old_state["capacity"], old_state["num_seen"] = 6, 3
    restored.load_state_dict(old_state)
    assert len(restored) == 3


def test_grow_refuses_a_smaller_capacity_and_an_empty_buffer_grows_too() -> None:
    buffer = ReplayBuffer(5, seed=0)
    with pytest.raises(ValueError, match=r"^ReplayBuffer.grow: capacity=4; allowed: at least the current 5$"):
        buffer.grow(4)
    buffer.grow(8)
    buffer.add(torch.arange(8.0))
    assert (buffer.capacity, len(buffer)) == (8, 8)
