"""A small Vision Transformer for 32x32 inputs, trained from scratch, on torchvision's blocks."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mammoth.backbones.base import MammothBackbone
from mammoth.backbones.registry import register_backbone
from mammoth.backbones.tokens import Prefix, check_block_index, check_prefix, multihead_attention
from mammoth.errors import BackboneError


class PatchEmbedding(nn.Module):
    """Image -> patch tokens with a class token and learned position embeddings."""

    def __init__(self, in_channels: int, image_size: tuple[int, int], patch_size: int, width: int, dropout: float) -> None:
        super().__init__()
        self.projection = nn.Conv2d(in_channels, width, kernel_size=patch_size, stride=patch_size)
        num_patches = (image_size[0] // patch_size) * (image_size[1] // patch_size)
        self.class_token = nn.Parameter(torch.zeros(1, 1, width))
        self.position = nn.Parameter(torch.empty(1, num_patches + 1, width).normal_(std=0.02))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.projection(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.class_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        return self.dropout(tokens + self.position)


class ClassTokenPooling(nn.Module):
    """Final layer norm, then the class token as the feature vector."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=1e-6)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.norm(tokens)[:, 0]


@register_backbone("vit")
class VisionTransformer(MammothBackbone):
    """ViT (Dosovitskiy et al. 2021) sized for small images: 4x4 patches, width 192, 6 blocks.

    Stages: patch embedding, each encoder block, class-token pooling. Serves the token interface
    (:mod:`mammoth.backbones.tokens`) that prompt methods use.
    """

    supports_tokens = True

    def __init__(
        self,
        num_classes: int,
        input_shape: tuple[int, int, int],
        patch_size: int = 4,
        width: int = 192,
        depth: int = 6,
        heads: int = 3,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        channels, height, image_width = input_shape
        if patch_size < 1 or height % patch_size or image_width % patch_size:
            raise BackboneError(
                f"invalid vit patch_size {patch_size!r}; allowed: a divisor of the input size {height}x{image_width}"
            )
        if width < 1 or depth < 0:
            raise BackboneError(f"invalid vit width {width!r} / depth {depth!r}; allowed: width >= 1, depth >= 0")
        if heads < 1 or width % heads:
            raise BackboneError(f"invalid vit heads {heads!r}; allowed: a divisor of width={width}")
        if not 0 < mlp_ratio < float("inf") or int(width * mlp_ratio) < 1:
            raise BackboneError(f"invalid vit mlp_ratio {mlp_ratio!r}; allowed: mlp_ratio > 0 with width * mlp_ratio >= 1")
        if not 0.0 <= dropout <= 1.0:
            raise BackboneError(f"invalid vit dropout {dropout!r}; allowed: 0 <= dropout <= 1")
        from torchvision.models.vision_transformer import EncoderBlock  # lazy: torchvision (heavy), kept off import mammoth.backbones

        mlp_width = int(width * mlp_ratio)
        blocks = [EncoderBlock(heads, width, mlp_width, dropout, dropout) for _ in range(depth)]
        embedding = PatchEmbedding(channels, (height, image_width), patch_size, width, dropout)
        self.stages = nn.ModuleList([embedding, *blocks, ClassTokenPooling(width)])
        self.num_features, self.num_classes = width, num_classes
        self.classifier = nn.Linear(width, num_classes)

    # ---- the token interface (mammoth.backbones.tokens) ----

    @property
    def num_blocks(self) -> int:
        """The number of encoder blocks."""
        return len(self.stages) - 2

    def embed_tokens(self, x: Tensor) -> Tensor:
        """Class token and patch tokens with position embeddings, ``(batch, 1 + patches, width)``."""
        return self.stages[0](x)

    @property
    def num_prefix_tokens(self) -> int:
        """One token (the class token) precedes the patch tokens."""
        return 1

    def class_position(self) -> Tensor:
        """The class token's position embedding, ``(width,)``."""
        return self.stages[0].position[0, 0]

    def run_block(self, index: int, tokens: Tensor, prefix: Prefix | None = None) -> Tensor:
        """Encoder block ``index``, with ``prefix`` keys and values prepended in its attention."""
        block = self.stages[1 + check_block_index(index, self.num_blocks)]
        if prefix is None:
            return block(tokens)
        check_prefix(prefix, tokens)
        attended = block.dropout(multihead_attention(block.self_attention, block.ln_1(tokens), prefix)) + tokens
        return attended + block.mlp(block.ln_2(attended))

    def final_norm(self, tokens: Tensor) -> Tensor:
        """The layer norm after the last block."""
        return self.stages[-1].norm(tokens)

    def pool_tokens(self, normed: Tensor) -> Tensor:
        """The class token of the normed tokens: the features."""
        return normed[:, 0]
