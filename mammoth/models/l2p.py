"""L2P: Learning to Prompt for Continual Learning (Wang et al., CVPR 2022)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from mammoth.backbones.base import MammothBackbone
from mammoth.backbones.tokens import insert_prompts
from mammoth.config.value_checks import (
    check_choice,
    check_non_negative,
    check_positive,
    check_positive_int,
)
from mammoth.models.prompts import (
    PromptModel,
    batch_scaled_lr,
    check_pool,
    init_prompt,
    l2_normalize,
    make_head,
    pull_constraint,
    select_prompts,
)
from mammoth.models.registry import register_model

HEAD_TYPES = ("prompt", "token", "token+prompt")


@register_model("l2p")
class L2P(PromptModel):
    """L2P (the original Mammoth's ``models/l2p.py``, same argument names and defaults) on any
    backbone with the token interface (``backbone=vit``, a timm ViT).

    A pool of ``pool_size_l2p`` prompts of ``length`` tokens, each with a learned key. The query
    is the frozen backbone's features of the image (``embedding_key=cls``); the ``top_k`` prompts
    whose keys are most similar (cosine) are inserted after the class token, each token plus
    the class token's position embedding (as the original's pretrained ViT extends its position
    embeddings), and the frozen blocks run over them. ``head_type=prompt``: the head reads the
    mean of the prompt tokens' outputs (``token``: the class token; ``token+prompt``: the mean of
    both). The loss is the current task's cross-entropy minus ``pull_constraint_coeff`` times the
    similarity of the chosen keys to the query (when ``pull_constraint``). ``batchwise_prompt``:
    every example gets the prompts chosen most often in its batch (majority vote, also at test;
    the original warns it is unfair to other methods). ``use_prompt_mask``: in training, every example uses the
    last ``top_k`` prompts of the pool, in every task (the original's mask, see :meth:`prompt_mask`). Adam at
    ``lr * batch_size / 256`` over the prompts, keys and head, gradients clipped to ``clip_grad``.
    """

    method_name = "l2p"

    def __init__(
        self,
        net: MammothBackbone,
        dataset: Any,
        pool_size_l2p: int = 10,
        length: int = 5,
        top_k: int = 5,
        prompt_key_init: Literal["uniform", "zero"] = "uniform",
        use_prompt_mask: bool = False,
        batchwise_prompt: bool = False,
        embedding_key: Literal["cls"] = "cls",
        pull_constraint: bool = True,
        pull_constraint_coeff: float = 0.1,
        head_type: Literal["prompt", "token", "token+prompt"] = "prompt",
        clip_grad: float | None = 1.0,
        lr: float = 0.03,
        optimizer: Literal["sgd", "adam"] = "adam",
        **kwargs: Any,
    ) -> None:
        super().__init__(net, dataset, lr=lr, optimizer=optimizer, **kwargs)
        self.pool_size_l2p = check_positive_int("model.pool_size_l2p", pool_size_l2p)
        self.length = check_positive_int("model.length", length)
        self.top_k = check_pool("model.top_k", top_k, pool_size_l2p)
        check_choice("model.embedding_key", embedding_key, ("cls",))
        self.head_type = check_choice("model.head_type", head_type, HEAD_TYPES)
        self.use_prompt_mask, self.batchwise_prompt = bool(use_prompt_mask), bool(batchwise_prompt)
        self.pull_constraint = bool(pull_constraint)
        self.pull_constraint_coeff = check_non_negative("model.pull_constraint_coeff", pull_constraint_coeff)
        self.clip_grad = None if clip_grad is None else check_positive("model.clip_grad", clip_grad)
        # the original initialises prompts as it does keys (L2PModel passes prompt_init=prompt_key_init)
        self.prompt = init_prompt((pool_size_l2p, length, self.width), prompt_key_init, "model.prompt_key_init")
        self.prompt_key = init_prompt((pool_size_l2p, self.width), prompt_key_init, "model.prompt_key_init")
        self.head = make_head(self.width, self.n_classes, timm_init=True)

    def scaled_lr(self) -> float:
        """``lr * batch_size / 256``, as the original scales it."""
        return batch_scaled_lr(self.lr, self.context.batch_size)

    def prompted(self, x: Tensor) -> dict[str, Tensor]:
        """``logits``, the chosen prompts ``index`` ``(batch, top_k)`` and ``reduce_sim`` of ``x``."""
        query_norm = l2_normalize(self.query(x), dim=1)
        key_norm = l2_normalize(self.prompt_key, dim=1)
        index = self.prompt_mask(x.shape[0], x.device)
        if index is None:
            index = select_prompts(query_norm @ key_norm.T, self.top_k, self.batchwise_prompt)
        prompts = self.prompt[index].reshape(x.shape[0], self.top_k * self.length, self.width)
        tokens = insert_prompts(self.net, self.net.embed_tokens(x), prompts)
        for block in range(self.net.num_blocks):
            tokens = self.net.run_block(block, tokens)
        normed = self.net.final_norm(tokens)
        start, prompt_length = self.net.num_prefix_tokens, prompts.shape[1]
        if self.head_type == "prompt":
            features = normed[:, start:start + prompt_length].mean(dim=1)
        elif self.head_type == "token":
            features = self.net.pool_tokens(normed)
        else:
            features = normed[:, :start + prompt_length].mean(dim=1)
        reduce_sim = pull_constraint(key_norm, query_norm, index)
        return {"logits": self.head(features), "index": index, "reduce_sim": reduce_sim}

    def prompt_mask(self, batch: int, device: torch.device) -> Tensor | None:
        """With ``use_prompt_mask`` in training: the last ``top_k`` prompts of the pool, in every
        task (None otherwise). The original's L2P calls its prompted ViT with ``task_id=-1``, so
        its task mask ``arange(task_id * top_k, (task_id + 1) * top_k)`` is ``arange(-top_k, 0)``."""
        if not (self.use_prompt_mask and self.training):
            return None
        return torch.arange(self.pool_size_l2p - self.top_k, self.pool_size_l2p, device=device).expand(batch, -1)

    def observe(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor) -> float:
        """Cross-entropy on the current task's classes minus the pull constraint; one clipped step."""
        out = self.prompted(inputs)
        loss = self.task_loss(out["logits"], labels)
        if self.pull_constraint:
            loss = loss - self.pull_constraint_coeff * out["reduce_sim"]
        return self.step(loss, self.clip_grad)

    def forward(self, x: Tensor) -> Tensor:
        """The scores of the classes seen so far (prompts chosen by the query, as in training)."""
        return self.mask_unseen(self.prompted(x)["logits"])
