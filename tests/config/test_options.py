"""The options mammoth serves to Hydra (mammoth/config/options.py) and the built-ins' manifest
(mammoth/config/builtins.json) they are composed from without torch."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import pickle
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mammoth.backbones import BACKBONES
from mammoth.config import manifest
from mammoth.config.options import (
    ManifestEntry,
    option_file_text,
    option_names,
    option_schema,
    served_registry,
)
from mammoth.config.registry import schema_node
from mammoth.datasets import DATASETS
from mammoth.models import MODELS
from mammoth.models.regularizers import REGULARIZERS



def manifest_script():
    """scripts/write_builtins_manifest.py as a module (it owns the registries' manifest)."""
    path = Path(__file__).resolve().parents[2] / "scripts" / "write_builtins_manifest.py"
    spec = importlib.util.spec_from_file_location("write_builtins_manifest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REGISTRIES = {"backbone": BACKBONES, "dataset": DATASETS, "model": MODELS, "model/regularizer": REGULARIZERS}


def test_the_manifest_matches_the_registries():
    text = resources.files("mammoth.config").joinpath(manifest.MANIFEST_FILE).read_text()
    written = json.loads(text)
    assert written == manifest_script().registries_manifest(), "regenerate it: python scripts/write_builtins_manifest.py"
    assert text == manifest.manifest_text(written)
    assert {group: sorted(options) for group, options in written.items()} == {
        group: sorted(registry.names()) for group, registry in REGISTRIES.items()}  # every built-in, nothing else


@pytest.mark.parametrize("group", manifest.GROUPS)
def test_each_manifest_schema_is_its_registry_schema(group: str):
    registry = REGISTRIES[group]
    assert set(manifest.load_manifest()[group]) <= set(registry.names())
    for name in manifest.load_manifest()[group]:
        real, written = registry.get(name).schema, manifest.manifest_schema(group, name)
        assert written.__name__ == real.__name__
        assert [(field.name, field.type) for field in dataclasses.fields(written)] == \
            [(field.name, field.type) for field in dataclasses.fields(real)]
        assert OmegaConf.to_yaml(OmegaConf.structured(written)) == OmegaConf.to_yaml(OmegaConf.structured(real))


def test_a_manifest_schema_pickles_by_reference():
    node = schema_node(manifest.manifest_schema("backbone", "resnet"))
    node.depth = 34
    copy = pickle.loads(pickle.dumps(node))
    assert copy.depth == 34 and OmegaConf.get_type(copy) is manifest.manifest_schema("backbone", "resnet")
    assert manifest.manifest_schema("backbone", "resnet").__module__ == "mammoth.config.manifest"


@pytest.mark.parametrize("group", manifest.GROUPS)
def test_the_served_registry_has_the_registry_entries_and_messages(group: str):
    registry, served = REGISTRIES[group], served_registry(group)
    assert served.names() == registry.names() == option_names(group)
    for name in registry.names():
        entry, light = registry.get(name), served.get(name)
        assert light.target_path == entry.target_path
        assert [(a.name, a.default) for a in light.arguments] == [(a.name, a.default) for a in entry.arguments]
        assert light.describe_arguments() == entry.describe_arguments()
    built_in = served.get(registry.names()[0])
    assert isinstance(built_in, ManifestEntry) and built_in.target is None  # nothing to build from


def test_an_option_file_names_its_schema():
    assert option_file_text("backbone", "resnet").splitlines()[1:] == [
        "defaults:", "  - /mammoth-option-backbone-resnet", "  - _self_"]
    assert option_schema("backbone", "resnet") is manifest.manifest_schema("backbone", "resnet")


#: Hydra's process-wide state: the ConfigStore's entries (groups and names) and OmegaConf's resolvers.
HYDRA_STATE = '''
def hydra_state():
    from hydra.core.config_store import ConfigStore
    from omegaconf.basecontainer import BaseContainer
    def names(node, prefix=""):
        if not isinstance(node, dict):
            return [prefix]
        return [name for key, child in node.items() for name in names(child, prefix + "/" + key)]
    return sorted(names(ConfigStore.instance().repo)), sorted(BaseContainer._resolvers)
'''


def test_importing_and_using_the_python_api_changes_nothing_in_hydra(tmp_path):
    code = HYDRA_STATE + '''
before = hydra_state()
import mammoth
from mammoth import build_backbone, build_dataset, list_backbones, list_datasets, list_models, register_backbone, run
import mammoth.backbones, mammoth.datasets, mammoth.models, mammoth.app.runner, mammoth.reporting.loggers
from mammoth.reporting.ledger import preset_texts
names = list_backbones() + list_datasets() + list_models()
presets = preset_texts()
net = build_backbone("resnet", num_classes=3, input_shape=(3, 8, 8), width=4)

@register_backbone("after-import-net")
def after_import_net(num_classes: int, input_shape: tuple[int, ...]):
    return build_backbone("mnistmlp", num_classes=num_classes, input_shape=input_shape)

after = hydra_state()
print(len(names), before == after, [name for name in after[0] if name not in before[0]])
'''
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    written = json.loads(resources.files("mammoth.config").joinpath(manifest.MANIFEST_FILE).read_text())
    built_ins = sum(len(written[group]) for group in ("backbone", "dataset", "model"))  # listed before after-import-net
    assert result.stdout.split() == [str(built_ins), "True", "[]"]


@pytest.mark.parametrize("group", manifest.GROUPS)
def test_each_served_option_checks_values_as_its_registry_does(group: str):
    """The pre-flight checks values against the manifest's arguments: the same names, hints
    (``Literal[18, 34, ...]``, not the schema field's ``int``) and defaults as the registry's."""
    registry, served = REGISTRIES[group], served_registry(group)
    for name in manifest.load_manifest()[group]:
        described = [(argument.name, manifest.encode_type(argument.hint), argument.default)
                     for argument in served.get(name).arguments]
        assert described == [(argument.name, manifest.encode_type(argument.hint), argument.default)
                             for argument in registry.get(name).arguments], name
    if group == "backbone":
        depth = next(argument for argument in served.get("resnet").arguments if argument.name == "depth")
        assert manifest.encode_type(depth.hint) == ["literal", 18, 34, 50, 101, 152]
