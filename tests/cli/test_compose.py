"""The Hydra config as users compose it: defaults, overrides, typed errors, friendly CLI checks."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

import mammoth
from mammoth.__main__ import hydra_main
from mammoth.cli import normalise_choice, prepare_arguments
from mammoth.config_validation import validate_run_config
from mammoth.errors import ConfigError
from composing import compose_mammoth


def compose_config(*overrides: str):
    return compose_mammoth(*overrides)


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
    cfg = compose_config("backbone=mnistmlp", "backbone.depth=18")  # composes: the run refuses it
    with pytest.raises(mammoth.BackboneError, match=r"unknown argument 'depth' for backbone 'mnistmlp' \(backbone.depth\)"):
        validate_run_config(cfg)
    with pytest.raises(ConfigCompositionException):  # the fields it has stay typed
        compose_config("backbone=mnistmlp", "backbone.hidden_sizes=abc")


def test_run_settings_are_typed():
    with pytest.raises((ConfigCompositionException, ValidationError)):
        compose_config("seed=abc")
    assert compose_config("seed=3", "device=cpu").seed == 3


def test_composed_backbone_builds_with_data_values():
    cfg = compose_config("backbone=resnet", "backbone.depth=34", "backbone.width=8")
    net = mammoth.build_backbone(cfg.backbone, num_classes=10, input_shape=(3, 32, 32))
    assert net.depth == 34 and net.classifier.out_features == 10


def prepare(*args: str) -> list[str]:
    """``python -m mammoth ARGS``'s checks, in process."""
    return prepare_arguments(list(args), hydra_main).args


def test_names_are_normalised_against_hydras_options():
    assert prepare("backbone=Reduced_ResNet18", "model=SGD") == ["backbone=reduced-resnet18", "model=sgd"]
    assert prepare("-m", "backbone=resnet,VIT", "dataset=SEQ_CIFAR10") == ["-m", "backbone=resnet,vit", "dataset=seq-cifar10"]
    # separators are ignored when that names exactly one option
    assert prepare("backbone=ResNet_18", "hydra/launcher=BASIC") == ["backbone=resnet18", "hydra/launcher=basic"]
    assert normalise_choice("backbone", "res-net", ["resnet", "res_net"]) == "res_net"


def test_multirun_is_known_from_the_flag_or_the_config():
    assert prepare_arguments(["-m", "seed=1,2"], hydra_main).multirun
    assert prepare_arguments(["hydra.mode=MULTIRUN", "seed=1,2"], hydra_main).multirun
    assert not prepare_arguments(["seed=1"], hydra_main).multirun


def test_added_groups_keep_their_prefix(tmp_path):
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "foo-bar.yaml").write_text("# @package _global_\nseed: 7\n")
    assert prepare("--config-dir", str(tmp_path), "+extra=Foo_Bar")[-1] == "+extra=foo-bar"
    assert prepare("--config-dir", str(tmp_path), "++extra=FOO-BAR")[-1] == "++extra=foo-bar"


def test_ambiguous_loose_names_are_refused():
    with pytest.raises(ConfigError, match="unknown backbone 'resnet-18'"):
        normalise_choice("backbone", "resnet-18", ["resnet18", "res-net18"])


def test_unknown_backbone_lists_the_names_and_the_closest():
    with pytest.raises(ConfigError) as error:
        prepare("backbone=resnt")
    first_line = str(error.value).splitlines()[0]
    assert "'resnt'" in first_line and "mnistmlp" in first_line and "did you mean 'resnet'" in first_line


def test_unknown_dataset_and_model_names():
    with pytest.raises(ConfigError, match="did you mean 'seq-cifar10'"):
        prepare("dataset=seq-cifar1O")
    with pytest.raises(ConfigError, match="unknown model 'dre'.*did you mean 'der'"):
        prepare("-m", "model=sgd,dre")


def test_argument_of_another_backbone_lists_the_selected_ones_arguments():
    with pytest.raises(mammoth.BackboneError) as error:
        prepare("backbone.depth=34")  # the default dataset's backbone is mnistmlp
    message = str(error.value)
    assert "'depth'" in message and "'mnistmlp'" in message and "hidden_sizes" in message
    assert prepare("backbone=resnet", "backbone.depth=34") == ["backbone=resnet", "backbone.depth=34"]
    # the dataset's default backbone is the selected one when backbone= is absent
    assert prepare("dataset=seq-cifar10", "backbone.stem=imagenet")[1] == "backbone.stem=imagenet"


def test_a_sweep_defers_argument_checks_to_each_job():
    # sgd (the default model) has no buffer_size: only a job that runs sgd may fail on it
    assert prepare("-m", "model=er,der", "model.buffer_size=200")[-1] == "model.buffer_size=200"


def test_unknown_model_argument_lists_the_model_arguments():
    with pytest.raises(ConfigError) as error:
        prepare("model=er", "model.bufer_size=10")
    assert "buffer_size" in str(error.value) and "(model.bufer_size)" in str(error.value)


def test_unknown_top_level_setting_is_refused_with_the_closest():
    with pytest.raises(ConfigError, match="unknown setting 'seeed'.*did you mean 'seed'"):
        prepare("+seeed=3")


def test_callbacks_must_be_hydra_callback_classes():
    with pytest.raises(ConfigError, match=r"hydra.callbacks.evil: _target_ 'torch.load' is not a Hydra Callback class"):
        prepare("+hydra.callbacks.evil._target_=torch.load", "+hydra.callbacks.evil.f=/etc/passwd")
    with pytest.raises(ConfigError, match="is not a Hydra Callback class"):
        prepare("+hydra.callbacks.x._target_=no.such.Module")
    allowed = prepare("+hydra.callbacks.log._target_=hydra.experimental.callbacks.LogJobReturnCallback")
    assert allowed == ["+hydra.callbacks.log._target_=hydra.experimental.callbacks.LogJobReturnCallback"]


def test_logging_configs_name_only_logging_classes():
    with pytest.raises(ConfigError, match=r"hydra.job_logging.handlers.evil.class: 'os.system' is not a logging Handler"):
        prepare("+hydra.job_logging.handlers.evil.class=os.system")
    from omegaconf import OmegaConf

    from mammoth.config_validation import check_logging

    factory = OmegaConf.create({"hydra_logging": {"formatters": {"f": {"()": "builtins.eval"}}}})
    with pytest.raises(ConfigError, match=r"hydra.hydra_logging.formatters.f.\(\): 'builtins.eval' is not a logging"):
        check_logging(factory)
    allowed = OmegaConf.create({"job_logging": {"formatters": {"f": {"()": "logging.Formatter"}},
                                                "handlers": {"h": {"class": "logging.handlers.RotatingFileHandler"}}}})
    assert check_logging(allowed) is None
    assert prepare("hydra/job_logging=disabled") == ["hydra/job_logging=disabled"]
