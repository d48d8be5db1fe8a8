"""What the prompt methods (``l2p``, ``dualprompt``, ``coda-prompt``) share: a frozen backbone
reached through the token interface (:mod:`mammoth.backbones.tokens`), the query features of
the frozen model, a prompt pool chosen by key similarity, and the class masks of the original's
training step.

The original Mammoth builds two ViTs per method (a frozen copy for the query, and a prompted
one sharing its weights); here one frozen backbone serves both: the query is the backbone's
features without prompts, the prompted pass runs the same blocks with the method's prompts.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mammoth.backbones.base import MammothBackbone
from mammoth.backbones.tokens import require_tokens, token_features
from mammoth.config.value_checks import check_choice, check_positive_int
from mammoth.errors import ConfigError
from mammoth.models.base import ContinualModel

#: How prompts and keys start: ``uniform`` in [-1, 1] (the original's default) or ``zero``.
PROMPT_INITS = ("uniform", "zero")


class PromptModel(ContinualModel):
    """A method that trains prompts and a new linear head on a frozen token backbone.

    The backbone's parameters are frozen and it stays in eval mode (the original freezes
    ``blocks, patch_embed, cls_token, norm, pos_embed`` and keeps its query model in eval mode);
    the optimizer covers the method's own parameters (prompts, keys, head). ``observe`` trains
    on the current task's classes only (earlier classes' logits masked to ``-inf``, later
    classes cut), and :meth:`forward` scores the classes seen so far (later ones ``-inf``).
    """

    #: The backbone must serve the token interface (a ViT); others are refused when it is built.
    requires_tokens: ClassVar[bool] = True
    supports_compile: ClassVar[bool] = False  # trains through the token interface, block by block, not the backbone's forward
    method_name: ClassVar[str] = "prompt"

    def __init__(self, net: MammothBackbone, dataset: Any, **kwargs: Any) -> None:
        super().__init__(net, dataset, **kwargs)
        require_tokens(net, f"model={self.method_name}")
        net.requires_grad_(False)
        net.eval()
        self.n_classes = int(dataset.n_classes)
        self.width = int(net.num_features)

    def make_optimizer(self) -> torch.optim.Optimizer:
        """The optimizer over the method's trainable parameters (never the frozen backbone's), at
        :meth:`scaled_lr`."""
        parameters = [parameter for parameter in self.parameters() if parameter.requires_grad]
        if self.optimizer_name == "adam":
            return torch.optim.Adam(parameters, lr=self.scaled_lr(), weight_decay=self.weight_decay)
        return torch.optim.SGD(parameters, lr=self.scaled_lr(), momentum=self.momentum, weight_decay=self.weight_decay)

    def scaled_lr(self) -> float:
        """The learning rate the optimizer uses (``lr``; l2p and dualprompt scale it by batch size)."""
        return self.lr

    def train(self, mode: bool = True) -> PromptModel:
        """Set the method's training mode; the frozen backbone stays in eval mode."""
        super().train(mode)
        self.net.eval()
        return self

    def class_range(self) -> tuple[int, int]:
        """``(past, seen)``: the classes before the current task, and those up to its end."""
        classes = self.context.task_classes(self.current_task)
        return classes.start, classes.stop

    def query(self, x: Tensor) -> Tensor:
        """The frozen model's features of ``x`` (its class token), without gradients: the query."""
        with torch.no_grad():
            return token_features(self.net, x)

    def task_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Cross-entropy over the current task's classes (the original's ``logits[:, :past] = -inf``
        then ``logits[:, :seen]``)."""
        past, seen = self.class_range()
        logits = logits[:, :seen].clone()
        logits[:, :past] = float("-inf")
        return F.cross_entropy(logits, labels)

    def mask_unseen(self, logits: Tensor) -> Tensor:
        """``logits`` with the classes after the current task at ``-inf`` (the original returns
        ``logits[:, :seen]``; the full width keeps the harness's class indices)."""
        _, seen = self.class_range()
        return logits.masked_fill(torch.arange(logits.shape[1], device=logits.device) >= seen, float("-inf"))


def batch_scaled_lr(lr: float, batch_size: int) -> float:
    """The original's ``args.lr * args.batch_size / 256`` (l2p, dualprompt)."""
    return lr * batch_size / 256.0


def make_head(width: int, n_classes: int, timm_init: bool) -> nn.Linear:
    """A new linear head; ``timm_init``: truncated normal (std 0.02) weights and zero bias, as the
    original's ViT ``init_weights`` leaves l2p's and dualprompt's heads (else torch's default)."""
    head = nn.Linear(width, n_classes)
    if timm_init:
        nn.init.trunc_normal_(head.weight, std=0.02)
        nn.init.zeros_(head.bias)
    return head


def init_prompt(shape: tuple[int, ...], how: str, key: str) -> nn.Parameter:
    """A prompt or key parameter: ``uniform`` in [-1, 1] or ``zero``."""
    check_choice(key, how, PROMPT_INITS)
    value = torch.zeros(shape)
    if how == "uniform":
        nn.init.uniform_(value, -1, 1)
    return nn.Parameter(value)


def l2_normalize(x: Tensor, dim: int, epsilon: float = 1e-12) -> Tensor:
    """``x / max(||x||, sqrt(epsilon))`` along ``dim``, as the original computes it."""
    square_sum = torch.sum(x**2, dim=dim, keepdim=True)
    return x * torch.rsqrt(torch.clamp(square_sum, min=epsilon))


def select_prompts(similarity: Tensor, top_k: int, batchwise: bool) -> Tensor:
    """The ``top_k`` most similar prompts per example, ``(batch, top_k)``; ``batchwise``: the
    ``top_k`` prompts chosen most often in the batch, for every example (the original's majority
    vote, ties and padding included)."""
    _, index = torch.topk(similarity, k=top_k, dim=1)
    if not batchwise:
        return index
    pool_size = similarity.shape[1]
    prompt_id, id_counts = torch.unique(index, return_counts=True, sorted=True)
    if prompt_id.shape[0] < pool_size:
        padding = pool_size - prompt_id.shape[0]
        prompt_id = torch.cat([prompt_id, torch.full((padding,), int(index.min()), device=index.device)])
        id_counts = torch.cat([id_counts, torch.zeros(padding, dtype=id_counts.dtype, device=index.device)])
    _, major = torch.topk(id_counts, k=top_k)
    return prompt_id[major].expand(similarity.shape[0], -1).contiguous()


def pull_constraint(key_norm: Tensor, query_norm: Tensor, index: Tensor) -> Tensor:
    """The original's ``reduce_sim``: the summed cosine similarity of the chosen keys to the
    query, per example (the loss subtracts it, pulling chosen keys towards their queries)."""
    return torch.sum(key_norm[index] * query_norm.unsqueeze(1)) / query_norm.shape[0]


def check_pool(key: str, top_k: int, pool_size: int) -> int:
    """``top_k`` if it is between 1 and ``pool_size``; else a one-line ConfigError."""
    check_positive_int(key, top_k)
    if top_k > pool_size:
        raise ConfigError(f"{key}={top_k} is larger than the prompt pool; allowed: 1..{pool_size}")
    return top_k


def check_layers(key: str, layers: Any, num_blocks: int) -> tuple[int, ...]:
    """``layers`` as a tuple of distinct block indices of a backbone with ``num_blocks`` blocks;
    else a one-line ConfigError."""
    values = tuple(layers) if isinstance(layers, (list, tuple)) else None
    if values is None or any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < num_blocks for v in values) \
            or len(set(values)) != len(values):
        shown = list(layers) if isinstance(layers, (list, tuple)) else layers
        raise ConfigError(
            f"{key}={shown!r} is not a list of distinct block indices; allowed: indices in 0..{num_blocks - 1} "
            f"(the backbone has {num_blocks} blocks)"
        )
    return values
