"""build_backbone: names and config nodes, data values, overrides, refused targets, errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from torch import nn

from mammoth.backbones import BACKBONES, MammothBackbone, build_backbone, get_backbone_entry, register_backbone
from mammoth.errors import BackboneError
from composing import compose_mammoth
from registries import restored

CIFAR = (3, 32, 32)
RESNET18_TARGET = "mammoth.backbones.resnet.resnet18"
CALLS: list = []


class OnlyClasses(MammothBackbone):
    """A backbone that declares num_classes but not input_shape (fixed 12 inputs)."""

    def __init__(self, num_classes: int, hidden: int = 4) -> None:
        super().__init__()
        self.stages = nn.ModuleList([nn.Sequential(nn.Flatten(), nn.Linear(12, hidden))])
        self.num_features, self.num_classes = hidden, num_classes
        self.classifier = nn.Linear(hidden, num_classes)


class NeedsDepth(OnlyClasses):
    """A backbone with a required argument that no data value fills."""

    def __init__(self, num_classes: int, depth: int) -> None:
        super().__init__(num_classes, hidden=depth)


def linear_factory(num_classes: int) -> nn.Module:
    """Returns a plain nn.Linear, not a MammothBackbone."""
    return nn.Linear(4, num_classes)


def spy_target(**kwargs: object) -> None:
    """Never registered: a config naming it must be refused without calling it."""
    CALLS.append(kwargs)


@pytest.fixture
def temporary():
    """register(name, target) for the test's duration; forgotten afterwards."""
    with restored(BACKBONES):
        yield lambda name, target: register_backbone(name)(target)


def resnet18_config(**values: object):
    config = OmegaConf.structured(get_backbone_entry("resnet18").schema)
    for key, value in values.items():
        config[key] = value
    return config


# ---- sources of a config ----


def test_build_from_name_fills_data_values() -> None:
    net = build_backbone("mnistmlp", num_classes=7, input_shape=(1, 28, 28))
    assert net.classifier.out_features == 7
    assert net.stages[0][1].in_features == 784


def test_name_is_case_insensitive_and_underscore_is_dash() -> None:
    net = build_backbone("Reduced_ResNet18", num_classes=10, input_shape=CIFAR)
    assert net.width == 20


def test_build_from_schema_class_and_instance() -> None:
    schema = get_backbone_entry("resnet18").schema
    from_class = build_backbone(schema, num_classes=10, input_shape=CIFAR)
    from_instance = build_backbone(schema(width=8), num_classes=10, input_shape=CIFAR)
    assert from_class.width == 64 and from_instance.width == 8
    assert from_instance.classifier.out_features == 10


def test_build_from_dictconfig_fills_missing_data_values() -> None:
    config = resnet18_config(width=8)
    assert OmegaConf.is_missing(config, "num_classes") and OmegaConf.is_missing(config, "input_shape")
    net = build_backbone(config, num_classes=10, input_shape=(1, 32, 32))
    assert net.classifier.out_features == 10
    assert net.stages[0][0].in_channels == 1 and net.stages[0][0].out_channels == 8
    assert OmegaConf.is_missing(config, "num_classes")  # the caller's config is not modified


def test_build_from_hydra_composed_config() -> None:
    config = compose_mammoth("backbone=resnet18", "backbone.width=8", "backbone.stem=imagenet")
    assert config.backbone._target_ == RESNET18_TARGET
    net = build_backbone(config.backbone, num_classes=10, input_shape=CIFAR).eval()
    assert net.width == 8
    with torch.no_grad():
        assert net.stages[0](torch.randn(1, *CIFAR)).shape == (1, 8, 8, 8)


def test_hydra_rejects_wrong_type_at_compose_time() -> None:
    with pytest.raises(ConfigCompositionException) as info:
        compose_mammoth("backbone=resnet18", "backbone.width=wide")
    assert "wide" in str(info.value.__cause__ or info.value)


def test_literal_passes_compose_and_fails_build_with_allowed_values() -> None:
    config = compose_mammoth("backbone=resnet18", "backbone.stem=tiny")
    with pytest.raises(BackboneError) as info:
        build_backbone(config.backbone, num_classes=10, input_shape=CIFAR)
    assert "backbone.stem" in str(info.value) and "'cifar', 'imagenet'" in str(info.value)


@pytest.mark.parametrize("route", ["pickle", "yaml"])
def test_missing_values_survive_pickle_and_yaml(route: str) -> None:
    config = resnet18_config(width=8)
    if route == "pickle":
        config = pickle.loads(pickle.dumps(config))
    else:
        config = OmegaConf.create(OmegaConf.to_yaml(config))
    net = build_backbone(config, num_classes=10, input_shape=CIFAR)
    assert net.classifier.out_features == 10 and net.width == 8


# ---- data values ----


def test_configured_num_classes_larger_than_data_wins() -> None:
    net = build_backbone(resnet18_config(width=8, num_classes=20), num_classes=10, input_shape=CIFAR)
    assert net.classifier.out_features == 20


def test_configured_num_classes_smaller_than_data_raises() -> None:
    with pytest.raises(BackboneError) as info:
        build_backbone(resnet18_config(width=8, num_classes=5), num_classes=10, input_shape=CIFAR)
    message = str(info.value)
    assert "num_classes=5" in message and "10" in message


def test_num_classes_null_in_mapping_takes_the_data_value() -> None:
    config = {"_target_": RESNET18_TARGET, "num_classes": None, "width": 8}
    assert build_backbone(config, num_classes=10, input_shape=CIFAR).classifier.out_features == 10


def test_contradicting_input_shape_raises() -> None:
    with pytest.raises(BackboneError) as info:
        build_backbone(resnet18_config(width=8, input_shape=[1, 28, 28]), num_classes=10, input_shape=CIFAR)
    message = str(info.value)
    assert "[1, 28, 28]" in message and "[3, 32, 32]" in message


def test_matching_configured_input_shape_is_accepted() -> None:
    net = build_backbone(resnet18_config(width=8, input_shape=[1, 32, 32]), num_classes=10, input_shape=(1, 32, 32))
    assert net.stages[0][0].in_channels == 1


def test_data_values_the_backbone_does_not_declare_are_ignored(temporary) -> None:
    temporary("only-classes", OnlyClasses)
    assert get_backbone_entry("only-classes").argument("input_shape") is None
    net = build_backbone("only-classes", num_classes=6, input_shape=(3, 2, 2))
    assert isinstance(net, OnlyClasses) and net.classifier.out_features == 6
    with torch.no_grad():
        assert net(torch.randn(2, 3, 2, 2)).shape == (2, 6)


def test_non_data_value_overrides_the_config() -> None:
    net = build_backbone(resnet18_config(width=8), num_classes=10, input_shape=CIFAR, width=4)
    assert net.width == 4 and net.stages[0][0].out_channels == 4


def test_input_shape_list_is_converted() -> None:
    net = build_backbone("mnistmlp", num_classes=3, input_shape=[1, 4, 4], hidden_sizes=[5])
    assert net.stages[0][1].in_features == 16


# ---- refused configs ----


@pytest.mark.parametrize("as_dictconfig", [False, True], ids=["mapping", "dictconfig"])
def test_os_system_target_is_refused_and_not_called(tmp_path: Path, as_dictconfig: bool) -> None:
    marker = tmp_path / "called"
    config = {"_target_": "os.system", "command": f"touch {marker}"}
    if as_dictconfig:
        config = OmegaConf.create(config)
    with pytest.raises(BackboneError) as info:
        build_backbone(config, num_classes=10, input_shape=CIFAR)
    assert "refusing" in str(info.value) and "'os.system'" in str(info.value)
    assert "resnet18" in str(info.value)  # lists the registered backbones
    assert not marker.exists()


def test_builtins_eval_target_is_refused_and_not_called(tmp_path: Path) -> None:
    marker = tmp_path / "called"
    config = {"_target_": "builtins.eval", "source": f"__import__('pathlib').Path({str(marker)!r}).touch()"}
    with pytest.raises(BackboneError, match="builtins.eval"):
        build_backbone(config)
    assert not marker.exists()


def test_unregistered_target_in_this_module_is_not_called() -> None:
    CALLS.clear()
    with pytest.raises(BackboneError, match="not a registered backbone"):
        build_backbone({"_target_": f"{__name__}.spy_target", "num_classes": 3})
    assert CALLS == []


def test_config_without_target_is_refused() -> None:
    with pytest.raises(BackboneError, match="refusing to build _target_ None"):
        build_backbone({"num_classes": 10})


def test_unsupported_source_type_is_refused() -> None:
    with pytest.raises(BackboneError) as info:
        build_backbone(42)
    assert "int" in str(info.value) and "registered name" in str(info.value)


# ---- argument errors ----


def test_unknown_argument_in_config_lists_the_arguments() -> None:
    config = {"_target_": RESNET18_TARGET, "depth": 50}
    with pytest.raises(BackboneError) as info:
        build_backbone(config, num_classes=10, input_shape=CIFAR)
    message = str(info.value)
    assert "'depth'" in message and "'resnet18'" in message
    assert "width: int = 64" in message and "stem:" in message and "num_classes: int = ???" in message


def test_unknown_keyword_value_is_an_error() -> None:
    with pytest.raises(BackboneError) as info:
        build_backbone("mnistmlp", num_classes=10, input_shape=(1, 4, 4), depth=3)
    assert "'depth'" in str(info.value) and "hidden_sizes" in str(info.value)


def test_missing_required_value_names_the_field(temporary) -> None:
    temporary("needs-depth", NeedsDepth)
    with pytest.raises(BackboneError) as info:
        build_backbone("needs-depth", num_classes=3)
    assert "backbone.depth" in str(info.value) and "missing" in str(info.value)
    assert build_backbone("needs-depth", num_classes=3, depth=7).num_features == 7


def test_wrong_value_type_names_argument_and_value() -> None:
    with pytest.raises(BackboneError) as info:
        build_backbone("resnet18", num_classes=10, input_shape=CIFAR, width="wide")
    message = str(info.value)
    assert "backbone.width" in message and "'wide'" in message and "integer" in message


def test_input_shape_of_wrong_length_is_refused() -> None:
    with pytest.raises(BackboneError) as info:
        build_backbone("resnet18", num_classes=10, input_shape=(32, 32))
    assert "input_shape" in str(info.value) and "3 items" in str(info.value)


def test_function_returning_a_non_backbone_is_named(temporary) -> None:
    temporary("plain-linear", linear_factory)
    with pytest.raises(BackboneError) as info:
        build_backbone("plain-linear", num_classes=3)
    message = str(info.value)
    assert f"{__name__}.linear_factory" in message and "Linear" in message and "MammothBackbone" in message


def test_a_backbone_argument_named_checked_reaches_the_backbone() -> None:
    with restored(BACKBONES):
        @register_backbone("checked-net")
        class CheckedNet(MammothBackbone):
            def __init__(self, num_classes: int, input_shape: tuple, checked: bool = False) -> None:
                super().__init__()
                self.stages = nn.ModuleList([nn.Flatten()])
                self.num_features, self.num_classes, self.checked = 4, num_classes, checked
                self.classifier = nn.Linear(4, num_classes)

        net = build_backbone("checked-net", num_classes=2, input_shape=(1, 2, 2), checked=True)
        assert net.checked is True and net.num_classes == 2
