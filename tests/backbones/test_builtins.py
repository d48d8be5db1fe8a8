"""The built-in backbone families: ResNet, reduced ResNet-18, MNIST MLP, ViT, torchvision zoo."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from mammoth.backbones import build_backbone
from mammoth.backbones.resnet import ResNet
from mammoth.errors import BackboneError

CIFAR = (3, 32, 32)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def resnet18_count(width: int, num_classes: int, in_channels: int, stem_kernel: int) -> int:
    """Parameters of a ResNet-18 (basic blocks 2-2-2-2, 1x1 projection shortcuts), by hand."""
    total = in_channels * width * stem_kernel**2 + 2 * width  # stem conv + BN
    in_planes = width
    for stage in range(4):
        planes = width * 2**stage
        for block in range(2):
            total += in_planes * planes * 9 + 2 * planes + planes * planes * 9 + 2 * planes
            if in_planes != planes:  # the first block of stages 2-4 downsamples
                total += in_planes * planes + 2 * planes
            in_planes = planes
    return total + in_planes * num_classes + num_classes


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(2, *CIFAR, generator=torch.Generator().manual_seed(0))


# ---- ResNet ----


def test_resnet_depth_20_lists_allowed_depths() -> None:
    with pytest.raises(BackboneError) as info:
        build_backbone("resnet", num_classes=10, input_shape=CIFAR, depth=20)
    assert "depth" in str(info.value) and "20" in str(info.value)
    assert "18, 34, 50, 101, 152" in str(info.value)


def test_resnet_class_refuses_depth_20_directly() -> None:
    with pytest.raises(BackboneError, match="18, 34, 50, 101, 152"):
        ResNet(10, CIFAR, depth=20)


def test_resnet_unknown_stem_lists_allowed() -> None:
    with pytest.raises(BackboneError) as info:
        build_backbone("resnet18", num_classes=10, input_shape=CIFAR, stem="tiny")
    assert "'tiny'" in str(info.value) and "'auto'" in str(info.value) and "'cifar'" in str(info.value)
    assert "'imagenet'" in str(info.value)
    with pytest.raises(BackboneError, match=r"^invalid resnet stem 'tiny'; allowed: auto, cifar, imagenet$"):
        ResNet(10, CIFAR, stem="tiny")  # the class itself checks too


@pytest.mark.parametrize(("input_shape", "built"), [
    ((1, 8, 8), "cifar"), ((3, 32, 32), "cifar"), ((3, 64, 64), "cifar"),  # seq-digits, CIFAR, Tiny ImageNet
    ((3, 65, 65), "imagenet"), ((3, 224, 224), "imagenet"), ((3, 32, 100), "imagenet"),  # the larger side decides
])
def test_resnet_stem_auto_follows_the_input_size(input_shape: tuple, built: str) -> None:
    net = build_backbone("resnet18", num_classes=10, input_shape=input_shape, width=4)  # stem=auto by default
    first = net.stages[0][0]
    assert (net.stem, net.resolved_arguments) == (built, {"stem": built})
    assert (first.kernel_size, first.stride) == (((3, 3), (1, 1)) if built == "cifar" else ((7, 7), (2, 2)))
    assert any(isinstance(layer, torch.nn.MaxPool2d) for layer in net.stages[0]) == (built == "imagenet")


@pytest.mark.parametrize(("stem", "input_shape"), [("cifar", (3, 224, 224)), ("imagenet", (3, 32, 32))])
def test_resnet_explicit_stem_is_kept_at_any_size(stem: str, input_shape: tuple) -> None:
    net = build_backbone("resnet50", num_classes=10, input_shape=input_shape, width=4, stem=stem)
    assert (net.stem, net.resolved_arguments, net.stages[0][0].kernel_size) == (
        stem, {"stem": stem}, (3, 3) if stem == "cifar" else (7, 7))


@pytest.mark.parametrize(("stem", "size"), [("imagenet", 8), ("cifar", 32)])
def test_resnet_stem_output_size(stem: str, size: int, x: torch.Tensor) -> None:
    net = build_backbone("resnet18", num_classes=10, input_shape=CIFAR, width=8, stem=stem).eval()
    with torch.no_grad():
        stem_output = net.stages[0](x)
        full = net(x, returnt="full")
    assert stem_output.shape == (2, 8, size, size)
    assert full[0].shape == (2, 8, size, size)


@pytest.mark.parametrize(
    ("depth", "block", "layout"),
    [
        (18, BasicBlock, (2, 2, 2, 2)),
        (34, BasicBlock, (3, 4, 6, 3)),
        (50, Bottleneck, (3, 4, 6, 3)),
        (101, Bottleneck, (3, 4, 23, 3)),
    ],
)
def test_resnet_depth_selects_block_and_layout(depth: int, block: type, layout: tuple) -> None:
    net = build_backbone("resnet", num_classes=10, input_shape=CIFAR, depth=depth, width=4)
    stages = list(net.stages)[1:5]
    assert tuple(len(stage) for stage in stages) == layout
    assert all(type(b) is block for stage in stages for b in stage)
    assert net.num_features == 4 * 8 * (4 if block is Bottleneck else 1)


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_resnet_parameter_count_matches_torchvision(depth: int) -> None:
    torchvision_net = getattr(torchvision.models, f"resnet{depth}")(num_classes=10)
    ours = build_backbone("resnet", num_classes=10, input_shape=CIFAR, depth=depth, width=64, stem="imagenet")
    assert count(ours) == count(torchvision_net)
    assert ours.num_features == torchvision_net.fc.in_features


def test_resnet18_function_equals_resnet_depth_18() -> None:
    via_function = build_backbone("resnet18", num_classes=10, input_shape=CIFAR, width=16)
    via_class = build_backbone("resnet", num_classes=10, input_shape=CIFAR, depth=18, width=16)
    assert count(via_function) == count(via_class) == resnet18_count(16, 10, 3, stem_kernel=3)


def test_resnet_cifar_stem_is_a_3x3_conv() -> None:
    torchvision_count = count(torchvision.models.resnet18(num_classes=10))
    ours = build_backbone("resnet18", num_classes=10, input_shape=CIFAR)  # stem=auto: cifar at 32 pixels
    assert count(ours) == torchvision_count - 3 * 64 * 7 * 7 + 3 * 64 * 3 * 3
    assert resnet18_count(64, 10, 3, stem_kernel=7) == torchvision_count  # the hand count is right


def test_reduced_resnet18_has_width_20() -> None:
    net = build_backbone("reduced-resnet18", num_classes=10, input_shape=CIFAR)
    assert net.width == 20 and net.depth == 18
    assert net.stages[0][0].out_channels == 20
    assert net.num_features == 160
    assert count(net) == resnet18_count(20, 10, 3, stem_kernel=3)
    assert 1.05e6 < count(net) < 1.15e6  # "1.09M parameters" in the CL literature


def test_resnet_grayscale_input(x: torch.Tensor) -> None:
    net = build_backbone("resnet18", num_classes=10, input_shape=(1, 32, 32), width=8).eval()
    assert net.stages[0][0].in_channels == 1
    with torch.no_grad():
        assert net(x[:, :1]).shape == (2, 10)


# ---- MNIST MLP ----


def linear_sizes(net: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in net.modules() if isinstance(m, nn.Linear)]


def test_mnistmlp_default_hidden_sizes() -> None:
    net = build_backbone("mnistmlp", num_classes=10, input_shape=(1, 28, 28))
    assert linear_sizes(net) == [(784, 100), (100, 100), (100, 10)]
    assert net.num_features == 100
    with torch.no_grad():
        full = net(torch.randn(3, 1, 28, 28), returnt="full")
    assert [tuple(t.shape) for t in full] == [(3, 100), (3, 100), (3, 10)]


def test_mnistmlp_starts_with_xavier_uniform_weights_and_zero_biases() -> None:
    # The original Mammoth's backbone.xavier on every nn.Linear: U(-a, a), a = sqrt(3) * sqrt(2 / (fan_in + fan_out)).
    torch.manual_seed(0)
    net = build_backbone("mnistmlp", num_classes=10, input_shape=(1, 28, 28))
    bounds = {(784, 100): math.sqrt(6 / 884), (100, 100): math.sqrt(6 / 200), (100, 10): math.sqrt(6 / 110)}
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 3
    for linear in linears:
        bound = bounds[(linear.in_features, linear.out_features)]
        weight = linear.weight.detach()
        assert torch.count_nonzero(linear.bias) == 0
        assert float(weight.abs().max()) <= bound
        # uniform on [-a, a]: the largest |w| is close to a and the std is a / sqrt(3)
        assert float(weight.abs().max()) > 0.95 * bound
        assert abs(float(weight.std()) - bound / math.sqrt(3)) < 0.1 * bound / math.sqrt(3)
    # PyTorch's default (kaiming_uniform with a=sqrt(5)) bound for 784 -> 100 is 1/sqrt(784) = 0.0357 < 0.0824
    assert float(linears[0].weight.abs().max()) > 1 / math.sqrt(784)


def test_mnistmlp_hidden_sizes_configurable() -> None:
    net = build_backbone("mnistmlp", num_classes=5, input_shape=(3, 4, 4), hidden_sizes=[30, 20, 10])
    assert linear_sizes(net) == [(48, 30), (30, 20), (20, 10), (10, 5)]
    assert net.num_features == 10


@pytest.mark.parametrize("hidden_sizes", [[], [10, 0]])
def test_mnistmlp_invalid_hidden_sizes(hidden_sizes: list[int]) -> None:
    with pytest.raises(BackboneError, match="hidden_sizes"):
        build_backbone("mnistmlp", num_classes=5, input_shape=(1, 4, 4), hidden_sizes=hidden_sizes)


def test_mnistmlp_hidden_sizes_must_be_integers() -> None:
    with pytest.raises(BackboneError) as info:
        build_backbone("mnistmlp", num_classes=5, input_shape=(1, 4, 4), hidden_sizes=["wide"])
    assert "hidden_sizes" in str(info.value) and "'wide'" in str(info.value)


# ---- ViT ----

SMALL_VIT = {"width": 24, "depth": 2, "heads": 2}


def test_vit_patch_size_must_divide_input() -> None:
    with pytest.raises(BackboneError) as info:
        build_backbone("vit", num_classes=10, input_shape=CIFAR, patch_size=5, **SMALL_VIT)
    assert "patch_size" in str(info.value) and "5" in str(info.value) and "32x32" in str(info.value)


def test_vit_heads_must_divide_width() -> None:
    with pytest.raises(BackboneError, match="heads"):
        build_backbone("vit", num_classes=10, input_shape=CIFAR, width=24, heads=5)


@pytest.mark.parametrize(("input_shape", "tokens"), [((3, 32, 32), 16 + 1), ((3, 32, 16), 8 + 1)])
def test_vit_tokens_per_patch(input_shape: tuple, tokens: int) -> None:
    net = build_backbone("vit", num_classes=10, input_shape=input_shape, patch_size=8, **SMALL_VIT).eval()
    with torch.no_grad():
        full = net(torch.randn(2, *input_shape), returnt="full")
    assert full[0].shape == (2, tokens, 24)
    assert len(full) == 1 + 2 + 1 + 1  # embedding, 2 blocks, pooling, logits
    assert full[-2].shape == (2, 24) and full[-1].shape == (2, 10)


# ---- torchvision zoo ----


def test_torchvision_unknown_arch_suggests_closest() -> None:
    with pytest.raises(BackboneError) as info:
        build_backbone("torchvision", num_classes=10, input_shape=CIFAR, arch="mobilenet_v3_smal")
    message = str(info.value)
    assert "'mobilenet_v3_smal'" in message
    assert "did you mean 'mobilenet_v3_small'" in message
    assert "resnet18" in message  # the allowed architectures are listed


def test_torchvision_mobilenet_v3_small(x: torch.Tensor) -> None:
    torch.manual_seed(0)
    net = build_backbone("torchvision", num_classes=10, input_shape=CIFAR, arch="mobilenet_v3_small").eval()
    reference = torchvision.models.mobilenet_v3_small()
    assert net.num_features == reference.classifier[-1].in_features
    assert count(net) == count(reference) - count(reference.classifier[-1]) + (net.num_features + 1) * 10
    with torch.no_grad():
        out = net(x, returnt="out")
        features = net(x, returnt="features")
        full = net(x, returnt="full")
    assert out.shape == (2, 10) and features.shape == (2, net.num_features)
    torch.testing.assert_close(full[-1], out)
    torch.testing.assert_close(full[-2], features)


@pytest.mark.parametrize(("arch", "first_conv"), [("resnet18", "conv1"), ("mobilenet_v3_small", "features.0.0")])
def test_torchvision_grayscale_input(arch: str, first_conv: str, x: torch.Tensor) -> None:
    net = build_backbone("torchvision", num_classes=10, input_shape=(1, 32, 32), arch=arch).eval()
    assert net.trunk.get_submodule(first_conv).in_channels == 1
    with torch.no_grad():
        assert net(x[:, :1]).shape == (2, 10)
        assert net(x[:, :1], returnt="features").shape == (2, net.num_features)


def test_torchvision_builds_without_weights_by_default() -> None:
    net = build_backbone("torchvision", num_classes=7, input_shape=CIFAR)
    assert net.arch == "resnet18"
    assert isinstance(net.trunk.fc, nn.Identity) and net.classifier.out_features == 7
    assert count(net) == count(torchvision.models.resnet18(num_classes=7))


def test_torchvision_full_keeps_each_stage_output(x: torch.Tensor) -> None:
    net = build_backbone("torchvision", num_classes=10, input_shape=CIFAR, arch="resnet18").eval()
    with torch.no_grad():
        full = net(x, returnt="full")
        bn1 = net.trunk.bn1(net.trunk.conv1(x))
    assert bn1.min() < 0  # a batch-norm output has negative values
    torch.testing.assert_close(full[1], bn1)
