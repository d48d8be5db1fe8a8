"""AdaptFormer's parallel MLP adapters, put into the blocks of a transformer backbone from outside.

RanPAC's first session (as the original Mammoth's ``models/ranpac_utils/vit.py``) adds to each
block's output ``scale * up(dropout(relu(down(h))))``, where ``h`` is the block's residual stream
after its attention (the input of the norm before its MLP). No private copy of the ViT is made:
:func:`attach_mlp_adapters` finds each block's pre-MLP norm (timm's ``norm2``, torchvision's
``ln_2`` in the built-in ``vit``), records its input with a forward pre-hook, and adds the
adapter's output with a forward hook on the block, so every forward of the backbone (features,
evaluation) runs through the adapters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from mammoth.errors import BackboneError

#: Names of the norm before a block's MLP: timm's Block (and the original Mammoth's), torchvision's EncoderBlock.
MLP_NORM_NAMES = ("norm2", "ln_2")
#: Blocks whose ``norm2`` follows the MLP (timm's post-norm ViT block): refused.
POST_NORM_BLOCKS = ("ResPostBlock",)


class MlpAdapter(nn.Module):
    """``scale * up(dropout(relu(down(x))))``: AdaptFormer's adapter (no layer norm, as the original's)."""

    def __init__(self, width: int, bottleneck: int, scale: float = 0.1, dropout: float = 0.1) -> None:
        super().__init__()
        self.down_proj = nn.utils.skip_init(nn.Linear, width, bottleneck)
        self.up_proj = nn.utils.skip_init(nn.Linear, bottleneck, width)
        self.scale, self.dropout = scale, dropout
        self.residual: Tensor | None = None
        for parameter in self.parameters():
            nn.init.zeros_(parameter)

    def reset(self, generator: torch.Generator) -> None:
        """The original's ``lora`` initialisation: ``down`` Kaiming-uniform (a=sqrt(5)), the rest zero
        (a new adapter adds nothing), drawn from ``generator``."""
        with torch.no_grad():
            weight = torch.empty(self.down_proj.weight.shape)
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
            self.down_proj.weight.copy_(weight)
            for parameter in (self.down_proj.bias, self.up_proj.weight, self.up_proj.bias):
                parameter.zero_()

    def forward(self, x: Tensor) -> Tensor:
        """The adapter's output for the residual stream ``x`` (to be added to the block's output)."""
        hidden = F.dropout(F.relu(self.down_proj(x)), p=self.dropout, training=self.training)
        return self.up_proj(hidden) * self.scale

    # The two hooks are bound methods, so a deep copy of the backbone copies its adapters with them.

    def capture(self, norm: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        """Forward pre-hook of the block's pre-MLP norm: keep its input, the residual stream."""
        self.residual = inputs[0]

    def add(self, block: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
        """Forward hook of the block: its output plus the adapter's output for the kept residual stream."""
        residual, self.residual = self.residual, None
        return output + self(residual).to(output.dtype).reshape(output.shape)  # Swin blocks reshape after the MLP


def adapted_blocks(net: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """``(block, pre-MLP norm)`` for each transformer block of ``net``, in order; a one-line
    BackboneError when ``net`` has none."""
    found = []
    for module in net.modules():
        norm = next((getattr(module, name) for name in MLP_NORM_NAMES if isinstance(getattr(module, name, None), nn.Module)), None)
        if norm is not None and type(module).__name__ in POST_NORM_BLOCKS:
            raise BackboneError(
                f"{type(module).__name__} normalises after its MLP, so a parallel adapter has no pre-MLP input there; "
                "allowed: pre-norm transformer blocks (timm's Block, the built-in vit), or model.adapter_size=0"
            )
        if norm is not None:
            found.append((module, norm))
    if not found:
        raise BackboneError(
            f"{type(net).__name__} has no transformer blocks with a pre-MLP norm ({' or '.join(MLP_NORM_NAMES)}) for "
            "adapters; allowed: backbone=vit or a timm ViT, or model.adapter_size=0 (no first-session adaptation)"
        )
    return found


def block_width(norm: nn.Module, default: int) -> int:
    """The width of the residual stream a pre-MLP norm normalises (``default`` if it does not say)."""
    shape = getattr(norm, "normalized_shape", None)
    return int(shape[-1]) if shape else default


def attach_mlp_adapters(net: nn.Module, adapters: nn.ModuleList) -> list[RemovableHandle]:
    """Make ``adapters[i]`` a parallel adapter of block ``i`` of ``net`` (one per block); returns
    the hook handles (``handle.remove()`` detaches them)."""
    blocks = adapted_blocks(net)
    if len(blocks) != len(adapters):
        raise BackboneError(f"{len(adapters)} adapters for {len(blocks)} blocks; allowed: one adapter per block")
    handles = []
    for (block, norm), adapter in zip(blocks, adapters):
        handles.append(norm.register_forward_pre_hook(adapter.capture))
        handles.append(block.register_forward_hook(adapter.add))
    return handles
