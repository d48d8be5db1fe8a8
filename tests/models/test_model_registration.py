"""The five methods are registered with typed Hydra config schemas."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from mammoth.errors import ConfigError
from mammoth.models import MODELS, build_model, list_models
from mammoth.models.der import DER
from mammoth.models.derpp import DERPP
from mammoth.models.er import ER
from mammoth.models.joint import Joint
from mammoth.models.sgd import SGD

OPTIMISATION = {
    "lr": (float, 0.1), "optimizer": (str, "sgd"), "momentum": (float, 0.0), "weight_decay": (float, 0.0),
    "lr_milestones": (Optional[tuple[int, ...]], None), "sched_multistep_lr_gamma": (float, 0.1),
    "lr_scheduler": (str, "multisteplr"),
}
REPLAY = {"buffer_size": (Optional[int], None), "memory_per_class": (Optional[int], None), "minibatch_size": (Optional[int], None),
          "buffer_device": (str, "training"), "regularizer": (Optional[dict[str, Any]], None)}
EXPECTED_FIELDS = {
    "sgd": OPTIMISATION,
    "joint": OPTIMISATION,
    "er": {**REPLAY, **OPTIMISATION},
    "der": {**REPLAY, "alpha": (float, 0.3), **OPTIMISATION},
    "derpp": {**REPLAY, "alpha": (float, 0.1), "beta": (float, 0.5), **OPTIMISATION},
}


def test_the_five_methods_are_registered() -> None:
    assert {"sgd", "joint", "er", "der", "derpp"} <= set(list_models())
    targets = {name: MODELS.get(name).target for name in EXPECTED_FIELDS}
    assert targets == {"sgd": SGD, "joint": Joint, "er": ER, "der": DER, "derpp": DERPP}


@pytest.mark.parametrize("name", sorted(EXPECTED_FIELDS))
def test_schema_fields_have_the_right_types_and_defaults(name: str) -> None:
    fields = {field.name: (field.type, field.default) for field in dataclasses.fields(MODELS.get(name).schema)}
    assert fields.pop("_target_")[1] == MODELS.get(name).target_path
    assert fields == EXPECTED_FIELDS[name]


def test_one_of_buffer_size_and_memory_per_class_is_required(make_net, dataset) -> None:
    config = OmegaConf.structured(MODELS.get("er").schema)
    assert (config.buffer_size, config.memory_per_class) == (None, None)
    with pytest.raises(ConfigError) as neither:
        build_model("er", net=make_net(), dataset=dataset)
    assert str(neither.value) == ("missing value for model.buffer_size or model.memory_per_class (model 'er'); "
                                  "set one with model.buffer_size=... or model.memory_per_class=...")
    with pytest.raises(ConfigError) as both:
        build_model("er", net=make_net(), dataset=dataset, buffer_size=50, memory_per_class=5)
    assert str(both.value) == ("model.buffer_size=50 and model.memory_per_class=5 are both set (model 'er'); "
                               "allowed: one of them (set the other to null, e.g. model.buffer_size=null)")
    model = build_model("er", net=make_net(), dataset=dataset, memory_per_class=5)
    assert (model.buffer_size, model.memory_per_class, model.buffer.capacity) == (None, 5, 5)


def test_literal_choices_are_checked_at_build_time(make_net, dataset) -> None:
    with pytest.raises(ConfigError, match=r"model\.optimizer.*'sgd', 'adam'"):
        build_model("sgd", net=make_net(), dataset=dataset, optimizer="rmsprop")


def test_compose_and_build_from_hydra_overrides(make_net, dataset) -> None:
    with initialize_config_module(config_module="mammoth.conf", version_base=None):  # an app that opted in
        config = compose(overrides=["+model=derpp", "model.buffer_size=50", "model.beta=1.0"])
    model = build_model(config.model, net=make_net(), dataset=dataset)
    assert isinstance(model, DERPP)
    assert (model.buffer.capacity, model.alpha, model.beta, model.lr) == (50, 0.1, 1.0, 0.1)
