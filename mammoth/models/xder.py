"""xder: eXtended Dark Experience Replay (Boschini et al., "Class-Incremental Continual Learning into
the eXtended DER-verse", TPAMI 2022), without its contrastive consistency term."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from mammoth.backbones.base import MammothBackbone
from mammoth.models.base import ReplayModel
from mammoth.models.registry import register_model
from mammoth.datasets.source import InMemorySource
from mammoth.models.utils import bn_track_stats, class_bounds, keep_first, require_class_il, training_mode
from mammoth.config.value_checks import check_non_negative

if TYPE_CHECKING:
    from mammoth.datasets.source import DataSource


def update_logits(old: Tensor, new: Tensor, labels: Tensor, start: int, stop: int, gamma: float) -> Tensor:
    """X-DER's logit update, in place in ``old``: the columns ``start:stop`` (the heads of a run of
    tasks: the original's ``first_head * cpt : (first_head + n_heads) * cpt``) of ``old`` become
    those of ``new``, scaled down where their maximum exceeds the item's ground-truth logit in
    ``old`` so that the maximum becomes ``gamma`` times that logit."""
    columns = slice(start, stop)
    transplant = new[:, columns].clone()
    ground_truth = old[torch.arange(len(labels), device=old.device), labels]
    maximum = transplant.max(dim=1).values
    coefficient = (gamma * ground_truth / maximum).unsqueeze(1).expand_as(transplant)
    mask = (maximum > ground_truth).unsqueeze(1).expand_as(transplant)
    transplant[mask] *= coefficient[mask]
    old[:, columns] = transplant
    return old


def _remove_duplicates(indices: Tensor) -> Tensor:
    """A mask keeping the first occurrence of every slot index."""
    keep = torch.ones(len(indices), dtype=torch.bool, device=indices.device)
    seen: set[int] = set()
    for position, index in enumerate(indices.tolist()):
        keep[position] = index not in seen
        seen.add(index)
    return keep


@register_model("xder")
class XDer(ReplayModel):
    """X-DER: DER++ whose stored logits are revised, with constraints on the future heads.

    Each step: cross-entropy of the current head on the incoming batch, ``alpha`` times the MSE
    to the stored logits of a replay minibatch, ``beta`` times the cross-entropy of a second
    one over the past heads, and (``future_constraint``) a hinge ``constr_eta * [max future
    logit + constr_margin - max logit of the right head]_+``; ``past_constraint`` adds the same
    on the softmax of past vs current head. Replayed items of past tasks get their current and
    future heads rewritten with the network's outputs (:func:`update_logits`, ``gamma``), each
    at most about once per task. After a task the memory is rebalanced (``buffer_size //
    seen classes`` per class) and filled with the task's examples and their logits (one pass of
    ``context.batches`` over the task's data, one over the memory to revise the past items'
    logits). Every random draw comes from ``context.generator``.
    ``align_bn`` keeps the batch-norm statistics of the current batch only. Left out: the
    original's SupCon consistency term on future heads (``lambd``, ``simclr_*``) and its
    distance-preserving term (``dp_weight``, 0 by default). Class-IL datasets only.
    """

    supports_memory_per_class = False  # its update counters and per-task quotas are of a fixed memory

    def __init__(
        self,
        net: MammothBackbone,
        dataset: Any,
        buffer_size: int,
        alpha: float,
        beta: float,
        gamma: float = 0.85,
        constr_eta: float = 0.1,
        constr_margin: float = 0.3,
        past_constraint: bool = False,
        future_constraint: bool = True,
        align_bn: bool = True,
        **kwargs: Any,
    ) -> None:
        require_class_il("xder", dataset)
        super().__init__(net, dataset, buffer_size=buffer_size, **kwargs)
        self.alpha = check_non_negative("model.alpha", alpha)
        self.beta = check_non_negative("model.beta", beta)
        self.gamma = check_non_negative("model.gamma", gamma)
        self.constr_eta = check_non_negative("model.constr_eta", constr_eta)
        self.constr_margin = float(constr_margin)
        self.past_constraint, self.future_constraint, self.align_bn = bool(past_constraint), bool(future_constraint), bool(align_bn)
        # each task's first class, and the end of the last task's (tasks may differ in size)
        self.task_starts = torch.tensor([dataset.task_classes(t).start for t in range(dataset.n_tasks)] + [dataset.n_classes])
        self.update_counter = torch.zeros(self.buffer_size)

    def _update(self, outputs: Tensor, logits: Tensor, labels: Tensor) -> Tensor:
        return update_logits(logits, outputs, labels, self.context.task_classes(self.current_task).start,
                             self.context.n_classes, self.gamma)

    def _task_of(self, labels: Tensor) -> Tensor:
        """The task of each label (the original's ``labels // cpt``, for tasks of any size)."""
        return torch.bucketize(labels, self.task_starts.to(labels.device), right=True) - 1

    def observe(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor) -> float:
        """One step of X-DER (see the class docstring); returns the loss value."""
        task = self.current_task
        past, seen = class_bounds(self.context, task)
        with bn_track_stats(self.net, not self.align_bn or task == 0):
            outputs = self.net(inputs)
        loss = self.loss(outputs[:, past:seen], labels - past)
        replay_outputs = replay_labels = None
        if not self.buffer.is_empty():
            size = self.minibatch_size if self.minibatch_size is not None else inputs.shape[0]
            first = self.replay_batch(inputs.shape[0], inputs.device)
            first_inputs = first.examples
            if self.align_bn:
                first_inputs = torch.cat([first_inputs, inputs[: size // max(task, 1)]])
            first_outputs = self.net(first_inputs)[: len(first.indices)]
            loss = loss + self.alpha * F.mse_loss(first_outputs, first.logits)
            second = self.replay_batch(inputs.shape[0], inputs.device)
            with bn_track_stats(self.net, not self.align_bn):
                second_outputs = self.net(second.examples)
            loss = loss + self.beta * self.loss(second_outputs[:, :past], second.labels)
            indices = torch.cat([first.indices, second.indices])
            keep = _remove_duplicates(indices)
            indices, replay_labels = indices[keep], torch.cat([first.labels, second.labels])[keep]
            replay_outputs = torch.cat([first_outputs, second_outputs])[keep]
            replay_logits = torch.cat([first.logits, second.logits])[keep]
            self._update_future_past(indices, replay_labels, replay_logits, replay_outputs.detach())
        if task < self.context.n_tasks - 1 and self.future_constraint:
            loss = loss + self._future_constraint(outputs, replay_outputs, replay_labels)
        if self.past_constraint and task > 0:
            probabilities = F.softmax(outputs[:, :seen], dim=1)
            hinge = (probabilities[:, :past].max(1).values.detach() + self.constr_margin
                     - probabilities[:, past:seen].max(1).values)
            if (hinge > 0).any():
                loss = loss + self.constr_eta * hinge[hinge > 0].mean()
        return self.step(loss)

    @torch.no_grad()
    def _update_future_past(self, indices: Tensor, labels: Tensor, logits: Tensor, outputs: Tensor) -> None:
        """Rewrite the current and future heads of replayed past-task items (each about once per task)."""
        chosen = labels < self.context.task_classes(self.current_task).start  # items of past tasks
        counter_index = indices[chosen].cpu()
        self.update_counter[counter_index] += 1
        draws = torch.rand(int(chosen.sum()), generator=self.context.generator) * self.update_counter[counter_index] < 1
        chosen[chosen.clone()] = draws.to(chosen.device)
        if chosen.any():
            updated = self._update(outputs[chosen], logits[chosen].clone(), labels[chosen])
            self.buffer.update(indices[chosen], logits=updated,
                               task_labels=torch.full((int(chosen.sum()),), self.current_task, device=indices.device))

    def _future_constraint(self, outputs: Tensor, replay_outputs: Optional[Tensor], replay_labels: Optional[Tensor]) -> Tensor:
        """``constr_eta * mean([max future logit + margin - max logit of the right head]_+)``."""
        classes = self.context.task_classes(self.current_task)
        bad = outputs[:, classes.stop :]
        good = outputs[:, classes.start : classes.stop].max(1).values
        if replay_outputs is not None:
            bad = torch.cat([bad, replay_outputs[:, classes.stop :]])
            good = torch.cat([good, self._own_head_maximum(replay_outputs, replay_labels)])
        hinge = bad.max(1).values + self.constr_margin - good
        if not (hinge > 0).any():
            return outputs.new_zeros(())
        return self.constr_eta * hinge[hinge > 0].mean()

    def _own_head_maximum(self, outputs: Tensor, labels: Tensor) -> Tensor:
        """Each row's largest logit on the head of its label's task."""
        tasks = self._task_of(labels)
        starts, stops = self.task_starts.to(labels.device)[tasks], self.task_starts.to(labels.device)[tasks + 1]
        columns = torch.arange(outputs.shape[1], device=outputs.device)
        own = (columns >= starts[:, None]) & (columns < stops[:, None])
        return outputs.masked_fill(~own, float("-inf")).max(1).values

    def end_task(self, task: int, data: DataSource) -> None:
        """Rebalance the memory, add this task's examples with their logits, update the past ones'
        (the network in train mode, its batch-norm statistics untouched)."""
        with training_mode(self.net, True), torch.no_grad(), bn_track_stats(self.net, False):
            if task > 0:
                keep_first(self.buffer, self.buffer_size // class_bounds(self.context, task)[1])
            self._add_task(task, data)
            self._update_stored_past(task)
        self.update_counter = torch.zeros(self.buffer_size)

    def _add_task(self, task: int, data: DataSource) -> None:
        """Fill the free slots with the task's examples, an equal quota per class, in an order drawn
        from the generator, with their logits (past heads revised)."""
        generator = self.context.generator
        free = self.buffer_size - len(self.buffer)
        first, n_new = self.context.task_classes(task).start, len(self.context.task_classes(task))
        quota = torch.full((n_new,), free // n_new, dtype=torch.long)
        quota[torch.randperm(n_new, generator=generator)[: free - (free // n_new) * n_new]] += 1
        for batch in self.context.batches(data):
            if (quota == 0).all():
                break
            outputs = self.net(batch.inputs)
            if task > 0:
                outputs = update_logits(outputs, outputs, batch.labels, 0, first, self.gamma)
            flags = torch.zeros(len(batch.labels), dtype=torch.bool)
            for j, label in enumerate(batch.labels.tolist()):
                if quota[label - first] > 0:
                    flags[j] = True
                    quota[label - first] -= 1
            flags = flags.to(batch.labels.device)
            if flags.any():
                self.buffer.add(batch.not_aug_inputs[flags], labels=batch.labels[flags], logits=outputs[flags],
                                task_labels=torch.full((int(flags.sum()),), task, device=batch.labels.device))

    def _update_stored_past(self, task: int) -> None:
        """Rewrite the current and future heads of the stored past-task items with the network's
        outputs on their augmented examples."""
        device = self.buffer.labels.device
        memory = InMemorySource(self.buffer.examples, self.buffer.labels.cpu())
        for batch in self.context.batches(memory):
            slots = batch.indices.to(device)
            labels, logits = self.buffer.labels[slots], self.buffer.logits[slots]
            chosen = labels < self.context.task_classes(task).start
            if chosen.any():
                updated = update_logits(logits[chosen].clone(), self.net(batch.inputs)[chosen].to(device),
                                        labels[chosen], self.context.task_classes(task).start, self.context.n_classes,
                                        self.gamma)
                self.buffer.update(slots[chosen], logits=updated,
                                   task_labels=torch.full((int(chosen.sum()),), task, device=device))
