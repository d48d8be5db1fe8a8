"""The token interface: how a method reaches inside a Vision Transformer backbone.

Prompt methods (L2P, DualPrompt, CODA-Prompt) do not need a private copy of a ViT: a backbone
that serves this interface (``supports_tokens = True``; the built-in ``vit``, and ``timm``
backbones whose model is a timm ``VisionTransformer``) lets them run the network piece by piece:

- ``embed_tokens(x)``: the tokens before the first block, ``(batch, tokens, width)`` (class token
  first, position embeddings added). Prompt tuning (L2P) inserts its prompt tokens here.
- ``run_block(index, tokens, prefix=None)``: block ``index`` (of ``num_blocks``); ``prefix`` is
  ``(keys, values)``, each ``(batch, length, width)``, prepended to that block's attention keys and
  values after their projection (prefix tuning: DualPrompt, CODA-Prompt). No prefix: the block as
  the plain forward runs it.
- ``final_norm(tokens)``: the norm after the last block; ``pool_tokens(normed)``: the pre-logits
  features from the normed tokens (the class token, through the model's own pooling).
- ``num_prefix_tokens``: how many tokens precede the patch tokens (1: the class token), and
  ``class_position()``: the position embedding the class token received, ``(width,)`` (zeros for
  a model that gives it none). Prompt tuning (L2P) inserts its prompt tokens between the prefix
  and the patch tokens, each plus ``class_position()`` (:func:`insert_prompts`): the original's
  L2P does exactly that, extending the position embeddings of a pretrained ViT over its prompts
  with copies of the class token's.

For any input, ``pool_tokens(final_norm(run_block(n-1, ... run_block(0, embed_tokens(x)))))``
equals ``net(x, returnt="features")`` (:func:`token_features` runs exactly that), so a method that
uses the interface sees the same network as every other method. The prompt methods' query (the
frozen model's features) is that same call without prompts: one backbone serves both passes.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mammoth.errors import BackboneError

Prefix = tuple[Tensor, Tensor]


def require_tokens(net: nn.Module, who: str) -> nn.Module:
    """``net`` if it serves the token interface; else a one-line BackboneError naming ``who`` needs it."""
    if not getattr(net, "supports_tokens", False):
        name = type(net).__name__ + (f" {net.name!r}" if isinstance(getattr(net, "name", None), str) else "")
        raise BackboneError(
            f"{who} needs a Vision Transformer backbone with the token interface, and {name} has none; "
            "allowed: backbone=vit, or backbone=timm with a timm ViT (e.g. backbone.name=vit-b16-in21k)"
        )
    return net


def token_features(net: nn.Module, x: Tensor, prefixes: Optional[dict[int, Prefix]] = None) -> Tensor:
    """The pre-logits features of ``x`` run through the token interface, with ``prefixes[i]`` given
    to block ``i`` (none: equal to ``net(x, returnt="features")``)."""
    tokens = net.embed_tokens(x)
    for index in range(net.num_blocks):
        tokens = net.run_block(index, tokens, (prefixes or {}).get(index))
    return net.pool_tokens(net.final_norm(tokens))


def insert_prompts(net: nn.Module, tokens: Tensor, prompts: Tensor) -> Tensor:
    """``tokens`` (from ``embed_tokens``) with ``prompts`` ``(batch, length, width)``, each plus the
    class token's position embedding, inserted after the prefix (class) tokens."""
    prefix = net.num_prefix_tokens
    prompts = prompts + net.class_position().to(prompts.dtype)
    return torch.cat([tokens[:, :prefix], prompts.to(tokens.dtype), tokens[:, prefix:]], dim=1)


def split_heads(x: Tensor, heads: int) -> Tensor:
    """``(batch, length, width)`` -> ``(batch, heads, length, width // heads)``."""
    batch, length, width = x.shape
    return x.reshape(batch, length, heads, width // heads).transpose(1, 2)


def check_block_index(index: int, num_blocks: int) -> int:
    """``index`` if it names one of ``num_blocks`` blocks; else a one-line BackboneError."""
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < num_blocks:
        raise BackboneError(f"block index {index!r} is out of range; allowed: 0..{num_blocks - 1}")
    return index


def check_prefix(prefix: Prefix, tokens: Tensor) -> None:
    """A prefix is two tensors ``(batch, length, width)`` matching ``tokens``' batch and width."""
    if not isinstance(prefix, tuple) or len(prefix) != 2:
        raise BackboneError(f"a prefix is (keys, values); got {type(prefix).__name__}")
    for name, part in zip(("keys", "values"), prefix):
        if part.ndim != 3 or part.shape[0] != tokens.shape[0] or part.shape[2] != tokens.shape[2]:
            raise BackboneError(
                f"prefix {name} of shape {tuple(part.shape)}; allowed: ({tokens.shape[0]}, length, {tokens.shape[2]}) "
                "for these tokens"
            )


def prefixed_attention(q: Tensor, k: Tensor, v: Tensor, prefix: Optional[Prefix], heads: int,
                       dropout: float) -> Tensor:
    """Scaled dot-product attention of per-head ``q, k, v`` ``(batch, heads, length, dim)``, with the
    prefix keys and values (``(batch, length, width)``) prepended to ``k`` and ``v``."""
    if prefix is not None:
        k = torch.cat([split_heads(prefix[0], heads).to(k.dtype), k], dim=2)
        v = torch.cat([split_heads(prefix[1], heads).to(v.dtype), v], dim=2)
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)


def multihead_attention(attention: nn.MultiheadAttention, x: Tensor, prefix: Optional[Prefix]) -> Tensor:
    """torch's ``nn.MultiheadAttention`` (batch first, self-attention) on ``x``, with a prefix."""
    heads = attention.num_heads
    q, k, v = F.linear(x, attention.in_proj_weight, attention.in_proj_bias).chunk(3, dim=-1)
    dropout = attention.dropout if attention.training else 0.0
    out = prefixed_attention(split_heads(q, heads), split_heads(k, heads), split_heads(v, heads), prefix, heads, dropout)
    return attention.out_proj(out.transpose(1, 2).reshape(x.shape))


def timm_attention(attention: nn.Module, x: Tensor, prefix: Optional[Prefix]) -> Tensor:
    """timm's ``Attention`` (``qkv``, ``q_norm``, ``k_norm``, ``norm``, ``proj``) on ``x``, with a prefix."""
    batch, length, _ = x.shape
    qkv = attention.qkv(x).reshape(batch, length, 3, attention.num_heads, attention.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attention.q_norm(q), attention.k_norm(k)
    dropout = attention.attn_drop.p if attention.training else 0.0
    out = prefixed_attention(q, k, v, prefix, attention.num_heads, dropout)
    out = attention.norm(out.transpose(1, 2).reshape(batch, length, -1))
    if getattr(attention, "gate", None) is not None:
        out = out * attention.gate(x).sigmoid()
    return attention.proj_drop(attention.proj(out))
