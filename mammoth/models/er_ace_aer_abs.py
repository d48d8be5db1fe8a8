"""er_ace_aer_abs: ER-ACE with Alternate Experience Replay and Asymmetric Balanced Sampling
(Millunzi et al., "May the Forgetting Be with You: Alternate Replay for Learning with Noisy
Labels", BMVC 2024), as the original Mammoth's ``er_ace_aer_abs`` without its optional buffer fitting."""

from __future__ import annotations

import copy
from typing import Any, Callable, Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from mammoth.backbones.base import MammothBackbone
from mammoth.config.value_checks import check_choice
from mammoth.errors import ConfigError
from mammoth.models.base import ReplayModel
from mammoth.models.gss import weighted_index
from mammoth.models.registry import register_model
from mammoth.models.utils import require_class_il
from mammoth.models.buffer import _DRAW_HIGH

STRATEGIES = ("abs", "reservoir")


def normalize_scores(values: Tensor) -> Tensor:
    """Min-max scaled to [0, 1] (unchanged when all equal), as the original's ``normalize_scores``."""
    if values.max() - values.min() != 0:
        values = (values - values.min()) / ((values.max() - values.min()) + 1e-9)
    return values


class LossMemory:
    """A memory whose full-buffer replacement is reservoir's or ABS: once full, an item at position
    ``n`` enters with probability ``capacity / n``; with ``abs`` the slot it replaces is drawn from
    the past tasks' items (probability their share of the memory) weighted towards high loss, or
    from the current task's weighted towards low loss (each group's losses min-max scaled; the
    past group's as 1 - scaled). Each item keeps the loss it was last seen with. Draws come from
    :attr:`generator`."""

    def __init__(self, capacity: int, strategy: str, device: Optional[str] = None) -> None:
        self.capacity, self.strategy, self.device = capacity, strategy, device
        self.generator = torch.Generator().manual_seed(0)
        self.gather: Optional[Callable[[Tensor], Tensor]] = None  # ReplayModel.attach sets it; one process only
        self.num_seen = 0
        self.examples: Optional[Tensor] = None
        self.labels: Optional[Tensor] = None
        self.importance = torch.full((capacity,), -float("inf"))

    def __len__(self) -> int:
        return min(self.num_seen, self.capacity)

    def is_empty(self) -> bool:
        """Whether nothing was ever stored."""
        return self.num_seen == 0

    def sample(self, size: int) -> tuple[Tensor, Tensor, Tensor]:
        """``min(size, len)`` distinct items: slots, examples, labels."""
        rows = torch.randperm(len(self), generator=self.generator)[: min(size, len(self))]
        device_rows = rows.to(self.examples.device)
        return rows, self.examples[device_rows], self.labels[device_rows]

    def update(self, slots: Tensor, losses: Tensor) -> None:
        """Record the losses the sampled items were just seen with."""
        self.importance[slots.cpu()] = losses.detach().float().cpu()

    def add(self, examples: Tensor, labels: Tensor, losses: Tensor, past_classes: int) -> None:
        """Offer each example (with its loss) in order; ``past_classes``: labels below are past tasks'."""
        if self.examples is None:
            device = examples.device if self.device is None else self.device
            self.examples = torch.zeros((self.capacity, *examples.shape[1:]), dtype=examples.dtype, device=device)
            self.labels = torch.zeros(self.capacity, dtype=torch.long, device=device)
        for i in range(examples.shape[0]):
            slot = self._slot(past_classes)
            self.num_seen += 1
            if slot >= 0:
                self.examples[slot] = examples[i].detach().to(self.examples.device)
                self.labels[slot] = labels[i].to(self.labels.device)
                if self.strategy != "reservoir":
                    self.importance[slot] = float(losses[i])

    def _draw_below(self, high: int) -> int:
        return int(torch.randint(0, _DRAW_HIGH, (1,), generator=self.generator)) % high

    def _slot(self, past_classes: int) -> int:
        if self.num_seen < self.capacity:
            return self.num_seen
        if self.strategy == "reservoir":
            drawn = self._draw_below(self.num_seen + 1)
            return drawn if drawn < self.capacity else -1
        if self._draw_below(self.num_seen) >= self.capacity:
            return -1
        past = (self.labels < past_classes).cpu()
        past_share = float(past.sum()) / self.capacity
        if weighted_index(torch.tensor([past_share, 1 - past_share], dtype=torch.float64), self.generator) == 0:
            weights = 1 - normalize_scores(self.importance[past])
            group = past
        else:
            weights = normalize_scores(self.importance[~past])
            if weights.sum() == 0:
                weights = weights + 1e-9
            group = ~past
        slots = torch.arange(self.capacity)[group]
        return int(slots[weighted_index(weights / weights.sum(), self.generator)])

    def state_dict(self) -> dict[str, Any]:
        """Slots, losses, ``num_seen`` and the generator."""
        fields = {} if self.examples is None else {"examples": self.examples.clone(), "labels": self.labels.clone()}
        return {"capacity": self.capacity, "num_seen": self.num_seen, "importance": self.importance.clone(),
                "generator": self.generator.get_state(), "fields": fields}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` of a memory of the same capacity."""
        if state["capacity"] != self.capacity:
            raise ConfigError(f"er_ace_aer_abs memory capacity={state['capacity']} in the state does not match; "
                              f"allowed: capacity={self.capacity}")
        self.num_seen = int(state["num_seen"])
        self.importance = state["importance"].clone()
        self.generator.set_state(state["generator"].cpu())
        fields = state["fields"]
        self.examples = fields["examples"].clone() if fields else None
        self.labels = fields["labels"].clone() if fields else None

    def to(self, device: str | torch.device) -> "LossMemory":
        """Move the stored examples and labels to ``device``."""
        if self.examples is not None:
            self.examples, self.labels = self.examples.to(device), self.labels.to(device)
        return self


@register_model("er_ace_aer_abs")
class ErAceAerAbs(ReplayModel):
    """ER-ACE for noisy labels: Alternate Experience Replay (AER) and Asymmetric Balanced Sampling (ABS).

    Unlike ``er-ace``: a plain linear head; the incoming batch's logits of the other seen classes
    are masked from the first task on; the replay minibatch is drawn from the first task on. AER
    alternates epochs: even epochs (the last excepted) train without replay and fill the memory,
    odd ones (and the last) restore the network saved at the end of the previous replay epoch
    (which may be the previous task's last) and train with replay, storing nothing. Of each batch
    only the ``1 - alpha_sample_insertion`` share with the lowest loss (on the non-augmented
    examples, before the step) is offered to the memory, with those losses; replayed items' losses
    are refreshed each step. ``sample_selection_strategy=abs`` replaces by :class:`LossMemory`'s
    ABS, ``reservoir`` at random. The original's ``lars`` and its buffer fitting
    (``--buffer_fitting_epochs``, 0 by default) are not provided. Class-IL only. With one epoch
    per task (its only epoch is the last) AER never replays nor stores: use ``use_aer=false``.
    """

    accepts_regularizer = False  # alternate replay steps: not checked with a regulariser
    supports_memory_per_class = False  # its loss-ranked memory has a fixed size

    #: Per-epoch network restores and per-example selection: one process only.
    supports_distributed = False

    def __init__(self, net: MammothBackbone, dataset: Any, buffer_size: int,
                 sample_selection_strategy: Literal["abs", "reservoir"] = "abs", use_aer: bool = True,
                 alpha_sample_insertion: float = 0.75, **kwargs: Any) -> None:
        require_class_il("er-ace-aer-abs", dataset)
        super().__init__(net, dataset, buffer_size=buffer_size, **kwargs)
        self.sample_selection_strategy = check_choice("model.sample_selection_strategy", sample_selection_strategy,
                                                      STRATEGIES)
        if not 0 <= alpha_sample_insertion <= 100:
            raise ConfigError(f"model.alpha_sample_insertion={alpha_sample_insertion} is not a share; allowed: "
                              "0 to 1 (or a percentage up to 100, as the original)")
        self.alpha_sample_insertion = alpha_sample_insertion / 100 if alpha_sample_insertion > 1 else alpha_sample_insertion
        self.use_aer = bool(use_aer)
        self.n_classes = int(dataset.n_classes)
        self.buffer = LossMemory(self.buffer_size, self.sample_selection_strategy,
                                 "cpu" if self.buffer_device == "cpu" else None)
        self.seen_so_far = torch.zeros(0, dtype=torch.long)
        self.epoch = 0
        self.checkpoint: Optional[dict[str, Tensor]] = None

    def replay_epoch(self, epoch: int) -> bool:
        """AER's replay epochs: the odd ones and the last."""
        return epoch % 2 == 1 or epoch == self.context.n_epochs - 1

    def _begin_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.replay_epoch(epoch) and self.checkpoint is not None:
            self.net.load_state_dict(self.checkpoint)

    def begin_task(self, task: int) -> None:
        """The optimizer afresh, then the first epoch begins (a replay epoch restores the saved network)."""
        super().begin_task(task)
        self._begin_epoch(0)

    def end_epoch(self, epoch: int) -> None:
        """Save the network after a replay epoch; begin the next epoch."""
        super().end_epoch(epoch)
        if self.replay_epoch(epoch):
            self.checkpoint = copy.deepcopy(self.net.state_dict())
        if epoch + 1 < self.context.n_epochs:
            self._begin_epoch(epoch + 1)

    def _masked(self, logits: Tensor, present: Tensor) -> Tensor:
        mask = torch.zeros_like(logits)
        mask[:, present] = 1
        highest = int(self.seen_so_far.max())
        if highest < self.n_classes - 1:
            mask[:, highest:] = 1
        return logits.masked_fill(mask == 0, torch.finfo(logits.dtype).min)

    def observe(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor) -> float:
        """One step (replay per AER's epoch), then the batch's lowest-loss share offered to the memory."""
        present = labels.unique()
        self.seen_so_far = torch.cat([self.seen_so_far.to(present.device), present]).unique()
        logits = self._masked(self.net(inputs), present)
        with torch.no_grad():
            clean_logits = self._masked(self.net(self.context.test_transform(not_aug_inputs)), present)
            clean_losses = F.cross_entropy(clean_logits, labels, reduction="none")
        loss = self.loss(logits, labels)
        if not self.buffer.is_empty():
            slots, examples, stored = self.buffer.sample(
                self.minibatch_size if self.minibatch_size is not None else inputs.shape[0])
            examples, stored = examples.to(inputs.device), stored.to(labels.device)
            if self.sample_selection_strategy != "reservoir":
                with torch.no_grad():
                    losses = F.cross_entropy(self.net(self.context.test_transform(examples)), stored, reduction="none")
                self.buffer.update(slots, losses)
            replay_loss = self.loss(self.net(self.context.train_transform(examples)), stored)
            if not (self.use_aer and self.epoch % 2 == 0):
                loss = loss + replay_loss
        value = self.step(loss)
        if not self.use_aer or not self.replay_epoch(self.epoch):
            kept = round((1 - self.alpha_sample_insertion) * inputs.shape[0])
            _, rows = torch.topk(clean_losses, kept, largest=False)
            self.buffer.add(not_aug_inputs[rows], labels[rows], clean_losses[rows],
                            self.context.task_classes(self.current_task).start)
        return value

    def extra_state(self) -> dict[str, Any]:
        """The memory, the classes seen, the saved network."""
        return {**super().extra_state(), "seen_so_far": self.seen_so_far.cpu(), "checkpoint": self.checkpoint}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the memory, the classes seen and the saved network."""
        super().load_extra_state(state)
        self.seen_so_far = state["seen_so_far"].to(self.device)
        self.checkpoint = state["checkpoint"]
