"""Registry, config handling, Hydra config files and import laziness of mammoth.datasets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from composing import compose_mammoth
import mammoth.datasets as datasets
from mammoth.datasets import ContinualDataset, DatasetConfig, build_dataset, get_dataset_class, list_datasets
from mammoth.errors import DatasetError
from registries import restored

REPO = Path(__file__).resolve().parents[2]
ALL = [
    "image-folder",
    "perm-mnist",
    "rot-mnist",
    "seq-cifar10",
    "seq-cifar100",
    "seq-cifar100-224",
    "seq-cub200",
    "seq-digits",
    "seq-fashion-mnist",
    "seq-imagenet-r",
    "seq-mnist",
    "seq-tinyimg",
]
#: image-folder counts its class folders when built, so it needs a dataset.root (tests/datasets/test_streaming.py).
BUILT_WITHOUT_FILES = [name for name in ALL if name != "image-folder"]


def test_list_datasets_is_sorted_and_complete() -> None:
    assert list_datasets() == ALL


def test_unknown_name_lists_names_and_closest_match() -> None:
    with pytest.raises(DatasetError) as error:
        get_dataset_class("seq-cifar-10")
    first_line = str(error.value).splitlines()[0]
    assert "'seq-cifar-10'" in first_line
    assert all(name in first_line for name in ALL)
    assert "did you mean 'seq-cifar10'" in first_line


def test_build_dataset_without_name_lists_names() -> None:
    with pytest.raises(DatasetError, match="dataset.name is missing; allowed: image-folder, perm-mnist"):
        build_dataset({"root": "data"})


def test_duplicate_registration_names_both_classes() -> None:
    with pytest.raises(DatasetError) as error:

        @datasets.register_dataset
        class AnotherMNIST(get_dataset_class("seq-mnist")):
            name = "seq-mnist"

    message = str(error.value)
    assert "'seq-mnist'" in message and "SequentialMNIST" in message and "AnotherMNIST" in message
    assert get_dataset_class("seq-mnist").__name__ == "SequentialMNIST"


@pytest.fixture
def forgotten_afterwards():
    """What a test registers is forgotten when it ends."""
    with restored(datasets.DATASETS):
        yield


def test_register_new_name(forgotten_afterwards: None) -> None:
    @datasets.register_dataset
    class Tiny(get_dataset_class("seq-digits")):
        name = "tiny-test"

    assert "tiny-test" in list_datasets()
    assert isinstance(build_dataset({"name": "tiny-test"}), Tiny)


def test_register_by_name_normalises_it(forgotten_afterwards: None) -> None:
    @datasets.register_dataset("My_Digits")
    class MyDigits(get_dataset_class("seq-digits")):
        default_n_epochs = 2

    assert MyDigits.name == "my-digits" and get_dataset_class("MY-DIGITS") is MyDigits
    assert build_dataset({"name": "my-digits"}).config.n_epochs == 2


def test_register_rejects_bad_setting() -> None:
    with pytest.raises(DatasetError, match="setting='task-il'; allowed: class-il, domain-il"):

        @datasets.register_dataset
        class Bad(get_dataset_class("seq-digits")):
            name = "bad-setting"
            setting = "task-il"

    assert "bad-setting" not in list_datasets()


def test_config_defaults_from_mapping_dataclass_and_dictconfig() -> None:
    from_mapping = build_dataset({"name": "seq-mnist"})
    assert (from_mapping.config.batch_size, from_mapping.config.n_epochs, from_mapping.config.root) == (64, 1, "data")
    structured = OmegaConf.structured(DatasetConfig(name="seq-cifar10", root="/tmp/x"))  # batch_size is MISSING
    from_dictconfig = build_dataset(structured, seed=3)
    assert (from_dictconfig.config.batch_size, from_dictconfig.config.n_epochs) == (32, 50)
    assert from_dictconfig.config.root == "/tmp/x" and from_dictconfig.seed == 3
    from_dataclass = build_dataset(DatasetConfig(name="perm-mnist", batch_size=7, n_epochs=2, n_tasks=3))
    assert (from_dataclass.config.batch_size, from_dataclass.config.n_epochs, from_dataclass.n_tasks) == (7, 2, 3)


def test_building_reads_no_files(tmp_path: Path) -> None:
    dataset = build_dataset({"name": "seq-tinyimg", "root": str(tmp_path / "nowhere")})
    assert dataset.n_classes == 200 and not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"name": "seq-mnist", "batch_size": 0}, "dataset.batch_size=0 is not a positive integer; allowed: batch_size >= 1"),
        ({"name": "seq-mnist", "n_epochs": "x"}, "dataset.n_epochs: invalid value 'x' for argument 'n_epochs': expected an integer"),
        ({"name": "seq-mnist", "colour": True},
         "unknown argument 'colour' for dataset 'seq-mnist' (dataset.colour); its arguments: name: str = 'seq-mnist', root"),
        ({"_target_": "mammoth.datasets.mnist.SequentialMNIST", "colour": True}, "unknown argument 'colour' for dataset 'seq-mnist'"),
        ({"name": "perm-mnist", "n_tasks": 0}, "dataset.n_tasks=0 is not a positive integer"),
    ],
)
def test_bad_config_values(config: dict, expected: str) -> None:
    with pytest.raises(DatasetError) as error:
        build_dataset(config)
    assert expected in str(error.value).splitlines()[0]


def test_a_name_a_mapping_a_dataclass_and_a_composed_config_build_the_same_way() -> None:
    composed = compose_mammoth("dataset=perm-mnist", "dataset.n_tasks=3", "dataset.batch_size=16")
    built = [build_dataset("Perm_MNIST", seed=1), build_dataset({"name": "perm-mnist", "n_tasks": 3, "batch_size": 16}),
             build_dataset(DatasetConfig(name="perm-mnist", n_tasks=3, batch_size=16)), build_dataset(composed.dataset)]
    assert [type(dataset).__name__ for dataset in built] == ["PermutedMNIST"] * 4
    assert [(dataset.n_tasks, dataset.config.batch_size) for dataset in built] == [(20, 128), (3, 16), (3, 16), (3, 16)]
    assert built[0].seed == 1 and built[1].config == built[2].config == built[3].config


def test_name_mismatch_when_building_a_class_directly() -> None:
    with pytest.raises(DatasetError, match="dataset.name='seq-mnist' does not match the benchmark 'seq-cifar10'"):
        get_dataset_class("seq-cifar10")({"name": "seq-mnist"})


@pytest.mark.parametrize("name", BUILT_WITHOUT_FILES)
def test_each_dataset_is_a_typed_config_with_its_class_defaults(name: str) -> None:
    cls: type[ContinualDataset] = get_dataset_class(name)
    cfg = compose_mammoth(f"dataset={name}")
    assert cfg.dataset._target_ == f"{cls.__module__}.{cls.__qualname__}"
    assert (cfg.dataset.name, cfg.dataset.batch_size, cfg.dataset.n_epochs) == (name, cls.default_batch_size, cls.default_n_epochs)
    assert (cfg.dataset.root, cfg.dataset.download, cfg.dataset.n_tasks) == ("data", False, None)
    built = build_dataset(cfg.dataset, seed=2)
    assert type(built) is cls and built.n_tasks == cls.default_n_tasks and built.seed == 2


def test_dataset_fields_are_typed_and_instantiate_builds_the_benchmark() -> None:
    from hydra.errors import ConfigCompositionException
    from hydra.utils import instantiate

    with pytest.raises(ConfigCompositionException):
        compose_mammoth("dataset=seq-mnist", "dataset.batch_size=abc")
    cfg = compose_mammoth("dataset=perm-mnist", "dataset.n_tasks=3", "dataset.batch_size=16")
    dataset = instantiate(cfg.dataset)
    assert type(dataset).__name__ == "PermutedMNIST" and (dataset.n_tasks, dataset.config.batch_size) == (3, 16)


def test_a_config_naming_an_unregistered_target_is_refused() -> None:
    with pytest.raises(DatasetError, match="refusing to build _target_ 'os.system': it is not a registered dataset"):
        build_dataset({"_target_": "os.system", "name": "seq-mnist"})


def test_import_does_not_import_torchvision_sklearn_or_pil() -> None:
    code = (
        "import sys, mammoth.datasets; "
        "print(','.join(m for m in ('torchvision', 'sklearn', 'PIL') if m in sys.modules) or 'none')"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "none"
