"""Backbone arguments that used to raise raw tracebacks, pretrained weights offline, and
backbones whose data-filled arguments carry no annotation."""

from __future__ import annotations

import urllib.error

import pytest
import torch
from torch import nn

from mammoth.backbones import BACKBONES, MammothBackbone, build_backbone, register_backbone
from mammoth.errors import BackboneError
from registries import restored

CIFAR = (3, 32, 32)
TINY_VIT = {"width": 8, "depth": 1, "heads": 2}


@pytest.mark.parametrize(("arguments", "message"), [
    ({"dropout": 1.5}, "invalid vit dropout 1.5; allowed: 0 <= dropout <= 1"),
    ({"dropout": -0.1}, "invalid vit dropout -0.1; allowed: 0 <= dropout <= 1"),
    ({"dropout": float("nan")}, "invalid vit dropout nan"),
    ({"heads": 0}, "invalid vit heads 0; allowed: a divisor of width=8"),
    ({"mlp_ratio": 0.0}, "invalid vit mlp_ratio 0.0; allowed: mlp_ratio > 0"),
    ({"width": 0, "heads": 1}, "invalid vit width 0 / depth 1; allowed: width >= 1, depth >= 0"),
])
def test_vit_arguments_out_of_range_are_one_line(arguments, message):
    with pytest.raises(BackboneError) as error:
        build_backbone("vit", num_classes=10, input_shape=CIFAR, **{**TINY_VIT, **arguments})
    assert message in str(error.value) and "\n" not in str(error.value)


def test_vit_dropout_bounds_are_allowed():
    for dropout in (0.0, 1.0):
        net = build_backbone("vit", num_classes=10, input_shape=CIFAR, **TINY_VIT, dropout=dropout)
        assert net.stages[0].dropout.p == dropout


RESNET18_FILE = "resnet18-f37072fd.pth"  # the file name of torchvision's IMAGENET1K_V1 (= DEFAULT) weights


def _offline(monkeypatch, tmp_path) -> None:
    import torch.hub

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)


def test_pretrained_weights_offline_name_the_weights_and_the_cache(tmp_path, monkeypatch):
    _offline(monkeypatch, tmp_path)
    with pytest.raises(BackboneError) as error:
        build_backbone("torchvision", num_classes=10, input_shape=CIFAR, arch="resnet18", weights="IMAGENET1K_V1")
    assert str(error.value) == (
        "torchvision weights 'IMAGENET1K_V1' for resnet18 could not be loaded (URLError: <urlopen error "
        "[Errno -3] Temporary failure in name resolution>); they need a network connection once, or "
        f"{RESNET18_FILE} from https://download.pytorch.org/models/{RESNET18_FILE} in {tmp_path / 'hub' / 'checkpoints'}"
    )


def _cache_weights(tmp_path, monkeypatch, name: str | None = None) -> tuple[dict, str]:
    """Random resnet18 weights in the hub cache under ``name`` (default: named with their own
    sha256 prefix, the URL of IMAGENET1K_V1 pointed at that name); returns them and the name."""
    import hashlib

    import torchvision

    _offline(monkeypatch, tmp_path)
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(7)
    saved = torchvision.models.resnet18().state_dict()
    staged = cache / "staged.pth"
    torch.save(saved, staged)
    if name is None:
        name = f"resnet18-{hashlib.sha256(staged.read_bytes()).hexdigest()[:10]}.pth"
        weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.value
        monkeypatch.setattr(weights, "url", f"https://download.pytorch.org/models/{name}")
    staged.rename(cache / name)
    return saved, name


def test_pretrained_weights_load_offline_from_the_cache(tmp_path, monkeypatch):
    saved, _ = _cache_weights(tmp_path, monkeypatch)
    net = build_backbone("torchvision", num_classes=10, input_shape=CIFAR, arch="resnet18", weights="DEFAULT")
    assert torch.equal(net.trunk.conv1.weight, saved["conv1.weight"])
    assert torch.equal(net.trunk.layer4[1].bn2.running_var, saved["layer4.1.bn2.running_var"])


def test_cached_weights_that_do_not_match_the_hash_in_their_name_are_refused(tmp_path, monkeypatch):
    import hashlib

    _cache_weights(tmp_path, monkeypatch, name=RESNET18_FILE)  # other weights under the real name
    path = tmp_path / "hub" / "checkpoints" / RESNET18_FILE
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(BackboneError) as error:
        build_backbone("torchvision", num_classes=10, input_shape=CIFAR, arch="resnet18", weights="DEFAULT")
    assert str(error.value) == (
        f"the cached torchvision weights {path} for resnet18 do not match the sha256 in their name (f37072fd; the "
        f"file's begins {digest[:8]}); refused: delete the file (it is downloaded again)"
    )


def test_a_tampered_cached_weights_file_runs_nothing(tmp_path, monkeypatch):
    import hashlib
    import os

    import torchvision

    class RunsCode:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'marker'}",)

    _offline(monkeypatch, tmp_path)
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    staged = cache / "staged.pth"
    torch.save({"conv1.weight": RunsCode()}, staged)
    name = f"resnet18-{hashlib.sha256(staged.read_bytes()).hexdigest()[:8]}.pth"  # passes the hash check
    staged.rename(cache / name)
    monkeypatch.setattr(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.value, "url",
                        f"https://download.pytorch.org/models/{name}")
    with pytest.raises(BackboneError) as error:
        build_backbone("torchvision", num_classes=10, input_shape=CIFAR, arch="resnet18", weights="DEFAULT")
    assert str(error.value) == (
        f"the cached torchvision weights {cache / name} for resnet18 hold objects that weights never hold; "
        "refused unread: delete the file (it is downloaded again)"
    )
    assert not (tmp_path / "marker").exists()


def test_unknown_weights_list_the_allowed_ones():
    with pytest.raises(BackboneError, match=r"unknown torchvision weights for resnet18 'IMAGENET'; allowed: DEFAULT, IMAGENET1K_V1"):
        build_backbone("torchvision", num_classes=10, input_shape=CIFAR, arch="resnet18", weights="IMAGENET")


def test_a_backbone_without_annotations_on_the_data_filled_arguments_builds():
    with restored(BACKBONES):
        @register_backbone("unannotated-net")
        class Unannotated(MammothBackbone):
            def __init__(self, num_classes, input_shape, hidden=4, label=None):
                super().__init__()
                channels, height, width = input_shape
                self.stages = nn.ModuleList([nn.Flatten(), nn.Linear(channels * height * width, hidden)])
                self.num_features, self.num_classes = hidden, num_classes
                self.classifier = nn.Linear(hidden, num_classes)
                self.label = label

        net = build_backbone("unannotated-net", num_classes=7, input_shape=(1, 2, 3))
        assert net(torch.zeros(5, 1, 2, 3)).shape == (5, 7) and net.label is None
        # Other unannotated arguments keep the rule: the type of the default, else str.
        with pytest.raises(BackboneError, match=r"backbone.hidden: invalid value 'four' for argument 'hidden': expected an integer"):
            build_backbone("unannotated-net", num_classes=7, input_shape=(1, 2, 3), hidden="four")
        with pytest.raises(BackboneError, match=r"backbone.label: invalid value 3 for argument 'label'"):
            build_backbone("unannotated-net", num_classes=7, input_shape=(1, 2, 3), label=3)
