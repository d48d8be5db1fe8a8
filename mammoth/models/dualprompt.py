"""DualPrompt: Complementary Prompting for Rehearsal-free Continual Learning (Wang et al., ECCV 2022)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from mammoth.backbones.base import MammothBackbone
from mammoth.config.value_checks import (
    check_choice,
    check_non_negative,
    check_positive,
    check_positive_int,
)
from mammoth.models.prompts import (
    PromptModel,
    batch_scaled_lr,
    check_layers,
    check_pool,
    init_prompt,
    l2_normalize,
    make_head,
    pull_constraint,
    select_prompts,
)
from mammoth.models.registry import register_model


@register_model("dualprompt")
class DualPrompt(PromptModel):
    """DualPrompt (the original Mammoth's ``models/dualprompt.py``, same argument names and
    defaults) on any backbone with the token interface.

    Prefix tuning: the G-prompt (``g_prompt_length`` keys and values per block of
    ``g_prompt_layer_idx``, shared by all tasks) and the E-prompt (a pool of ``size`` prompts of
    ``length`` keys and values per block of ``e_prompt_layer_idx``, each with a learned key) are
    prepended to those blocks' attention keys and values (``run_block``'s prefix). In training,
    task ``t`` uses E-prompts ``t*top_k .. (t+1)*top_k - 1``; at test the ``top_k`` prompts whose
    keys are most similar to the query (the frozen model's features) are used, by majority vote
    over the batch when ``batchwise_prompt`` (the original's default). The head reads the class
    token. Loss: the current task's cross-entropy minus ``pull_constraint_coeff`` times the
    similarity of the chosen keys to the query. At a new task the previous task's E-prompts are
    copied into the new task's. ``use_permute_fix=False`` reproduces the original's default
    layout of keys and values in a batch (its issue #56: the halves of a batch swap keys and
    values); ``true`` applies its fix. Adam at ``lr * batch_size / 256``, gradients clipped to
    ``clip_grad``.
    """

    method_name = "dualprompt"

    def __init__(
        self,
        net: MammothBackbone,
        dataset: Any,
        g_prompt_length: int = 5,
        g_prompt_layer_idx: tuple[int, ...] = (0, 1),
        e_prompt_layer_idx: tuple[int, ...] = (2, 3, 4),
        size: int = 10,
        length: int = 5,
        top_k: int = 1,
        prompt_key_init: Literal["uniform", "zero"] = "uniform",
        batchwise_prompt: bool = True,
        embedding_key: Literal["cls"] = "cls",
        pull_constraint: bool = True,
        pull_constraint_coeff: float = 1.0,
        use_permute_fix: bool = False,
        clip_grad: float | None = 1.0,
        lr: float = 0.03,
        optimizer: Literal["sgd", "adam"] = "adam",
        **kwargs: Any,
    ) -> None:
        super().__init__(net, dataset, lr=lr, optimizer=optimizer, **kwargs)
        blocks = net.num_blocks
        self.g_prompt_layer_idx = check_layers("model.g_prompt_layer_idx", g_prompt_layer_idx, blocks)
        self.e_prompt_layer_idx = check_layers("model.e_prompt_layer_idx", e_prompt_layer_idx, blocks)
        self.g_prompt_length = check_positive_int("model.g_prompt_length", g_prompt_length)
        self.size = check_positive_int("model.size", size)
        self.length = check_positive_int("model.length", length)
        self.top_k = check_pool("model.top_k", top_k, size)
        check_choice("model.embedding_key", embedding_key, ("cls",))
        self.batchwise_prompt, self.use_permute_fix = bool(batchwise_prompt), bool(use_permute_fix)
        self.pull_constraint = bool(pull_constraint)
        self.pull_constraint_coeff = check_non_negative("model.pull_constraint_coeff", pull_constraint_coeff)
        self.clip_grad = None if clip_grad is None else check_positive("model.clip_grad", clip_grad)
        # the original's (..., heads, width // heads) prompts, heads flattened: the same numbers
        g_shape = (len(self.g_prompt_layer_idx), 2, g_prompt_length, self.width)
        e_shape = (len(self.e_prompt_layer_idx), 2, size, length, self.width)
        # prompts start as the keys do (the original's Model passes prompt_init=prompt_key_init)
        self.g_prompt = init_prompt(g_shape, prompt_key_init, "model.prompt_key_init")
        self.e_prompt = init_prompt(e_shape, prompt_key_init, "model.prompt_key_init")
        self.prompt_key = init_prompt((size, self.width), prompt_key_init, "model.prompt_key_init")
        self.head = make_head(self.width, self.n_classes, timm_init=True)

    def scaled_lr(self) -> float:
        """``lr * batch_size / 256``, as the original scales it."""
        return batch_scaled_lr(self.lr, self.context.batch_size)

    def begin_task(self, task: int) -> None:
        """Copy the previous task's E-prompts into this task's (while the pool has both), then a
        fresh optimizer."""
        previous, current = (task - 1) * self.top_k, task * self.top_k
        if task > 0 and current + self.top_k <= self.size:
            with torch.no_grad():
                self.e_prompt[:, :, current:current + self.top_k] = self.e_prompt[:, :, previous:current]
        super().begin_task(task)

    def prompted(self, x: Tensor, train: bool) -> dict[str, Tensor]:
        """``logits``, the chosen E-prompts ``index`` ``(batch, top_k)`` and ``reduce_sim`` of ``x``."""
        batch = x.shape[0]
        query_norm = l2_normalize(self.query(x), dim=-1)
        key_norm = l2_normalize(self.prompt_key, dim=-1)
        start, end = self.current_task * self.top_k, (self.current_task + 1) * self.top_k
        if train and end <= self.size:
            index = torch.arange(start, end, device=x.device).expand(batch, -1)
        else:
            index = select_prompts(query_norm @ key_norm.T, self.top_k, self.batchwise_prompt)
        e_prompts = self.e_prompt[:, :, index]  # layers, 2, batch, top_k, length, width
        if self.use_permute_fix:
            e_prompts = e_prompts.permute(0, 2, 1, 3, 4, 5)
        e_prompts = e_prompts.reshape(len(self.e_prompt_layer_idx), batch, 2, self.top_k * self.length, self.width)
        tokens = self.net.embed_tokens(x)
        for block in range(self.net.num_blocks):
            tokens = self.net.run_block(block, tokens, self._prefix(block, e_prompts, batch))
        features = self.net.pool_tokens(self.net.final_norm(tokens))
        return {"logits": self.head(features), "index": index,
                "reduce_sim": pull_constraint(key_norm, query_norm, index)}

    def _prefix(self, block: int, e_prompts: Tensor, batch: int) -> tuple[Tensor, Tensor] | None:
        """The (keys, values) prefix of ``block``: its G-prompt, else its E-prompt, else None."""
        if block in self.g_prompt_layer_idx:
            g_prompt = self.g_prompt[self.g_prompt_layer_idx.index(block)]
            return g_prompt[0].expand(batch, -1, -1), g_prompt[1].expand(batch, -1, -1)
        if block in self.e_prompt_layer_idx:
            e_prompt = e_prompts[self.e_prompt_layer_idx.index(block)]
            return e_prompt[:, 0], e_prompt[:, 1]
        return None

    def observe(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor) -> float:
        """Cross-entropy on the current task's classes minus the pull constraint; one clipped step."""
        out = self.prompted(inputs, train=True)
        loss = self.task_loss(out["logits"], labels)
        if self.pull_constraint:
            loss = loss - self.pull_constraint_coeff * out["reduce_sim"]
        return self.step(loss, self.clip_grad)

    def forward(self, x: Tensor) -> Tensor:
        """The scores of the classes seen so far, with E-prompts chosen by the query."""
        return self.mask_unseen(self.prompted(x, train=False)["logits"])
