"""CODA-Prompt: COntinual Decomposed Attention-based Prompting (Smith et al., CVPR 2023)."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mammoth.backbones.base import MammothBackbone
from mammoth.config.value_checks import check_non_negative, check_positive_int
from mammoth.errors import ConfigError
from mammoth.models.prompts import PromptModel, make_head
from mammoth.models.registry import register_model

#: The blocks that get prompts (the original's ``e_layers``), those the backbone has.
PROMPT_LAYERS = (0, 1, 2, 3, 4)


@register_model("coda_prompt")
class CodaPrompt(PromptModel):
    """CODA-Prompt (the original Mammoth's ``models/coda_prompt.py``, same argument names and
    defaults) on any backbone with the token interface.

    Blocks 0-4 each hold ``pool_size`` prompt components (``prompt_len`` tokens), keys and
    attention vectors; ``pool_size / n_tasks`` of them belong to each task. The query (the
    frozen model's class token) is weighted by each component's attention vector and compared
    (cosine) with its key; the prompt is the similarity-weighted sum of the components, its first
    ``prompt_len / 2`` tokens prepended to the block's attention keys and its last half to its
    values. In training, only the current task's components learn (earlier ones are detached,
    later ones unused); at test all components up to the current task's are used. At each new
    task its components are re-initialised by Gram-Schmidt against the earlier ones (random
    vectors from the run's generator). Loss: cross-entropy on the current task's classes plus
    ``mu`` times the orthogonality penalty (weighted by ``ortho_mu``). Adam at ``lr`` over the
    prompts and the head; ``virtual_bs_iterations`` steps every that many batches, as the
    original does (on the last batch's gradient only: see :meth:`observe`).
    """

    supports_fp16 = False  # calls backward and steps its optimizer itself (no gradient scaling)

    method_name = "coda-prompt"

    def __init__(
        self,
        net: MammothBackbone,
        dataset: Any,
        mu: float = 0.0,
        pool_size: int = 100,
        prompt_len: int = 8,
        ortho_mu: float = 0.0,
        virtual_bs_iterations: int = 1,
        lr: float = 0.001,
        optimizer: Literal["sgd", "adam"] = "adam",
        **kwargs: Any,
    ) -> None:
        super().__init__(net, dataset, lr=lr, optimizer=optimizer, **kwargs)
        self.mu = check_non_negative("model.mu", mu)
        self.ortho_mu = check_non_negative("model.ortho_mu", ortho_mu)
        self.pool_size = check_positive_int("model.pool_size", pool_size)
        self.prompt_len = check_positive_int("model.prompt_len", prompt_len)
        self.virtual_bs_iterations = check_positive_int("model.virtual_bs_iterations", virtual_bs_iterations)
        n_tasks = int(dataset.n_tasks)
        self.per_task = pool_size // n_tasks
        if self.per_task < 1:
            raise ConfigError(
                f"model.pool_size={pool_size} gives no prompt component to each of the {n_tasks} tasks; "
                f"allowed: pool_size >= {n_tasks}"
            )
        if pool_size > self.width:  # the original's Gram-Schmidt would redraw forever
            raise ConfigError(
                f"model.pool_size={pool_size} is more than the backbone's width {self.width}: the pool's keys "
                f"cannot all be orthogonal; allowed: pool_size <= {self.width}"
            )
        self.layers = tuple(layer for layer in PROMPT_LAYERS if layer < net.num_blocks)
        for layer in self.layers:
            for name, shape in (("p", (pool_size, prompt_len, self.width)), ("k", (pool_size, self.width)),
                                ("a", (pool_size, self.width))):
                value = torch.rand(shape)  # the original's tensor_prompt: uniform [0, 1)
                gram_schmidt(value, 0, self.per_task, None)  # torch's generator, as every initialisation
                self.register_parameter(f"e_{name}_{layer}", nn.Parameter(value))
        self.head = make_head(self.width, self.n_classes, timm_init=False)
        self.epoch_iteration = 0

    def begin_task(self, task: int) -> None:
        """Re-initialise this task's components (Gram-Schmidt from the run's generator; not at
        task 0, whose were initialised with the model), then a fresh optimizer."""
        if task > 0:
            start, end = task * self.per_task, (task + 1) * self.per_task
            with torch.no_grad():
                for layer in self.layers:
                    for name in ("k", "a", "p"):
                        gram_schmidt(getattr(self, f"e_{name}_{layer}").data, start, end, self.context.generator)
        self.epoch_iteration = 0
        super().begin_task(task)

    def end_epoch(self, epoch: int) -> None:
        """Restart the count of batches in the epoch (virtual batches), then the schedule."""
        self.epoch_iteration = 0
        super().end_epoch(epoch)

    def prompt(self, layer: int, query: Tensor, train: bool) -> tuple[tuple[Tensor, Tensor], Tensor]:
        """The (keys, values) prefix of block ``layer`` for ``query``, and its orthogonality penalty."""
        keys, attention, components = (getattr(self, f"e_{name}_{layer}") for name in ("k", "a", "p"))
        start, end = self.current_task * self.per_task, (self.current_task + 1) * self.per_task
        if train:
            keys, attention, components = (
                torch.cat([part[:start].detach(), part[start:end]]) for part in (keys, attention, components)
            )
        else:
            keys, attention, components = keys[:end], attention[:end], components[:end]
        attended = F.normalize(torch.einsum("bd,kd->bkd", query, attention), dim=2)
        weights = torch.einsum("bkd,kd->bk", attended, F.normalize(keys, dim=1))
        prompt = torch.einsum("bk,kld->bld", weights, components)
        half = self.prompt_len // 2
        penalty = query.new_zeros(())
        if train and self.ortho_mu > 0:
            penalty = self.ortho_mu * (ortho_penalty(keys) + ortho_penalty(attention)
                                       + ortho_penalty(components.reshape(components.shape[0], -1)))
        return (prompt[:, :half], prompt[:, half:]), penalty

    def prompted(self, x: Tensor, train: bool) -> tuple[Tensor, Tensor]:
        """The logits of ``x`` and the summed orthogonality penalty."""
        query = self.query(x)
        tokens = self.net.embed_tokens(x)
        penalty = query.new_zeros(())
        for block in range(self.net.num_blocks):
            prefix = None
            if block in self.layers:
                prefix, layer_penalty = self.prompt(block, query, train)
                penalty = penalty + layer_penalty
            tokens = self.net.run_block(block, tokens, prefix)
        return self.head(self.net.pool_tokens(self.net.final_norm(tokens))), penalty

    def observe(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor) -> float:
        """Cross-entropy on the current task's classes plus ``mu`` times the penalty. The optimizer
        steps every ``virtual_bs_iterations`` batches of an epoch (every batch by default), on
        that batch's gradient divided by ``virtual_bs_iterations``: the original's observe clears
        the gradients at every batch, so its "virtual batch" accumulates nothing."""
        logits, penalty = self.prompted(inputs, train=True)
        loss = self.task_loss(logits, labels) + self.mu * penalty
        iteration, every = self.epoch_iteration, self.virtual_bs_iterations
        self.optimizer.zero_grad(set_to_none=True)  # the original clears them at every batch, so nothing accumulates
        (loss / float(every)).backward()
        if (iteration > 0 or every == 1) and iteration % every == 0:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.epoch_iteration += 1
        return loss.item()

    def forward(self, x: Tensor) -> Tensor:
        """The scores of the classes seen so far (all components up to the current task's)."""
        return self.mask_unseen(self.prompted(x, train=False)[0])


def gram_schmidt(values: Tensor, start: int, end: int, generator: torch.Generator | None) -> None:
    """The original's ``gram_schmidt``, in place: rows ``start..end-1`` of ``values`` (flattened
    per row) become random vectors orthogonalised against every earlier row (the earlier
    components as they are, then the new ones), then normalised; rows before ``start`` stay as
    they are and rows from ``end`` become zeros (a later task's components, re-initialised when
    it begins). The random vectors come from ``generator`` (CPU; None: torch's global one)."""
    rows = values.reshape(values.shape[0], -1)
    result = torch.zeros_like(rows)
    result[:start] = rows[:start]
    for k in range(start, end):
        while True:
            candidate = torch.randn(rows.shape[1], generator=generator).to(rows)
            projections = [_projection(result[j], candidate) for j in range(k)]
            if all(p is not None for p in projections):
                break
        result[k] = candidate - sum(projections, torch.zeros_like(candidate))
    for k in range(start, end):
        result[k] = result[k] / result[k].norm()
    rows.copy_(result)


def _projection(u: Tensor, v: Tensor) -> Tensor | None:
    """The projection of ``v`` on ``u``; None when ``u`` is (almost) zero (the original redraws)."""
    denominator = (u * u).sum()
    if denominator < 1e-8:
        return None
    return (v * u).sum() / denominator * u


def ortho_penalty(t: Tensor) -> Tensor:
    """The mean squared distance of ``t @ t.T`` from the identity."""
    return ((t @ t.T - torch.eye(t.shape[0], device=t.device)) ** 2).mean()
