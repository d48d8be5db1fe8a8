"""The Hydra config as users compose it: defaults, overrides, typed errors, friendly CLI checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

import mammoth
from conftest import run_warm_python
from mammoth.__main__ import hydra_main
from mammoth.backbones import build_backbone, list_backbones
from mammoth.config.options import served_registry
from mammoth.app.preflight import normalise_choice, prepare_arguments
from mammoth.app.run_spec import resolve_run
from mammoth.errors import BackboneError, ConfigError
from composing import compose_mammoth


def test_default_config_selects_the_embedded_dataset_and_its_backbone():
    cfg = compose_mammoth()
    assert cfg.dataset.name == "seq-digits"
    assert cfg.backbone._target_ == "mammoth.backbones.mlp.MNISTMLP"
    assert cfg.model._target_.endswith(".SGD")
    assert OmegaConf.is_missing(cfg.backbone, "num_classes")


def test_dataset_chooses_its_backbone_and_the_command_line_wins():
    assert compose_mammoth("dataset=seq-cifar10").backbone._target_ == "mammoth.backbones.resnet.resnet18"
    cfg = compose_mammoth("dataset=seq-cifar10", "backbone=vit", "backbone.depth=3")
    assert cfg.backbone._target_ == "mammoth.backbones.vit.VisionTransformer"
    assert cfg.backbone.depth == 3


def test_backbone_arguments_are_typed_fields():
    cfg = compose_mammoth("backbone=resnet", "backbone.depth=34", "backbone.width=32")
    assert (cfg.backbone.depth, cfg.backbone.width, cfg.backbone.stem) == (34, 32, "auto")
    with pytest.raises(ConfigCompositionException) as error:
        compose_mammoth("backbone=resnet", "backbone.depth=abc")
    message = str(error.value.__cause__)
    assert "backbone.depth" in message and "Integer" in message


def test_only_the_selected_backbone_arguments_exist():
    with pytest.raises(ConfigCompositionException) as error:  # closed schema: Hydra refuses the key
        compose_mammoth("backbone=mnistmlp", "backbone.depth=18")
    cause = str(error.value.__cause__)
    assert "Key 'depth' not in 'MnistmlpBackboneConfig'" in cause and "full_key: backbone.depth" in cause
    with pytest.raises(ConfigCompositionException):  # the fields it has stay typed
        compose_mammoth("backbone=mnistmlp", "backbone.hidden_sizes=abc")


def test_added_keys_compose_and_the_run_refuses_them():
    cfg = compose_mammoth("model=sgd", "++model.buffer_size=200")  # ++ adds a key on purpose
    assert cfg.model.buffer_size == 200
    with pytest.raises(ConfigError, match=r"unknown argument 'buffer_size' for model 'sgd' \(model.buffer_size\)"):
        resolve_run(cfg)


def test_missing_required_values_are_named_at_once():
    cfg = compose_mammoth("model=ewc-on")
    with pytest.raises(ConfigError) as error:
        resolve_run(cfg)
    assert str(error.value) == ("missing values for model.e_lambda, model.gamma (model 'ewc-on'); "
                                "set them with model.e_lambda=... model.gamma=...")
    with pytest.raises(ConfigError, match=r"^missing value for model.buffer_size or model.memory_per_class \(model 'er'\); "
                                          r"set one with model.buffer_size=\.\.\. or model.memory_per_class=\.\.\.$"):
        resolve_run(compose_mammoth("model=er"))
    spec = resolve_run(compose_mammoth("model=ewc-on", "model.e_lambda=10", "model.gamma=1.0"))  # the data fills the backbone's
    assert (spec.model.name, spec.model.values["e_lambda"], spec.model.values["gamma"]) == ("ewc-on", 10, 1.0)


def test_run_settings_are_typed():
    with pytest.raises((ConfigCompositionException, ValidationError)):
        compose_mammoth("seed=abc")
    assert compose_mammoth("seed=3", "device=cpu").seed == 3


def test_composed_backbone_builds_with_data_values():
    cfg = compose_mammoth("backbone=resnet", "backbone.depth=34", "backbone.width=8")
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
    # Hydra has no ++ for a group: its own error, raised before the run (python -m mammoth: exit status 2)
    with pytest.raises(ConfigCompositionException, match="force-add of config groups is not supported: '\\+\\+extra=foo-bar'"):
        prepare("--config-dir", str(tmp_path), "++extra=FOO-BAR")


def test_ambiguous_loose_names_are_refused():
    with pytest.raises(ConfigError, match="unknown backbone 'resnet-18'"):
        normalise_choice("backbone", "resnet-18", ["resnet18", "res-net18"])


def _unknown_option_message(route: str, tmp_path: Path) -> str:
    """The first line of the error that ``route`` gives for a misspelt backbone option."""
    if route == "python -m mammoth":  # the process: exit status 2, one line, no traceback
        result = run_warm_python(["-m", "mammoth", "backbone=resnt"], tmp_path)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        return result.stderr.strip().splitlines()[0]
    (tmp_path / "backbone").mkdir()
    (tmp_path / "backbone" / "wide-resnet.yaml").write_text("defaults:\n  - resnet\n  - _self_\ndepth: 34\n")
    (tmp_path / "typo.yaml").write_text("defaults:\n  - config\n  - override backbone: resnt\n  - _self_\n")
    calls = {
        "served registry": lambda: served_registry("backbone").get("resnt"),
        "build_backbone": lambda: build_backbone("resnt18", num_classes=10, input_shape=(3, 32, 32)),
        "command line": lambda: prepare("backbone=resnt"),
        "a user's defaults list": lambda: prepare("--config-dir", str(tmp_path), "-cn", "typo"),
        "hydra.searchpath": lambda: prepare(f"hydra.searchpath=[file://{tmp_path}]", "backbone=wide-resnt"),
    }
    with pytest.raises(BackboneError if route in ("served registry", "build_backbone") else ConfigError) as error:
        calls[route]()
    return str(error.value).splitlines()[0]


@pytest.mark.parametrize("route, name, closest, extra", [
    ("served registry", "resnt", "resnet", []),  # the options Hydra composes, without torch
    ("build_backbone", "resnt18", "resnet18", []),  # the Python API
    ("command line", "resnt", "resnet", []),  # python -m mammoth's pre-flight, in process
    ("python -m mammoth", "resnt", "resnet", []),
    ("a user's defaults list", "resnt", "resnet", ["wide-resnet"]),  # --config-dir DIR -cn typo
    ("hydra.searchpath", "wide-resnt", "wide-resnet", ["wide-resnet"]),  # a user's option is listed too
])
def test_an_unknown_option_names_itself_every_allowed_name_and_the_closest(
        tmp_path: Path, route: str, name: str, closest: str, extra: list[str]):
    allowed = ", ".join(sorted([*list_backbones(), *extra]))
    prefix = "Error: " if route == "python -m mammoth" else ""
    assert _unknown_option_message(route, tmp_path) == (
        f"{prefix}unknown backbone '{name}'; allowed: {allowed} (did you mean '{closest}'?)")


def test_unknown_dataset_and_model_names():
    with pytest.raises(ConfigError, match="did you mean 'seq-cifar10'"):
        prepare("dataset=seq-cifar1O")
    with pytest.raises(ConfigError, match="unknown model 'deer'.*did you mean 'der'"):
        prepare("-m", "model=sgd,deer")


def test_argument_of_another_backbone_lists_the_selected_ones_arguments():
    with pytest.raises(ConfigError) as error:
        prepare("backbone.depth=34")  # the default dataset's backbone is mnistmlp
    assert str(error.value) == (
        "unknown argument 'depth' for backbone 'mnistmlp' (backbone.depth); its arguments: num_classes: int = ???, "
        "input_shape: tuple[int, ...] = ???, hidden_sizes: tuple[int, ...] = (100, 100)")
    assert prepare("backbone=resnet", "backbone.depth=34") == ["backbone=resnet", "backbone.depth=34"]
    # the dataset's default backbone is the selected one when backbone= is absent
    assert prepare("dataset=seq-cifar10", "backbone.stem=imagenet")[1] == "backbone.stem=imagenet"


@pytest.mark.parametrize("args, start, closest", [
    (["backbone=resnet", "backbone.deptth=34"], "unknown argument 'deptth' for backbone 'resnet' (backbone.deptth); its arguments: ", "depth"),
    (["model=er", "model.buffersize=200"], "unknown argument 'buffersize' for model 'er' (model.buffersize); its arguments: buffer_size: Optional[int] = None, memory_per_class: Optional[int] = None", "buffer_size"),
    (["-m", "model=er,der", "model.buffersize=200"], "unknown argument 'buffersize' for model 'er' (model.buffersize)", "buffer_size"),
    (["dataset.rooot=/data"], "unknown argument 'rooot' for dataset 'seq-digits' (dataset.rooot); its arguments: name: str = 'seq-digits'", "root"),
    (["seeed=3"], "seeed=3: unknown setting 'seeed'; allowed: backbone, dataset, model, seed, ", "seed"),
    (["modle=er"], "modle=er: unknown setting 'modle'; allowed: ", "model"),
    (["model=derpp", "model.buffer_size=50", "+model/regularizer=lider", "model.regularizer.alpha_lip_lambd=0.3"],
     "unknown argument 'alpha_lip_lambd' for model.regularizer 'lider' (model.regularizer.alpha_lip_lambd); its "
     "arguments: alpha_lip_lambda: float = 0.0", "alpha_lip_lambda"),
])
def test_typos_get_one_line_with_the_closest_name(args: list[str], start: str, closest: str):
    with pytest.raises(ConfigError) as error:
        prepare(*args)
    message = str(error.value)
    assert "\n" not in message and message.startswith(start) and f"(did you mean {closest!r}?)" in message


def test_a_sweep_passes_an_argument_every_swept_option_has_with_plus_plus():
    # Hydra composes the sweep's own config with the default model (sgd, no buffer_size): ++ adds it there
    args = ["-m", "backbone=resnet", "backbone.depth=18,34", "model=er,der", "model.buffer_size=200"]
    assert prepare(*args) == [*args[:-1], "++model.buffer_size=200"]
    assert prepare("-m", "model=er,der", "++model.buffer_size=200")[-1] == "++model.buffer_size=200"
    # swept values and arguments of the default option are passed as written
    assert prepare("-m", "model=sgd,er", "model.lr=0.1,0.01", "seed=0,1") == ["-m", "model=sgd,er", "model.lr=0.1,0.01", "seed=0,1"]
    # the dataset decides the backbone: every swept dataset's default backbone has stem
    assert prepare("-m", "dataset=seq-cifar10,seq-cifar100", "backbone.stem=imagenet")[-1] == "++backbone.stem=imagenet"


def test_a_sweep_over_methods_lacking_an_argument_is_refused_with_the_plus_plus_form():
    with pytest.raises(ConfigError) as error:
        prepare("-m", "model=sgd,er", "model.buffer_size=200", "seed=0,1,2")
    assert str(error.value) == (
        "model.buffer_size=200: model 'sgd' has no argument 'buffer_size' (er has); to sweep models whose "
        "arguments differ, use ++model.buffer_size=200 (the jobs of sgd then fail alone)")
    with pytest.raises(ConfigError, match=r"^model.alpha=0.3,0.5: model 'er', 'sgd' have no argument 'alpha' \(der has\); .* use \+\+model.alpha=0.3,0.5 "):
        prepare("-m", "model=er,der,sgd", "model.alpha=0.3,0.5")
    assert prepare("-m", "model=sgd,er", "++model.buffer_size=200")[-1] == "++model.buffer_size=200"




def test_a_regularizer_composes_under_model_regularizer_with_a_rehearsal_method_only():
    args = ["model=derpp", "model.buffer_size=50", "+model/regularizer=lider", "model.regularizer.alpha_lip_lambda=0.3"]
    assert prepare(*args) == args
    cfg = compose_mammoth(*args)
    assert OmegaConf.to_container(cfg.model.regularizer) == {
        "_target_": "mammoth.models.regularizers.lider.LiDER", "alpha_lip_lambda": 0.3, "beta_lip_lambda": 0.0,
        "headless_init_act": "relu", "grad_iter_step": -2}
    with pytest.raises(ConfigError) as error:
        prepare("model=sgd", "+model/regularizer=lider")
    assert str(error.value) == ("+model/regularizer=lider: model 'sgd' takes no regularizer (only rehearsal methods whose "
                                "every step goes through step() do); allowed: bic, der, derpp, er, er-ace, icarl, xder")
    with pytest.raises(ConfigError, match=r"^\+model/regularizer=lider: model 'gem' takes no regularizer"):
        prepare("model=gem", "model.buffer_size=50", "+model/regularizer=lider")
    with pytest.raises(ConfigError, match=r"^model\.regularizer\.alpha_lip_lambda=1: no regularizer is chosen; "
                                          r"allowed: \+model/regularizer=NAME before its arguments \(lider, star\)$"):
        prepare("model=derpp", "model.buffer_size=50", "model.regularizer.alpha_lip_lambda=1")
    with pytest.raises(ConfigError, match=r"^unknown model/regularizer 'lidr'; allowed: lider, star \(did you mean 'lider'\?\)$"):
        prepare("model=derpp", "model.buffer_size=50", "+model/regularizer=lidr")
    # a value of the wrong kind: the run's resolution names it, in one line (exit status 2 on the command line)
    with pytest.raises(ConfigError, match=r"^model\.regularizer\.headless_init_act: invalid value 'tanh' .*'relu', 'lrelu'$"):
        prepare(*args, "model.regularizer.headless_init_act=tanh")
