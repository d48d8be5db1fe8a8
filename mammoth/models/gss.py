"""gss: Gradient-based Sample Selection (Aljundi et al., "Gradient based sample selection for
online continual learning", NeurIPS 2019), as the original Mammoth's ``gss`` (its greedy variant)."""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from mammoth.backbones.base import MammothBackbone
from mammoth.config.value_checks import check_positive_int
from mammoth.errors import ConfigError
from mammoth.models.base import ReplayModel
from mammoth.models.registry import register_model

#: The score a batch gets while the memory is empty (the original's ``c = 0.1``).
FIRST_SCORE = 0.1


def weighted_index(weights: Tensor, generator: torch.Generator) -> int:
    """An index drawn with probability proportional to ``weights``: the first whose cumulative
    weight (float64) exceeds one uniform draw from ``generator`` times the total."""
    cumulative = torch.cumsum(weights.to(torch.float64), 0)
    target = torch.rand((), generator=generator, dtype=torch.float64) * cumulative[-1]
    return int(torch.searchsorted(cumulative, target, right=True).clamp(max=len(weights) - 1))


class GradientMemory:
    """The original's GSS buffer: ``capacity`` examples with labels and a score each (the highest
    cosine similarity + 1 of its gradient to those of a sample of the memory when it entered).

    Filled in arrival order until full; then a batch scoring below 1 offers each of its examples:
    a stored slot ``i`` is drawn with probability proportional to its score and replaced with
    probability ``score_i / (score_i + score_x)``. Replay batches walk the memory in an order drawn
    afresh at each step (``reset``). Every draw comes from :attr:`generator`.
    """

    def __init__(self, capacity: int, device: Optional[str] = None) -> None:
        self.capacity = capacity
        self.device = device  # None: that of the first examples
        self.generator = torch.Generator().manual_seed(0)
        self.examples: Optional[Tensor] = None
        self.labels: Optional[Tensor] = None
        self.scores: Optional[Tensor] = None
        self.num_seen = 0
        self.gather: Optional[Callable[[Tensor], Tensor]] = None  # ReplayModel.attach sets it; one process only
        self._order = torch.zeros(0, dtype=torch.long)
        self._position = 0
        self._cache: dict[int, Tensor] = {}

    def __len__(self) -> int:
        return min(self.num_seen, self.capacity)

    def is_empty(self) -> bool:
        """Whether nothing was ever offered."""
        return self.num_seen == 0

    def reset(self) -> None:
        """Start a step: forget the cached gradients, draw the order replay batches walk the memory in."""
        self._cache = {}
        self._position = 0
        self._order = torch.randperm(len(self), generator=self.generator)

    def next_batch(self, size: int) -> tuple[Tensor, Tensor]:
        """The next ``size`` examples and labels in this step's order (wrapping to the start at the end)."""
        stop = min(self._position + size, self.capacity, self.num_seen)
        rows = self._order[torch.arange(self._position, stop)].to(self.examples.device)
        self._position = 0 if stop >= min(self.capacity, self.num_seen) else stop
        return self.examples[rows], self.labels[rows]

    def random_sample(self, size: int) -> tuple[Tensor, Tensor, list[int]]:
        """``size`` distinct stored items drawn at random, with their slots."""
        rows = torch.randperm(len(self), generator=self.generator)[: min(size, self.num_seen)]
        device_rows = rows.to(self.examples.device)
        return self.examples[device_rows], self.labels[device_rows], rows.tolist()

    def score(self, gradient: Tensor, examples: Tensor, labels: Tensor, slots: list[int],
              gradients_of: Callable[[Tensor, Tensor], Tensor]) -> float:
        """The highest cosine similarity + 1 of ``gradient`` to the per-example gradients of the
        sampled memory items (cached per slot for the step), at least 0."""
        stored = []
        for example, label, slot in zip(examples, labels, slots):
            if slot not in self._cache:
                self._cache[slot] = gradients_of(example.unsqueeze(0), label.unsqueeze(0))
            stored.append(self._cache[slot])
        similarity = F.cosine_similarity(gradient, torch.cat(stored).to(gradient.device), dim=1)
        return max(0.0, float(similarity.max()) + 1)

    def offer(self, examples: Tensor, labels: Tensor, batch_size_for_scores: int,
              gradients_of: Callable[[Tensor, Tensor], Tensor]) -> None:
        """Offer a batch (its gradient scored against a random sample of ``batch_size_for_scores`` stored items)."""
        if self.examples is None:
            device = examples.device if self.device is None else self.device
            self.examples = torch.zeros((self.capacity, *examples.shape[1:]), dtype=examples.dtype, device=device)
            self.labels = torch.zeros(self.capacity, dtype=torch.long, device=device)
            self.scores = torch.zeros(self.capacity, dtype=torch.float32, device=device)
        if self.num_seen > 0:
            sample = self.random_sample(min(batch_size_for_scores, self.num_seen))
            batch_score = self.score(gradients_of(examples, labels), *sample, gradients_of)
        else:
            sample, batch_score = None, FIRST_SCORE
        for i in range(examples.shape[0]):
            slot, score = self._slot_for(examples[i], labels[i], batch_score, sample, gradients_of)
            self.num_seen += 1
            if slot >= 0:
                self.examples[slot] = examples[i].detach().to(self.examples.device)
                self.labels[slot] = labels[i].to(self.labels.device)
                self.scores[slot] = score
                self._cache.pop(slot, None)

    def _slot_for(self, example: Tensor, label: Tensor, batch_score: float, sample: Any,
                  gradients_of: Callable[[Tensor, Tensor], Tensor]) -> tuple[int, float]:
        """Where one example goes (-1: nowhere) and its score (the original's ``functional_reservoir``)."""
        if self.num_seen < self.capacity:
            return self.num_seen, batch_score
        if batch_score < 1:
            own = self.score(gradients_of(example.unsqueeze(0), label.unsqueeze(0)), *sample, gradients_of)
            scores = self.scores.cpu()
            slot = weighted_index(scores / scores.sum(), self.generator)
            accept = torch.rand((1,), generator=self.generator, dtype=torch.float64)[0]
            stored = float(scores[slot])
            if accept < stored / (stored + own):
                return slot, own
        return -1, 0.0

    def state_dict(self) -> dict[str, Any]:
        """The filled slots, their scores, ``num_seen`` and the generator."""
        filled = len(self)
        fields = {} if self.examples is None else {
            "examples": self.examples[:filled].clone(), "labels": self.labels[:filled].clone(),
            "scores": self.scores[:filled].clone()}
        return {"capacity": self.capacity, "num_seen": self.num_seen, "generator": self.generator.get_state(),
                "fields": fields}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` of a memory of the same capacity."""
        if state["capacity"] != self.capacity:
            raise ConfigError(f"gss memory capacity={state['capacity']} in the state does not match; "
                              f"allowed: capacity={self.capacity}")
        self.num_seen = int(state["num_seen"])
        self.generator.set_state(state["generator"].cpu())
        fields = state["fields"]
        self.examples = self.labels = self.scores = None
        if fields:
            examples = fields["examples"]
            self.examples = torch.zeros((self.capacity, *examples.shape[1:]), dtype=examples.dtype)
            self.labels = torch.zeros(self.capacity, dtype=torch.long)
            self.scores = torch.zeros(self.capacity, dtype=torch.float32)
            for name in ("examples", "labels", "scores"):
                getattr(self, name)[: len(fields[name])] = fields[name]

    def to(self, device: str | torch.device) -> "GradientMemory":
        """Move the stored tensors to ``device``."""
        for name in ("examples", "labels", "scores"):
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name).to(device))
        return self


@register_model("gss")
class Gss(ReplayModel):
    """GSS (greedy): a memory that keeps the examples whose gradients are least alike (:class:`GradientMemory`).

    Each step runs ``batch_num`` SGD steps on the batch joined by the next ``minibatch_size``
    stored examples (null: the batch's size), augmented. Then the non-augmented batch is offered to
    the memory: its gradient, and each example's, are compared with the per-example gradients of
    ``gss_minibatch_size`` stored items drawn at random (null: ``minibatch_size``), with the network
    in eval mode. These gradients are taken on the examples normalised by ``test_transform`` (the
    original: on the stored ``[0, 1]`` images as they are; the same on seq-mnist, which has no
    normalisation).
    """

    accepts_regularizer = False  # its memory's gradient scores take extra backward passes
    supports_memory_per_class = False  # its gradient-scored memory has a fixed size

    #: The memory scores each batch with its own gradients (per-example loops): one process only.
    supports_distributed = False
    #: Its scoring backward passes are not scaled.
    supports_fp16 = False
    supports_task_free = True  # no hook does work at task changes: the original's online method (docs/online.md)

    def __init__(self, net: MammothBackbone, dataset: Any, buffer_size: int, batch_num: int = 1,
                 gss_minibatch_size: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(net, dataset, buffer_size=buffer_size, **kwargs)
        self.batch_num = check_positive_int("model.batch_num", batch_num)
        if gss_minibatch_size is not None:
            check_positive_int("model.gss_minibatch_size", gss_minibatch_size)
        self.gss_minibatch_size = gss_minibatch_size
        self.buffer = GradientMemory(self.buffer_size, device="cpu" if self.buffer_device == "cpu" else None)

    def example_gradients(self, inputs: Tensor, labels: Tensor) -> Tensor:
        """The flat gradient (1, P) of the mean cross-entropy on ``inputs``, the network in eval mode."""
        self.net.eval()
        self.optimizer.zero_grad(set_to_none=True)
        self.loss(self.net(self.context.test_transform(inputs)), labels).backward()
        gradient = self.net.get_grads().unsqueeze(0)
        self.optimizer.zero_grad(set_to_none=True)
        self.net.train()
        return gradient

    def observe(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor) -> float:
        """``batch_num`` steps on the batch and the next stored examples, then the batch offered to the memory."""
        self.buffer.reset()
        replay_size = self.minibatch_size if self.minibatch_size is not None else inputs.shape[0]
        value = 0.0
        for _ in range(self.batch_num):
            all_inputs, all_labels = inputs, labels
            if not self.buffer.is_empty():
                examples, stored_labels = self.buffer.next_batch(replay_size)
                all_inputs = torch.cat([inputs, self.context.train_transform(examples.to(inputs.device))])
                all_labels = torch.cat([labels, stored_labels.to(labels.device)])
            value = self.step(self.loss(self.net(all_inputs), all_labels))
        scoring = self.gss_minibatch_size if self.gss_minibatch_size is not None else replay_size
        self.buffer.offer(not_aug_inputs, labels, scoring, self.example_gradients)
        return value
