"""The classic MLP of the continual-learning literature (MNIST benchmarks)."""

from __future__ import annotations

import math

from torch import nn

from mammoth.backbones.base import MammothBackbone
from mammoth.backbones.registry import register_backbone
from mammoth.errors import BackboneError


@register_backbone("mnistmlp")
class MNISTMLP(MammothBackbone):
    """Flatten, then fully connected ReLU layers (``hidden_sizes``, two of 100 by default).

    The input size is the product of ``input_shape``. Stages: one per hidden layer; the last
    hidden layer's output is the feature vector. Every linear layer (the classifier included)
    starts with Xavier-uniform weights and zero biases, as the original Mammoth's ``xavier``.
    """

    def __init__(
        self, num_classes: int, input_shape: tuple[int, ...], hidden_sizes: tuple[int, ...] = (100, 100)
    ) -> None:
        super().__init__()
        if not hidden_sizes or any(size < 1 for size in hidden_sizes):
            raise BackboneError(f"invalid mnistmlp hidden_sizes {list(hidden_sizes)}; allowed: one or more positive integers")
        sizes = [math.prod(input_shape), *hidden_sizes]
        layers = [nn.Sequential(nn.Flatten(), nn.Linear(sizes[0], sizes[1]), nn.ReLU())]
        layers += [nn.Sequential(nn.Linear(a, b), nn.ReLU()) for a, b in zip(sizes[1:-1], sizes[2:])]
        self.stages = nn.ModuleList(layers)
        self.num_features, self.num_classes = sizes[-1], num_classes
        self.classifier = nn.Linear(sizes[-1], num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform weights (bound sqrt(6 / (fan_in + fan_out))) and zero biases in every linear layer."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
