"""ReplayBuffer: a fixed-capacity reservoir of past examples and their labels, logits, task labels.

Reservoir sampling (Vitter's algorithm R) keeps every example streamed so far with the same
probability ``capacity / num_seen``. Insertion is vectorised over a batch: the random slot of
every arriving item is drawn at once, and when several items of one batch pick the same slot
the later one wins, exactly as in the one-at-a-time algorithm.

The buffer stores examples as given (non-augmented); :meth:`ReplayBuffer.sample` applies a
transform such as ``dataset.train_transform`` to the sampled copies.

A memory of ``model.memory_per_class`` examples per class grows its capacity as classes arrive
(:meth:`ReplayBuffer.grow`): the items kept stay in their slots, the next items offered fill the
new slots (as a reservoir that is not full yet stores every item), and once full it goes on as
reservoir sampling of the whole stream with the larger capacity (item ``p`` replaces a slot with
probability ``capacity / (p + 1)``).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import torch
from torch import Tensor

from mammoth.config.value_checks import check_positive_int
from mammoth.errors import ConfigError

#: The fields a buffer can store, in order; ``examples`` is always stored.
FIELDS = ("examples", "labels", "logits", "task_labels")

#: Random integers are drawn in [0, 2**62) and reduced modulo the number of candidate slots.
_DRAW_HIGH = 2**62


class ReplayBatch(NamedTuple):
    """Items sampled from a :class:`ReplayBuffer`; a field the buffer does not store is None."""

    examples: Tensor
    labels: Optional[Tensor]
    logits: Optional[Tensor]
    task_labels: Optional[Tensor]
    indices: Tensor

    def to(self, device: str | torch.device) -> "ReplayBatch":
        """The same batch with every tensor moved to ``device``."""
        return ReplayBatch(*(None if value is None else value.to(device) for value in self))


def replacement_slots(first_position: int, count: int, capacity: int, generator: torch.Generator) -> Tensor:
    """The slot each of ``count`` items arriving at a FULL reservoir writes to; ``capacity`` = none.

    Item ``i`` arrives at position ``p = first_position + i`` (>= capacity), draws ``j`` uniform
    in ``[0, p]`` (one draw per item, in order) and replaces slot ``j`` if ``j < capacity``. When
    several items pick one slot only the LAST keeps it, as in the one-at-a-time algorithm; the
    others, like the items that drew no slot, get ``capacity``: a scratch row whose content is
    never read, so one scatter per field stores the batch without a loop or a compaction.
    """
    draws = torch.randint(0, _DRAW_HIGH, (count,), generator=generator, device=generator.device).cpu()
    slots = (draws % torch.arange(first_position + 1, first_position + count + 1)).clamp_(max=capacity)
    items = torch.arange(count)
    last_item = torch.full((capacity + 1,), -1, dtype=torch.long).scatter_reduce_(0, slots, items, reduce="amax")
    return torch.where(last_item[slots] == items, slots, capacity)


class ReplayBuffer:
    """A reservoir of at most ``capacity`` items, stored on ``device`` (None: that of the first examples).

    The stored fields (any of ``examples``, ``labels``, ``logits``, ``task_labels``; examples
    always) are fixed by the first :meth:`add` and allocated then at full capacity with the
    incoming shapes and dtypes. Random draws use the buffer's own generator (seeded with ``seed``,
    or from torch's global generator when None), which :meth:`state_dict` saves; a method's buffer
    is seeded from the run's generator (``ReplayModel.attach``).
    """

    def __init__(self, capacity: int, device: str | torch.device | None = None, seed: int | None = None) -> None:
        check_positive_int("buffer capacity", capacity)
        self.capacity = capacity
        self.device = None if device is None else torch.device(device)
        self.generator = torch.Generator()
        self.generator.manual_seed(int(torch.randint(0, _DRAW_HIGH, (1,)).item()) if seed is None else seed)
        self._storage: dict[str, Tensor] = {}
        self._num_seen = 0
        #: The filled slots: ``min(num_seen, capacity)`` unless the capacity grew (:meth:`grow`).
        self._filled_slots = 0
        #: While set, :meth:`add` and :meth:`update` first pass every field through it (a method's
        #: buffer: ``TrainingContext.gather_shards``, which in a step on several processes returns the
        #: rows of every rank, in rank order), so every rank's buffer stays the same.
        self.gather: Optional[Callable[[Tensor], Tensor]] = None

    # ---- size ----

    def __len__(self) -> int:
        """The number of filled slots: ``min(num_seen, capacity)``, or fewer after :meth:`grow`
        until the next items offered fill the new slots."""
        return self._filled_slots

    def grow(self, capacity: int) -> None:
        """Raise the capacity to ``capacity`` (a memory per class, as classes arrive); the stored
        items keep their slots and the next items offered fill the new ones. A smaller capacity
        is refused (a method that shrinks its memory removes items itself)."""
        check_positive_int("buffer capacity", capacity)
        if capacity < self.capacity:
            raise ValueError(f"ReplayBuffer.grow: capacity={capacity}; allowed: at least the current {self.capacity}")
        if capacity == self.capacity:
            return
        old, self.capacity = self._storage, capacity
        if old:
            self._allocate({name: (value.shape[1:], value.dtype, value.device) for name, value in old.items()})
            for name, value in old.items():
                self._storage[name][: len(self)] = value[: len(self)]

    @property
    def num_seen(self) -> int:
        """How many items :meth:`add` has been given in total (kept or not)."""
        return self._num_seen

    def is_empty(self) -> bool:
        """True while nothing has been added."""
        return len(self) == 0

    @property
    def fields(self) -> tuple[str, ...]:
        """The names of the stored fields (empty before the first :meth:`add`)."""
        return tuple(name for name in FIELDS if name in self._storage)

    # ---- stored contents (the filled slots, in slot order; None for a field not stored) ----

    @property
    def examples(self) -> Optional[Tensor]:
        """The stored examples (non-augmented), one per filled slot."""
        return self._filled("examples")

    @property
    def labels(self) -> Optional[Tensor]:
        """The stored labels, or None if the buffer does not store them."""
        return self._filled("labels")

    @property
    def logits(self) -> Optional[Tensor]:
        """The stored logits, or None if the buffer does not store them."""
        return self._filled("logits")

    @property
    def task_labels(self) -> Optional[Tensor]:
        """The stored task labels, or None if the buffer does not store them."""
        return self._filled("task_labels")

    def _filled(self, name: str) -> Optional[Tensor]:
        storage = self._storage.get(name)
        return None if storage is None else storage[: len(self)]

    # ---- insertion ----

    def add(
        self,
        examples: Tensor,
        labels: Optional[Tensor] = None,
        logits: Optional[Tensor] = None,
        task_labels: Optional[Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> None:
        """Offer a batch to the reservoir; kept items are stored as detached copies.

        ``generator`` overrides the buffer's own generator for this call.
        """
        batch = {"examples": examples, "labels": labels, "logits": logits, "task_labels": task_labels}
        batch = {name: value for name, value in batch.items() if value is not None}
        self._check_batch(batch)
        if self.gather is not None:
            batch = {name: self.gather(value.detach()) for name, value in batch.items()}
            examples = batch["examples"]
        if not self._storage:
            self._allocate({name: (value.shape[1:], value.dtype, value.device) for name, value in batch.items()})
        size = examples.shape[0]
        start, fill = self._filled_slots, min(size, self.capacity - self._filled_slots)
        slots = None
        if size > fill:  # items arriving at a full buffer: one draw each, the last writer wins
            slots = replacement_slots(self._num_seen + fill, size - fill, self.capacity, generator or self.generator)
            slots = slots.to(self.device)
        for name, value in batch.items():
            storage = self._storage[name]
            value = value.detach().to(storage.device, storage.dtype)
            if fill:
                storage[start : start + fill] = value[:fill]
            if slots is not None:
                storage.index_copy_(0, slots, value[fill:])
        self._num_seen += size
        self._filled_slots += fill

    def _check_batch(self, batch: dict[str, Any]) -> None:
        for name, value in batch.items():
            if not isinstance(value, Tensor) or value.dim() == 0:
                raise ValueError(
                    f"ReplayBuffer.add: {name} is {type(value).__name__}; allowed: a tensor with a batch dimension"
                )
        size = batch["examples"].shape[0]
        sizes = {name: value.shape[0] for name, value in batch.items()}
        if any(other != size for other in sizes.values()):
            raise ValueError(f"ReplayBuffer.add: batch sizes differ {sizes}; allowed: the same first dimension")
        if self._storage and set(batch) != set(self._storage):
            raise ValueError(
                f"ReplayBuffer.add: got fields {sorted(batch)}; "
                f"allowed: exactly the stored fields {sorted(self._storage)}"
            )
        for name, value in batch.items():
            storage = self._storage.get(name)
            if storage is not None and value.shape[1:] != storage.shape[1:]:
                raise ValueError(
                    f"ReplayBuffer.add: {name} of item shape {tuple(value.shape[1:])}; "
                    f"allowed: the stored shape {tuple(storage.shape[1:])}"
                )

    def _allocate(self, layout: dict[str, tuple[torch.Size, torch.dtype, torch.device]]) -> None:
        """Allocate every field at full capacity, plus the scratch row of :func:`replacement_slots`,
        on ``self.device`` (default: the examples' device)."""
        if self.device is None:
            self.device = layout["examples"][2]
        self._storage = {
            name: torch.zeros((self.capacity + 1, *shape), dtype=dtype, device=self.device)
            for name, (shape, dtype, _) in layout.items()
        }

    # ---- sampling ----

    def sample(
        self,
        size: int,
        transform: Optional[Callable[[Tensor], Tensor]] = None,
        generator: Optional[torch.Generator] = None,
    ) -> ReplayBatch:
        """``min(size, len(self))`` distinct items, on the storage device, with their slot ``indices``.

        ``transform`` (e.g. ``dataset.train_transform``) is applied to the sampled examples only;
        the stored ones are not changed. ``generator`` overrides the buffer's own generator.
        """
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"ReplayBuffer.sample: size={size!r}; allowed: an integer >= 0")
        if self.is_empty():
            raise ValueError("ReplayBuffer.sample: the buffer is empty; allowed: sampling after the first add")
        generator = generator or self.generator
        order = torch.randperm(len(self), generator=generator, device=generator.device)
        indices = order[: min(size, len(self))].to(self.device)
        values = {name: storage.index_select(0, indices) for name, storage in self._storage.items()}  # faster than [indices]
        if transform is not None:
            values["examples"] = transform(values["examples"])
        return ReplayBatch(indices=indices, **{name: values.get(name) for name in FIELDS})

    def clear(self) -> None:
        """Remove every item (``num_seen`` back to 0); the generator, device and capacity are kept."""
        self._storage = {}
        self._num_seen = 0
        self._filled_slots = 0

    def update(self, indices: Tensor, **values: Tensor) -> None:
        """Overwrite stored fields of the filled slots ``indices`` (as :meth:`sample` returns them),
        e.g. ``update(batch.indices, logits=new_logits)``; examples keep their place."""
        if self.gather is not None:
            indices = self.gather(indices.to(self.device))
            values = {name: self.gather(value.detach()) for name, value in values.items()}
        for name, value in values.items():
            storage = self._storage.get(name)
            if storage is None:
                raise ValueError(f"ReplayBuffer.update: {name!r} is not stored; allowed: {', '.join(self.fields)}")
            if indices.numel() and int(indices.max()) >= len(self):
                raise ValueError(f"ReplayBuffer.update: slot {int(indices.max())} is not filled; allowed: 0..{len(self) - 1}")
            storage.index_copy_(0, indices.to(storage.device), value.detach().to(storage.device, storage.dtype))

    # ---- device and checkpoints ----

    def to(self, device: str | torch.device) -> "ReplayBuffer":
        """Move the storage (and future allocations) to ``device``; returns the buffer."""
        self.device = torch.device(device)
        self._storage = {name: storage.to(self.device) for name, storage in self._storage.items()}
        return self

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue identically: filled slots, ``num_seen``, generator state
        (``filled``: how many slots are filled, fewer than ``min(num_seen, capacity)`` after :meth:`grow`)."""
        return {
            "capacity": self.capacity,
            "num_seen": self._num_seen,
            "filled": self._filled_slots,
            "generator": self.generator.get_state(),
            "fields": {name: storage[: len(self)].clone() for name, storage in self._storage.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the capacity must be this buffer's (a memory per class
        grows to the state's capacity first: :meth:`grow`)."""
        if state["capacity"] != self.capacity:
            raise ConfigError(
                f"buffer capacity={state['capacity']} in the state does not match; allowed: capacity={self.capacity}"
            )
        fields = state["fields"]
        most = min(int(state["num_seen"]), self.capacity)
        filled = int(state.get("filled", most))  # states written before grow() existed: min(num_seen, capacity)
        if isinstance(state.get("filled"), bool) or not 0 <= filled <= most:
            raise ValueError(f"buffer state: filled={state.get('filled')!r}; allowed: 0..{most} (num_seen={state['num_seen']})")
        if fields and (set(fields) - set(FIELDS) or "examples" not in fields):
            raise ValueError(f"buffer state has fields {sorted(fields)}; allowed: examples plus any of {FIELDS[1:]}")
        if any(len(value) != filled for value in fields.values()):
            raise ValueError(f"buffer state: every field must have {filled} rows (num_seen={state['num_seen']})")
        self._num_seen = int(state["num_seen"])
        self._filled_slots = filled
        self.generator.set_state(state["generator"].cpu())
        self._storage = {}
        if fields:
            self._allocate({name: (value.shape[1:], value.dtype, value.device) for name, value in fields.items()})
            for name, value in fields.items():
                self._storage[name][:filled] = value.to(self.device)
