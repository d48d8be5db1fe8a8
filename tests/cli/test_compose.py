"""The Hydra config as users compose it: defaults, overrides, typed errors, friendly CLI checks."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

import mammoth
from mammoth.cli import normalise_overrides
from mammoth.errors import ConfigError


def compose_config(*overrides: str):
    with initialize_config_module(config_module="mammoth.conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_default_config_selects_the_embedded_dataset_and_its_backbone():
    cfg = compose_config()
    assert cfg.dataset.name == "seq-digits"
    assert cfg.backbone._target_ == "mammoth.backbones.mlp.MNISTMLP"
    assert cfg.model._target_.endswith(".SGD")
    assert OmegaConf.is_missing(cfg.backbone, "num_classes")


def test_dataset_chooses_its_backbone_and_the_command_line_wins():
    assert compose_config("dataset=seq-cifar10").backbone._target_ == "mammoth.backbones.resnet.resnet18"
    cfg = compose_config("dataset=seq-cifar10", "backbone=vit", "backbone.depth=3")
    assert cfg.backbone._target_ == "mammoth.backbones.vit.VisionTransformer"
    assert cfg.backbone.depth == 3


def test_backbone_arguments_are_typed_fields():
    cfg = compose_config("backbone=resnet", "backbone.depth=34", "backbone.width=32")
    assert (cfg.backbone.depth, cfg.backbone.width, cfg.backbone.stem) == (34, 32, "cifar")
    with pytest.raises(ConfigCompositionException) as error:
        compose_config("backbone=resnet", "backbone.depth=abc")
    message = str(error.value.__cause__)
    assert "backbone.depth" in message and "Integer" in message


def test_only_the_selected_backbone_arguments_exist():
    with pytest.raises(ConfigCompositionException):
        compose_config("backbone=mnistmlp", "backbone.depth=18")


def test_run_settings_are_typed():
    with pytest.raises((ConfigCompositionException, ValidationError)):
        compose_config("seed=abc")
    assert compose_config("seed=3", "device=cpu").seed == 3


def test_composed_backbone_builds_with_data_values():
    cfg = compose_config("backbone=resnet", "backbone.depth=34", "backbone.width=8")
    net = mammoth.build_backbone(cfg.backbone, num_classes=10, input_shape=(3, 32, 32))
    assert net.depth == 34 and net.classifier.out_features == 10


def test_names_are_normalised_case_insensitively():
    assert normalise_overrides(["backbone=Reduced_ResNet18", "model=SGD"]) == ["backbone=reduced-resnet18", "model=sgd"]
    assert normalise_overrides(["backbone=resnet,VIT"]) == ["backbone=resnet,vit"]


def test_unknown_backbone_lists_the_names_and_the_closest():
    with pytest.raises(ConfigError) as error:
        normalise_overrides(["backbone=resnt"])
    first_line = str(error.value).splitlines()[0]
    assert "'resnt'" in first_line and "mnistmlp" in first_line and "did you mean 'resnet'" in first_line


def test_unknown_dataset_and_model_names():
    with pytest.raises(ConfigError, match="did you mean 'seq-cifar10'"):
        normalise_overrides(["dataset=seq-cifar1O"])
    with pytest.raises(ConfigError, match="unknown model 'dre'.*did you mean 'der'"):
        normalise_overrides(["model=dre"])


def test_argument_of_another_backbone_lists_the_selected_ones_arguments():
    with pytest.raises(ConfigError) as error:
        normalise_overrides(["backbone.depth=34"])  # the default dataset's backbone is mnistmlp
    message = str(error.value)
    assert "'depth'" in message and "'mnistmlp'" in message and "hidden_sizes" in message
    assert normalise_overrides(["backbone=resnet", "backbone.depth=34"]) == ["backbone=resnet", "backbone.depth=34"]
    with pytest.raises(ConfigError, match="'vit'"):
        normalise_overrides(["backbone=resnet,vit", "backbone.stem=cifar"])
    # the dataset's default backbone is the selected one when backbone= is absent
    assert normalise_overrides(["dataset=seq-cifar10", "backbone.stem=imagenet"])[1] == "backbone.stem=imagenet"


def test_unknown_model_argument_lists_the_model_arguments():
    with pytest.raises(ConfigError) as error:
        normalise_overrides(["model=er", "model.bufer_size=10"])
    assert "buffer_size" in str(error.value)
