"""ResNet backbones (He et al. 2016) built from torchvision's residual blocks."""

from __future__ import annotations

from typing import Literal

from torch import nn

from mammoth.backbones.base import MammothBackbone
from mammoth.backbones.registry import register_backbone
from mammoth.errors import BackboneError

#: depth -> (block kind, blocks per stage), as in torchvision.
RESNET_LAYOUTS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
ResNetDepth = Literal[18, 34, 50, 101, 152]
ResNetStem = Literal["auto", "cifar", "imagenet"]
#: Under ``stem=auto``, inputs up to this many pixels on their larger side get the CIFAR stem and
#: larger ones the ImageNet stem: the original's choice per dataset (a 3x3 stem for CIFAR's 32 and
#: Tiny ImageNet's 64 pixels; 7x7 stems, ``resnet50`` and ``resnet18_7x7_pt``, for 224 pixels).
CIFAR_STEM_MAX_SIZE = 64


def resolve_stem(stem: str, input_shape: tuple[int, ...]) -> str:
    """The stem a ResNet builds: ``cifar`` or ``imagenet`` as given; for ``auto``, ``cifar`` when
    the input (``(C, H, W)``) is at most :data:`CIFAR_STEM_MAX_SIZE` pixels on its larger side,
    else ``imagenet``. Any other value raises BackboneError naming the allowed ones."""
    if stem not in ("auto", "cifar", "imagenet"):
        raise BackboneError(f"invalid resnet stem {stem!r}; allowed: auto, cifar, imagenet")
    if stem != "auto":
        return stem
    return "cifar" if max(input_shape[-2:]) <= CIFAR_STEM_MAX_SIZE else "imagenet"


@register_backbone("resnet")
class ResNet(MammothBackbone):
    """ResNet with basic (18, 34) or bottleneck (50, 101, 152) blocks.

    ``width`` is the number of filters of the first stage (doubled at each of the 4 stages);
    ``stem`` is ``cifar`` (3x3 stride-1 conv, no max-pool; for 32x32 inputs), ``imagenet``
    (7x7 stride-2 conv and max-pool) or ``auto`` (:func:`resolve_stem`: ``cifar`` up to 64
    pixels, ``imagenet`` above). The stem built is ``self.stem``; ``self.resolved_arguments``
    holds it as the value a run records for ``stem``. Stages: stem, layer1..layer4, global pooling.
    """

    def __init__(
        self,
        num_classes: int,
        input_shape: tuple[int, int, int],
        depth: ResNetDepth = 18,
        width: int = 64,
        stem: ResNetStem = "auto",
    ) -> None:
        super().__init__()
        if depth not in RESNET_LAYOUTS:
            raise BackboneError(f"invalid resnet depth {depth!r}; allowed: {', '.join(map(str, RESNET_LAYOUTS))}")
        stem = resolve_stem(stem, input_shape)
        if width < 1:
            raise BackboneError(f"invalid resnet width {width!r}; allowed: a positive integer")
        from torchvision.models.resnet import BasicBlock, Bottleneck  # lazy: torchvision (heavy), kept off import mammoth.backbones

        kind, blocks = RESNET_LAYOUTS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.depth, self.width, self.num_classes, self.stem = depth, width, num_classes, stem
        self.resolved_arguments = {"stem": stem}  # what stem=auto chose, recorded in results.json
        self._in_planes = width
        layers = [_stem(input_shape[0], width, stem)]
        for index, count in enumerate(blocks):
            layers.append(self._make_layer(block, width * 2**index, count, stride=1 if index == 0 else 2))
        layers.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
        self.stages = nn.ModuleList(layers)
        self.num_features = width * 8 * block.expansion
        self.classifier = nn.Linear(self.num_features, num_classes)
        _init_weights(self)

    def _make_layer(self, block: type, planes: int, count: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._in_planes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self._in_planes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self._in_planes, planes, stride, downsample)]
        self._in_planes = planes * block.expansion
        layers += [block(self._in_planes, planes) for _ in range(count - 1)]
        return nn.Sequential(*layers)


def _stem(in_channels: int, width: int, stem: str) -> nn.Sequential:
    if stem == "cifar":
        return nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 7, 2, 3, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, 1),
    )


def _init_weights(module: nn.Module) -> None:
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)


@register_backbone("resnet18")
def resnet18(num_classes: int, input_shape: tuple[int, int, int], width: int = 64, stem: ResNetStem = "auto") -> ResNet:
    """ResNet-18 (basic blocks, 2-2-2-2)."""
    return ResNet(num_classes, input_shape, depth=18, width=width, stem=stem)


@register_backbone("resnet34")
def resnet34(num_classes: int, input_shape: tuple[int, int, int], width: int = 64, stem: ResNetStem = "auto") -> ResNet:
    """ResNet-34 (basic blocks, 3-4-6-3)."""
    return ResNet(num_classes, input_shape, depth=34, width=width, stem=stem)


@register_backbone("resnet50")
def resnet50(num_classes: int, input_shape: tuple[int, int, int], width: int = 64, stem: ResNetStem = "auto") -> ResNet:
    """ResNet-50 (bottleneck blocks, 3-4-6-3)."""
    return ResNet(num_classes, input_shape, depth=50, width=width, stem=stem)


@register_backbone("reduced-resnet18")
def reduced_resnet18(
    num_classes: int, input_shape: tuple[int, int, int], width: int = 20, stem: ResNetStem = "auto"
) -> ResNet:
    """The reduced ResNet-18 of the CL literature (GEM, ER): 20 base filters instead of 64."""
    return ResNet(num_classes, input_shape, depth=18, width=width, stem=stem)
