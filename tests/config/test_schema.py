"""mammoth.config.schema: signature -> Arguments -> dataclass schema, and build-time value checks."""

from __future__ import annotations

import dataclasses
import enum
import inspect
import math
import pickle
import sys
from typing import Any, Callable, Literal, Optional, Union

import pytest
from omegaconf import MISSING, OmegaConf, ValidationError

from mammoth.backbones.resnet import ResnetBackboneConfig
from mammoth.errors import ConfigError
from mammoth.config.registry import Registry
from mammoth.config.schema import (
    Argument,
    ValueCheckError,
    check_value,
    make_schema,
    schema_class_name,
    schema_hint,
    signature_arguments,
)


class Color(enum.Enum):
    RED = 1
    BLUE = 2


def sample(
    name,
    rate: float = 1,
    count=3,
    ratio=2.5,
    label="x",
    maybe=None,
    limit: int = None,
    flag=True,
    sizes=[1, 2],  # noqa: B006 - the schema must not share it
    shape=(3, 4),
    mode: Literal["fast", "slow"] = "fast",
    color: Color = Color.RED,
    hook: Callable = None,
    either: Union[int, str] = 1,
    activation=len,
    module=math,
    hooks=[len],  # noqa: B006
):
    """Doc of sample."""


SAMPLE_FIELDS = [
    "name", "rate", "count", "ratio", "label", "maybe", "limit", "flag", "sizes", "shape", "mode", "color", "hook",
    "either",
]


@pytest.fixture(scope="module")
def arguments() -> dict[str, Argument]:
    return {argument.name: argument for argument in signature_arguments(sample)}


@pytest.fixture(scope="module")
def schema() -> type:
    return make_schema(
        cls_name="SampleTestConfig",
        module=__name__,
        target_path=f"{__name__}.sample",
        arguments=signature_arguments(sample),
        doc=sample.__doc__,
    )


@pytest.fixture
def config(schema: type):
    return OmegaConf.structured(schema)


def field_types(schema: type) -> dict[str, Any]:
    return {field.name: field.type for field in dataclasses.fields(schema)}


# ---- inference rules ----


def test_fields_follow_the_signature_order(schema: type) -> None:
    assert [field.name for field in dataclasses.fields(schema)] == ["_target_", *SAMPLE_FIELDS]


def test_annotation_wins_over_default(arguments: dict, config) -> None:
    assert arguments["rate"].hint is float and arguments["rate"].default == 1
    config.rate = 2.5  # an int field would refuse this
    assert config.rate == 2.5


@pytest.mark.parametrize(("name", "hint"), [("count", int), ("ratio", float), ("label", str), ("flag", bool)])
def test_unannotated_default_gives_its_type(arguments: dict, name: str, hint: type) -> None:
    assert arguments[name].hint is hint


def test_unannotated_int_default_refuses_text(config) -> None:
    with pytest.raises(ValidationError, match="abc"):
        config.count = "abc"


def test_no_annotation_no_default_is_required_str(arguments: dict, schema: type) -> None:
    argument = arguments["name"]
    assert argument.hint is str and argument.required
    assert argument.describe() == "name: str = ???"
    assert not arguments["count"].required
    yaml = OmegaConf.to_yaml(OmegaConf.structured(schema))
    assert "name: ???" in yaml and "count: 3" in yaml
    assert [line for line in yaml.splitlines() if "???" in line] == ["name: ???"]


def test_none_default_is_optional(arguments: dict, config) -> None:
    assert arguments["maybe"].hint == Optional[str]
    assert arguments["limit"].hint == Optional[int]
    config.limit = 5
    config.limit = None
    config.maybe = None
    assert config.limit is None and config.maybe is None
    assert "limit: null" in OmegaConf.to_yaml(config)
    with pytest.raises(ValidationError):
        config.count = None  # a non-optional field refuses null


@pytest.mark.parametrize(("value", "expected"), [(True, True), (False, False), ("true", True), ("false", False)])
def test_bool_field_accepts_true_and_false(config, value: object, expected: bool) -> None:
    config.flag = value
    assert config.flag is expected


def test_bool_field_refuses_maybe(config) -> None:
    with pytest.raises(ValidationError, match="maybe"):
        config.flag = "maybe"


def test_list_default_is_a_list_field_not_shared(arguments: dict, schema: type) -> None:
    assert arguments["sizes"].hint == list[int]
    first, second = schema(), schema()
    assert first.sizes == [1, 2] and first.sizes is not second.sizes
    first.sizes.append(3)
    assert second.sizes == [1, 2] and sample.__defaults__[7] == [1, 2]
    config = OmegaConf.structured(schema)
    config.sizes.append(9)
    assert OmegaConf.structured(schema).sizes == [1, 2]
    with pytest.raises(ValidationError):
        config.sizes.append("nine")


def test_tuple_default_is_a_tuple_field_not_shared(arguments: dict, schema: type) -> None:
    assert arguments["shape"].hint == tuple[int, ...]
    assert arguments["shape"].describe() == "shape: tuple[int, ...] = (3, 4)"
    assert schema().shape == (3, 4)
    config = OmegaConf.structured(schema)
    config.shape = [5, 6, 7]  # any length: tuple[int, ...]
    assert OmegaConf.structured(schema).shape == [3, 4]
    with pytest.raises(ValidationError):
        config.shape = ["a"]


def test_literal_has_base_type_at_compose_and_set_at_build(arguments: dict, config) -> None:
    argument = arguments["mode"]
    assert schema_hint(argument.hint) is str
    config.mode = "medium"  # compose time: any str
    assert config.mode == "medium"
    assert check_value(argument, "slow") == "slow"
    with pytest.raises(ValueCheckError) as info:
        check_value(argument, "medium")
    assert "'medium'" in str(info.value) and "'fast', 'slow'" in str(info.value) and "'mode'" in str(info.value)


def test_int_literal_schema_type_and_bool_is_not_an_int() -> None:
    argument = Argument("depth", Literal[18, 34])
    assert schema_hint(argument.hint) is int
    assert schema_hint(Literal[1, "a"]) is Any
    assert check_value(argument, 34) == 34
    with pytest.raises(ValueCheckError, match="18, 34"):
        check_value(argument, 20)
    with pytest.raises(ValueCheckError):
        check_value(Argument("flag", Literal[1, 2]), True)  # True == 1 but is not an allowed value


def test_enum_field_refuses_non_member_listing_members(config) -> None:
    config.color = "BLUE"
    assert config.color is Color.BLUE
    with pytest.raises(ValidationError) as info:
        config.color = "GREEN"
    assert "GREEN" in str(info.value) and "RED" in str(info.value) and "BLUE" in str(info.value)


def test_enum_check_value(arguments: dict) -> None:
    argument = arguments["color"]
    assert check_value(argument, "BLUE") is Color.BLUE
    assert check_value(argument, 1) is Color.RED
    assert check_value(argument, Color.BLUE) is Color.BLUE
    with pytest.raises(ValueCheckError, match="RED, BLUE"):
        check_value(argument, "GREEN")


def test_callable_and_union_are_any_in_schema_checked_at_build(arguments: dict, schema: type, config) -> None:
    types = field_types(schema)
    assert types["hook"] is Any and types["either"] is Any
    config.either = [1.5]  # OmegaConf cannot check a Union: anything passes composition
    config.hook = "not callable"
    either, hook = arguments["either"], arguments["hook"]
    assert check_value(either, 1) == 1 and check_value(either, "a") == "a"
    with pytest.raises(ValueCheckError, match="Union\\[int, str\\]"):
        check_value(either, [1.5])
    assert check_value(hook, len) is len and check_value(hook, None) is None
    with pytest.raises(ValueCheckError, match="callable"):
        check_value(hook, "not callable")


def test_non_plain_defaults_are_left_out(arguments: dict, schema: type) -> None:
    for name in ("activation", "module", "hooks"):
        assert name not in arguments
        assert name not in field_types(schema)


def test_args_kwargs_and_skipped_names_are_left_out() -> None:
    def target(net, lr: float = 0.1, *args, **kwargs): ...

    assert [a.name for a in signature_arguments(target, skip=("net",))] == ["lr"]


# ---- the schema class ----


def test_schema_is_importable_from_its_module(schema: type) -> None:
    assert schema.__module__ == __name__
    assert getattr(sys.modules[schema.__module__], schema.__name__) is schema


def test_schema_class_and_config_pickle(schema: type) -> None:
    assert pickle.loads(pickle.dumps(schema)) is schema
    config = OmegaConf.structured(schema)
    config.count = 11
    restored = pickle.loads(pickle.dumps(config))
    assert OmegaConf.get_type(restored) is schema
    assert restored.count == 11 and OmegaConf.is_missing(restored, "name")
    with pytest.raises(ValidationError):
        restored.flag = "maybe"  # still typed after the round trip


def test_schema_keeps_docstring_and_target(schema: type) -> None:
    assert schema.__doc__ == "Doc of sample."
    assert OmegaConf.structured(schema)._target_ == f"{__name__}.sample"


def test_schema_default_docstring() -> None:
    made = make_schema(cls_name="NoDocTestConfig", module=__name__, target_path="a.b", arguments=[], doc=None)
    assert made.__doc__ == "Config of a.b."


def test_schema_refuses_to_replace_a_module_attribute() -> None:
    with pytest.raises(TypeError, match="already taken"):
        make_schema(cls_name="Color", module=__name__, target_path="a.b", arguments=[], doc=None)
    assert issubclass(Color, enum.Enum)


def test_schema_class_name() -> None:
    assert schema_class_name("reduced-resnet18", "BackboneConfig") == "ReducedResnet18BackboneConfig"
    assert schema_class_name("my_net", "ModelConfig") == "MyNetModelConfig"


class Outer:
    class Inner:
        """A nested target."""

        def __init__(self, size: int = 2) -> None:
            self.size = size


def test_registry_target_is_module_qualname() -> None:
    registry = Registry(kind="thing", group="test_thing", error_type=ConfigError, schema_suffix="ThingConfig")
    registry.register("inner")(Outer.Inner)
    schema = registry.get("inner").schema
    assert OmegaConf.structured(schema)._target_ == f"{__name__}.Outer.Inner"
    assert schema.__doc__ == "A nested target."
    assert getattr(sys.modules[__name__], "InnerThingConfig") is schema
    assert pickle.loads(pickle.dumps(OmegaConf.structured(schema))).size == 2


def test_one_unresolvable_annotation_keeps_the_others() -> None:
    # with `from __future__ import annotations` (as in this module) both hints are strings
    def target(num_classes: int, act: NotDefinedAnywhere = None): ...  # noqa: F821

    hints = {a.name: a.hint for a in signature_arguments(target)}
    assert hints["num_classes"] is int


# ---- check_value ----


def test_check_value_fixed_tuple_converts_and_counts() -> None:
    argument = Argument("input_shape", tuple[int, int, int])
    assert check_value(argument, [3, 32, 32]) == (3, 32, 32)
    assert isinstance(check_value(argument, [3, 32, 32]), tuple)
    with pytest.raises(ValueCheckError, match="expected 3 items"):
        check_value(argument, [32, 32])
    with pytest.raises(ValueCheckError, match="expected an integer"):
        check_value(argument, [3, 32, "32"])


@pytest.mark.parametrize(
    ("hint", "value", "message"),
    [
        (int, True, "integer"),
        (int, 1.5, "integer"),
        (bool, 1, "boolean"),
        (float, "1.0", "number"),
        (str, 3, "expected str"),
        (list[int], "abc", "expected list"),
        (dict, [1], "mapping"),
    ],
)
def test_check_value_refuses(hint: Any, value: object, message: str) -> None:
    with pytest.raises(ValueCheckError) as info:
        check_value(Argument("x", hint), value)
    assert message in str(info.value) and repr(value) in str(info.value) and "'x'" in str(info.value)


def test_check_value_converts_int_to_float_and_accepts_optional_none() -> None:
    converted = check_value(Argument("rate", float), 2)
    assert converted == 2.0 and isinstance(converted, float)
    assert check_value(Argument("limit", Optional[int]), None) is None
    with pytest.raises(ValueCheckError):
        check_value(Argument("limit", int), None)


class _Parent:
    def __init__(self, lr: float = 0.1, name: str = "p", **kwargs) -> None:
        self.lr = lr


class _Child(_Parent):
    def __init__(self, buffer_size: int, lr: float = 0.5, **kwargs) -> None:
        super().__init__(lr=lr, **kwargs)


class _Closed(_Parent):
    def __init__(self, size: int = 3) -> None:
        super().__init__()


def test_kwargs_inherit_the_parent_arguments_not_redefined() -> None:
    arguments = signature_arguments(_Child)
    assert [(a.name, a.hint, a.default) for a in arguments] == [
        ("buffer_size", int, MISSING),
        ("lr", float, 0.5),
        ("name", str, "p"),
    ]
    assert [a.name for a in signature_arguments(_Closed)] == ["size"]


# ---- the generated classes in a user's own dataclasses ----


def test_registered_schemas_are_importable_from_the_registering_module() -> None:
    from mammoth.backbones import get_backbone_entry
    from mammoth.backbones.resnet import ResNet
    from mammoth.datasets.digits import SeqDigitsDatasetConfig
    from mammoth.models.er import ErModelConfig
    from mammoth.models.xder import XderModelConfig

    assert get_backbone_entry("resnet").schema is ResnetBackboneConfig
    assert ResnetBackboneConfig.__doc__ == inspect.getdoc(ResNet)
    assert (ErModelConfig().buffer_size, ErModelConfig().memory_per_class) == (None, None)  # one of the two is required
    assert XderModelConfig().buffer_size == MISSING and SeqDigitsDatasetConfig().batch_size == 32


@dataclasses.dataclass
class WideResnet(ResnetBackboneConfig):
    """A user's preset that extends a registered schema."""

    width: int = 128
    dropout: float = 0.0


@dataclasses.dataclass
class AppConfig:
    """A user's app config that nests one."""

    backbone: ResnetBackboneConfig = dataclasses.field(default_factory=WideResnet)
    epochs: int = 1


def test_a_user_dataclass_nests_and_extends_a_schema() -> None:
    config = OmegaConf.structured(AppConfig)
    assert (config.backbone.depth, config.backbone.width, config.backbone.dropout) == (18, 128, 0.0)
    assert config.backbone._target_ == "mammoth.backbones.resnet.ResNet"
    # closed to unknown keys: tests/cli/test_closed_schemas.py
    with pytest.raises(ValidationError):
        config.backbone.depth = "deep"
