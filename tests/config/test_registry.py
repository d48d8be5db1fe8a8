"""mammoth.config.registry.Registry through register_backbone, and a private Registry of its own."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError
from torch import nn

from mammoth.backbones import BACKBONES, MammothBackbone, build_backbone, get_backbone_entry, list_backbones, register_backbone
from mammoth.errors import BackboneError, ConfigError
from mammoth.config.options import option_names, option_schema
from mammoth.config.registry import Registry, import_modules, schema_node
from registries import restored

BUILT_INS = ["mnistmlp", "resnet", "resnet18", "resnet34", "resnet50", "reduced-resnet18", "vit", "torchvision"]


class TinyNet(MammothBackbone):
    """A two-layer test backbone."""

    def __init__(self, num_classes: int, input_shape: tuple[int, ...], hidden: int = 5) -> None:
        super().__init__()
        inputs = 1
        for size in input_shape:
            inputs *= size
        self.stages = nn.ModuleList([nn.Sequential(nn.Flatten(), nn.Linear(inputs, hidden), nn.ReLU())])
        self.num_features, self.num_classes = hidden, num_classes
        self.classifier = nn.Linear(hidden, num_classes)


def tiny_net_factory(num_classes: int, input_shape: tuple[int, ...], scale: float = 1.0) -> TinyNet:
    """Builds a TinyNet whose hidden size is 4 * scale."""
    return TinyNet(num_classes, input_shape, hidden=int(4 * scale))


def other_factory(num_classes: int) -> TinyNet:
    return TinyNet(num_classes, (1,))


def widget(size: int, color: str = "red", net: object = None) -> dict:
    """A widget, for a private registry."""
    return {"size": size, "color": color}


@pytest.fixture
def temporary():
    """register(name, target) for the test's duration; forgotten afterwards."""
    with restored(BACKBONES):
        yield lambda name, target: register_backbone(name)(target)


def served_node(name: str) -> DictConfig:
    """The closed, typed config an app that opted in composes for ``backbone=name``."""
    return schema_node(option_schema("backbone", name))


# ---- registering ----


def test_register_class(temporary) -> None:
    assert temporary("tiny-net", TinyNet) is TinyNet  # the decorator returns the class unchanged
    entry = get_backbone_entry("tiny-net")
    assert entry.target is TinyNet
    assert [a.name for a in entry.arguments] == ["num_classes", "input_shape", "hidden"]
    assert entry.schema._target_ == f"{__name__}.TinyNet"
    assert getattr(sys.modules[entry.schema.__module__], entry.schema.__name__) is entry.schema
    assert entry.schema.__doc__ == "A two-layer test backbone."
    net = build_backbone("tiny-net", num_classes=3, input_shape=(2, 2), hidden=7)
    assert isinstance(net, TinyNet) and net.num_features == 7
    with torch.no_grad():
        assert net(torch.randn(4, 2, 2)).shape == (4, 3)


def test_register_function(temporary) -> None:
    assert temporary("tiny-factory", tiny_net_factory) is tiny_net_factory
    entry = get_backbone_entry("tiny-factory")
    assert entry.target_path == f"{__name__}.tiny_net_factory"
    assert entry.argument("scale").default == 1.0 and entry.argument("scale").hint is float
    net = build_backbone("tiny-factory", num_classes=3, input_shape=(6,), scale=2)
    assert net.num_features == 8


def test_names_are_case_insensitive_and_underscore_is_dash(temporary) -> None:
    temporary("Tiny_Net", TinyNet)
    assert "tiny-net" in list_backbones() and "Tiny_Net" not in list_backbones()
    for spelling in ("tiny-net", "TINY_NET", "tiny_net", " Tiny-Net "):
        assert get_backbone_entry(spelling).target is TinyNet
    assert isinstance(build_backbone("tiny_NET", num_classes=2, input_shape=(3,)), TinyNet)


def test_duplicate_name_names_both_definitions(temporary) -> None:
    temporary("dup-net", TinyNet)
    with pytest.raises(BackboneError) as info:
        register_backbone("DUP_NET")(tiny_net_factory)
    message = str(info.value)
    assert "'dup-net'" in message
    assert f"{__name__}.TinyNet" in message and f"{__name__}.tiny_net_factory" in message
    assert get_backbone_entry("dup-net").target is TinyNet  # the first registration stays


def test_duplicate_of_a_builtin_is_refused() -> None:
    with pytest.raises(BackboneError) as info:
        register_backbone("ResNet18")(tiny_net_factory)
    assert "mammoth.backbones.resnet.resnet18" in str(info.value)
    assert get_backbone_entry("resnet18").target_path == "mammoth.backbones.resnet.resnet18"


@pytest.mark.parametrize("name", ["", "bad name", "-lead", "ok!", "a.b"])
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(BackboneError, match="invalid backbone name"):
        register_backbone(name)


def test_non_callable_is_refused() -> None:
    with pytest.raises(BackboneError, match="not a class or function"):
        register_backbone("not-callable")(42)
    assert "not-callable" not in list_backbones()


def test_a_restored_registry_forgets_the_name_and_its_option() -> None:
    with restored(BACKBONES):
        register_backbone("gone-net")(TinyNet)
        assert "gone-net" in option_names("backbone")
    assert "gone-net" not in list_backbones() and "gone-net" not in option_names("backbone")
    with pytest.raises(BackboneError, match="unknown backbone 'gone-net'"):
        get_backbone_entry("gone-net")
    with restored(BACKBONES):
        register_backbone("gone-net")(tiny_net_factory)  # the name is free again
        assert get_backbone_entry("gone-net").target is tiny_net_factory


def test_name_starting_with_a_digit_is_refused() -> None:
    with pytest.raises(BackboneError, match="invalid backbone name '3layer-net'.*starting with a letter"):
        register_backbone("3layer-net")


def test_names_with_the_same_class_name_are_refused_not_replaced(temporary) -> None:
    temporary("tiny-1", TinyNet)
    first = get_backbone_entry("tiny-1").schema
    with pytest.raises(BackboneError, match="cannot register backbone 'tiny1'.*already taken"):
        temporary("tiny1", other_factory)
    assert "tiny1" not in list_backbones()
    assert pickle.loads(pickle.dumps(first)) is first


# ---- listing and lookup ----


def test_list_backbones_sorted_with_builtins() -> None:
    names = list_backbones()
    assert names == sorted(names)
    assert set(BUILT_INS) <= set(names)


def test_every_backbone_is_an_option_with_its_schema() -> None:
    assert option_names("backbone") == list_backbones()
    for name in list_backbones():
        node, schema = served_node(name), get_backbone_entry(name).schema
        assert node._target_ == get_backbone_entry(name).target_path
        assert OmegaConf.get_type(node).__name__ == schema.__name__
        assert OmegaConf.to_yaml(node) == OmegaConf.to_yaml(OmegaConf.structured(schema))


def test_served_node_has_required_data_fields() -> None:
    node = served_node("resnet18")
    assert OmegaConf.is_missing(node, "num_classes") and OmegaConf.is_missing(node, "input_shape")
    assert node.width == 64 and node.stem == "auto"


def test_unknown_name_lists_names_and_closest() -> None:
    with pytest.raises(BackboneError) as info:
        get_backbone_entry("mnist-mlp")
    message = str(info.value)
    assert "'mnist-mlp'" in message and "did you mean 'mnistmlp'" in message
    assert all(name in message for name in BUILT_INS)


def test_find_by_target() -> None:
    assert BACKBONES.find_by_target("mammoth.backbones.resnet.ResNet").name == "resnet"
    assert BACKBONES.find_by_target("os.system") is None


# ---- a private registry ----


@pytest.fixture
def widgets():
    registry = Registry(kind="widget", group="test_widget", error_type=ConfigError, schema_suffix="WidgetConfig",
                        runtime_arguments=("net",))
    registry.register("wid-get")(widget)
    return registry


def test_private_registry_skips_runtime_arguments(widgets: Registry) -> None:
    entry = widgets.get("WID_GET")
    assert [a.name for a in entry.arguments] == ["size", "color"]
    assert entry.schema.__name__ == "WidGetWidgetConfig"
    assert "test_widget" not in ConfigStore.instance().repo  # a registry changes nothing in Hydra


def test_private_registry_uses_its_error_type_and_kind(widgets: Registry) -> None:
    with pytest.raises(ConfigError, match="unknown widget 'gadget'"):
        widgets.get("gadget")
    with pytest.raises(ConfigError, match="duplicate widget name 'wid-get'"):
        widgets.register("wid_get")(widget)


def test_private_registry_check_values(widgets: Registry) -> None:
    entry = widgets.get("wid-get")
    assert widgets.check_values(entry, {"size": 3}) == {"size": 3, "color": "red"}
    with pytest.raises(ConfigError) as info:
        widgets.check_values(entry, {"size": 3, "shape": "round"})
    assert "'shape'" in str(info.value) and "size: int = ???" in str(info.value)
    with pytest.raises(ConfigError, match="missing value for test_widget.size"):
        widgets.check_values(entry, {})
    with pytest.raises(ConfigError, match="test_widget.size"):
        widgets.check_values(entry, {"size": "big"})


def test_private_registry_resolve(widgets: Registry) -> None:
    entry, values = widgets.resolve({"_target_": f"{__name__}.widget", "size": 2})
    assert entry.name == "wid-get" and values == {"size": 2}
    entry, values = widgets.resolve("wid-get")
    assert entry.target is widget and values == {}
    with pytest.raises(ConfigError, match="not a registered widget"):
        widgets.resolve({"_target_": f"{__name__}.tiny_net_factory"})


def test_private_registry_names_every_missing_value_at_once(widgets: Registry) -> None:
    entry = widgets.get("wid-get")
    with pytest.raises(ConfigError) as info:
        widgets.check_required(entry, {"color": "???"})
    assert str(info.value) == ("missing values for test_widget.size, test_widget.color (widget 'wid-get'); "
                               "set them with test_widget.size=... test_widget.color=...")
    widgets.check_required(entry, {"color": "???"}, skip=("size", "color"))  # skipped: the data fills them


def test_unknown_argument_names_the_closest(widgets: Registry) -> None:
    with pytest.raises(ConfigError) as info:
        widgets.check_values(widgets.get("wid-get"), {"size": 3, "colour": "blue"})
    assert str(info.value) == ("unknown argument 'colour' for test_widget 'wid-get' (test_widget.colour); "
                               "its arguments: size: int = ???, color: str = 'red' (did you mean 'color'?)")


# ---- closed schemas: unknown keys fail where Hydra composes ----


def test_stored_options_are_closed_typed_schemas(temporary) -> None:
    temporary("tiny-net", TinyNet)
    node = served_node("tiny-net")
    assert OmegaConf.is_struct(node) and OmegaConf.get_type(node) is get_backbone_entry("tiny-net").schema
    with pytest.raises(ConfigAttributeError, match="Key 'hiden' not in 'TinyNetBackboneConfig'"):
        node.hiden = 3


def test_a_registry_that_is_not_stored_keeps_the_config_store_as_it_was() -> None:
    registry = Registry(kind="thing", group="test_unstored", error_type=ConfigError, schema_suffix="ThingConfig",
                        stored=False)
    registry.register("wid-get")(widget)
    assert registry.names() == ["wid-get"] and registry.get("Wid_Get").target is widget
    assert "test_unstored" not in ConfigStore.instance().repo


# ---- built-ins found without a list ----

#: Modules dropped into a copy of the package: one per kind that registers, and a ``_`` module
#: that would fail if it were imported.
DROPPED_IN = {
    "models/dropped_method.py": """
        from mammoth.models.base import ContinualModel
        from mammoth.models.registry import register_model

        @register_model("dropped-method")
        class DroppedMethod(ContinualModel):
            pass
    """,
    "backbones/dropped_net.py": """
        from mammoth.backbones.mlp import MNISTMLP
        from mammoth.backbones.registry import register_backbone

        register_backbone("dropped-net")(MNISTMLP)
    """,
    "datasets/dropped_digits.py": """
        from mammoth.datasets import register_dataset
        from mammoth.datasets.digits import SequentialDigits

        @register_dataset("dropped-digits")
        class DroppedDigits(SequentialDigits):
            pass
    """,
    "models/_not_a_method.py": "raise RuntimeError('a module starting with _ is not imported')\n",
}


def test_a_module_dropped_into_a_package_is_registered_without_editing_a_list(tmp_path: Path) -> None:
    package = Path(__file__).resolve().parents[2] / "mammoth"
    shutil.copytree(package, tmp_path / "mammoth", ignore=shutil.ignore_patterns("__pycache__"))
    for relative, source in DROPPED_IN.items():
        (tmp_path / "mammoth" / relative).write_text(textwrap.dedent(source))
    code = ("import mammoth\n"
            "print(mammoth.__file__)\n"
            "print(mammoth.list_models(), mammoth.list_backbones(), mammoth.list_datasets(), sep='\\n')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    where, models, backbones, datasets = result.stdout.splitlines()
    assert where == str(tmp_path / "mammoth" / "__init__.py")
    assert "'dropped-method'" in models and "'sgd'" in models
    assert "'dropped-net'" in backbones and "'resnet18'" in backbones
    assert "'dropped-digits'" in datasets and "'seq-digits'" in datasets


def test_import_modules_imports_the_modules_not_starting_with_an_underscore(tmp_path: Path, monkeypatch) -> None:
    package = tmp_path / "dropin_package"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "first.py").write_text("LOADED = True\n")
    (package / "second.py").write_text("LOADED = True\n")
    (package / "_private.py").write_text("raise RuntimeError('imported')\n")
    (package / "notes.txt").write_text("not a module\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert import_modules("dropin_package", [str(package)]) == ["first", "second"]
        assert sys.modules["dropin_package.first"].LOADED and "dropin_package._private" not in sys.modules
    finally:
        for name in [name for name in sys.modules if name.split(".")[0] == "dropin_package"]:
            del sys.modules[name]
