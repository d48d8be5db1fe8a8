"""backbone=timm and its presets: tiny timm models (random init) built through the backbone
system, their weights saved as safetensors, as torch files and in the Hugging Face hub cache
layout, and loaded back offline."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("timm")

from composing import compose_mammoth  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from mammoth import build_backbone, list_backbones  # noqa: E402
from mammoth.backbones.timm import PRESETS, TimmBackbone, create_timm_model  # noqa: E402
from mammoth.errors import BackboneError  # noqa: E402

TINY = {"depth": 2, "embed_dim": 32, "num_heads": 2}
NAME = "vit_tiny_patch16_224"
SHAPE = (3, 32, 32)


def tiny_vit(**options) -> TimmBackbone:
    options.setdefault("name", NAME)
    options.setdefault("model_args", dict(TINY))
    return build_backbone("timm", num_classes=5, input_shape=SHAPE, **options)


def tiny_state() -> dict[str, torch.Tensor]:
    """The weights of another tiny ViT of the same architecture (different random values)."""
    torch.manual_seed(123)
    model = create_timm_model(NAME, SHAPE, dict(TINY))
    return {key: value.detach().clone().contiguous() for key, value in model.state_dict().items()}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_trunk_equals(net: TimmBackbone, state: dict[str, torch.Tensor]) -> None:
    loaded = net.trunk.state_dict()
    assert sorted(loaded) == sorted(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


def write_hub_cache(cache: Path, repo_id: str, payload: bytes, filename: str = "model.safetensors") -> Path:
    """The Hugging Face hub cache layout: refs/main -> a snapshot whose file links to blobs/<sha256>."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    digest = hashlib.sha256(payload).hexdigest()
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / digest).write_bytes(payload)
    revision = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (snapshot / filename).symlink_to(Path("..") / ".." / "blobs" / digest)
    return repo / "blobs" / digest


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_returnt_contract_on_a_timm_vit() -> None:
    net = tiny_vit().eval()
    x = torch.randn(3, *SHAPE)
    logits, features = net(x, returnt="both")
    assert logits.shape == (3, 5) and features.shape == (3, 32)
    assert net.num_features == 32 and net.num_classes == 5
    assert torch.allclose(net(x), logits) and torch.allclose(net(x, returnt="features"), features)
    assert torch.allclose(net.classifier(net.trunk(x)), logits)  # features = timm's pre-logits
    full = net(x, returnt="full")
    assert len(full) == TINY["depth"] + 2  # every block, then the features and the logits
    assert torch.allclose(full[-2], features, atol=1e-6) and torch.allclose(full[-1], logits, atol=1e-6)
    assert net.get_params().numel() == net.num_params() == sum(p.numel() for p in net.parameters())


def test_a_timm_resnet_takes_the_data_channels() -> None:
    net = build_backbone("timm", num_classes=4, input_shape=(1, 28, 28), name="resnet18").eval()
    x = torch.randn(2, 1, 28, 28)
    assert net(x).shape == (2, 4) and net.num_features == 512
    assert len(net(x, returnt="full")) == 7  # stem + 4 stages, features, logits


def test_safetensors_weights_load_and_record_their_sha256(tmp_path: Path) -> None:
    state = tiny_state()
    path = tmp_path / "tiny.safetensors"
    save_file(state, str(path))
    net = tiny_vit(weights=str(path))
    assert_trunk_equals(net, state)
    assert net.weights_sha256 == sha256(path)
    assert tiny_vit().weights_sha256 is None


def test_torch_weights_load_with_weights_only(tmp_path: Path) -> None:
    state = tiny_state()
    path = tmp_path / "tiny.pth"
    torch.save({"state_dict": state}, path)
    assert_trunk_equals(tiny_vit(weights=str(path)), state)


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {_RunsCode.marker}",))


def test_a_pickle_that_runs_code_is_refused_unread(tmp_path: Path) -> None:
    _RunsCode.marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": tiny_state(), "extra": _RunsCode()}, path)
    with pytest.raises(BackboneError, match=r"holds objects that weights never hold.*refused unread"):
        tiny_vit(weights=str(path))
    assert not _RunsCode.marker.exists()


def test_the_sha256_pin_refuses_another_file(tmp_path: Path) -> None:
    path = tmp_path / "tiny.safetensors"
    save_file(tiny_state(), str(path))
    digest = sha256(path)
    assert tiny_vit(weights=str(path), weights_sha256=digest.upper()).weights_sha256 == digest
    other = "f" * 64
    with pytest.raises(BackboneError) as error:
        tiny_vit(weights=str(path), weights_sha256=other)
    assert str(error.value).splitlines()[0].startswith(f"the weights file {path} for timm model '{NAME}' has sha256 {digest}, not the pinned {other}")
    with pytest.raises(BackboneError, match=r"backbone.weights_sha256='abc' is not a sha256; allowed: 64 hexadecimal digits"):
        tiny_vit(weights=str(path), weights_sha256="abc")
    with pytest.raises(BackboneError, match="backbone.weights_sha256 is set but no weights are loaded"):
        tiny_vit(weights_sha256=digest)


def test_pretrained_reads_the_hub_cache_offline(offline_hub: Path) -> None:
    state = tiny_state()
    payload = tiny_payload(state, offline_hub.parent)
    repo_id = create_timm_model(NAME, SHAPE, dict(TINY)).pretrained_cfg["hf_hub_id"]
    blob = write_hub_cache(offline_hub, repo_id, payload)
    net = tiny_vit(pretrained=True)
    assert_trunk_equals(net, state)
    assert net.weights_sha256 == blob.name
    blob.write_bytes(payload[:-1] + b" ")  # the cached file changed after it was fetched
    with pytest.raises(BackboneError, match=r"does not match the sha256 in its name .*refused: delete it"):
        tiny_vit(pretrained=True)


def tiny_payload(state: dict[str, torch.Tensor], directory: Path) -> bytes:
    path = directory / "payload.safetensors"
    save_file(state, str(path))
    return path.read_bytes()


def test_a_failed_download_names_the_hf_command_that_fetches_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def unreachable(repo_id: str, filename: str, local_files_only: bool = False, **_: object) -> str:
        if local_files_only:
            raise LocalEntryNotFoundError("not cached")
        raise ConnectionError("the hub cannot be reached")

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(BackboneError) as error:
        build_backbone("timm", name="vit-b16-in21k", pretrained=True, num_classes=10, input_shape=(3, 224, 224))
    message = str(error.value)
    assert "\n" not in message and "(ConnectionError: the hub cannot be reached)" in message
    assert message.endswith("fetch them with hf download timm/vit_base_patch16_224.augreg_in21k model.safetensors, "
                            "or pass backbone.weights=PATH")


def test_offline_with_nothing_cached_names_the_model_the_place_and_the_fix(offline_hub: Path) -> None:
    with pytest.raises(BackboneError) as error:
        build_backbone("timm", name="vit-b16-in21k", pretrained=True, num_classes=10, input_shape=(3, 224, 224))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("no cached weights for timm model 'vit_base_patch16_224.augreg_in21k'")
    assert f"timm/vit_base_patch16_224.augreg_in21k in {offline_hub}" in message
    assert "hf download timm/vit_base_patch16_224.augreg_in21k model.safetensors" in message


def test_presets_name_timm_models(tmp_path: Path) -> None:
    assert PRESETS["vit-b16-in21k"][0] == "vit_base_patch16_224.augreg_in21k"
    assert PRESETS["vit-b16-in21k-ft-in1k"][0] == "vit_base_patch16_224.augreg2_in21k_ft_in1k"
    net = build_backbone("timm", name="resnet50-in1k", num_classes=3, input_shape=(3, 32, 32))
    assert net.name == "resnet50.a1_in1k" and net.num_features == 2048 and net.weights_sha256 is None
    assert "resnet50-in1k" not in list_backbones()  # a value of backbone.name, not a backbone option


def test_freeze_all_but_head(tmp_path: Path) -> None:
    net = tiny_vit(freeze="all-but-head")
    trainable = [name for name, parameter in net.named_parameters() if parameter.requires_grad]
    assert trainable == ["classifier.weight", "classifier.bias"]
    net.train()
    assert net.training and net.classifier.training
    assert not net.trunk.blocks[0].training and not net.trunk.norm.training


def test_freeze_patterns(tmp_path: Path) -> None:
    net = tiny_vit(freeze=["patch_embed.*", "blocks.0.*"])
    frozen = {name for name, parameter in net.named_parameters() if not parameter.requires_grad}
    assert "trunk.patch_embed.proj.weight" in frozen and "trunk.blocks.0.attn.qkv.weight" in frozen
    assert not any(name.startswith("trunk.blocks.1.") for name in frozen)
    net.train()
    assert not net.trunk.blocks[0].training and net.trunk.blocks[1].training
    with pytest.raises(BackboneError, match=r"backbone.freeze pattern 'blockz.\*' matches no parameter"):
        tiny_vit(freeze=["blockz.*"])
    with pytest.raises(BackboneError, match=r"backbone.freeze='most' is not supported; allowed: none, all-but-head"):
        tiny_vit(freeze="most")


def test_unknown_model_and_conflicting_weights_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(BackboneError, match=r"unknown timm model 'vit_tiny_patch16_22'.*did you mean 'vit_tiny_patch16_224'"):
        build_backbone("timm", num_classes=5, input_shape=SHAPE, name="vit_tiny_patch16_22")
    with pytest.raises(BackboneError, match=r"backbone.weights='w.pt' and backbone.pretrained=true both choose weights"):
        tiny_vit(weights="w.pt", pretrained=True)
    with pytest.raises(BackboneError, match=r"backbone.weights='missing.safetensors' is not a file"):
        tiny_vit(weights="missing.safetensors")


def test_hydra_overrides_reach_the_timm_model() -> None:
    cfg = compose_mammoth(
        "dataset=seq-cifar10", "backbone=timm", f"backbone.name={NAME}", "backbone.freeze=[blocks.0.*]",
        "backbone.model_args={depth:2,embed_dim:32,num_heads:2}",
    )
    net = build_backbone(cfg.backbone, num_classes=10, input_shape=SHAPE)
    assert len(net.trunk.blocks) == 2 and net.num_features == 32
    assert net.frozen_parameters == [name for name, _ in net.trunk.named_parameters() if name.startswith("blocks.0.")]


def test_importing_the_backbone_does_not_import_timm() -> None:
    code = "import mammoth.backbones.timm, sys; print('timm' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_model_args_must_be_a_mapping() -> None:
    with pytest.raises(BackboneError, match=r"backbone.model_args=\[2\] is not a mapping; allowed: null or"):
        build_backbone("timm", num_classes=5, input_shape=SHAPE, name=NAME, model_args=[2])


def test_a_preset_pins_its_published_file(offline_hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = tiny_payload(tiny_state(), offline_hub.parent)
    repo_id = create_timm_model(NAME, SHAPE, dict(TINY)).pretrained_cfg["hf_hub_id"]
    write_hub_cache(offline_hub, repo_id, payload)
    published = hashlib.sha256(payload).hexdigest()
    monkeypatch.setitem(PRESETS, "tiny-preset", (NAME, published))
    assert tiny_vit(name="tiny-preset", pretrained=True).weights_sha256 == published
    monkeypatch.setitem(PRESETS, "tiny-preset", (NAME, "e" * 64))
    with pytest.raises(BackboneError, match=f"has sha256 {published}, not the pinned {'e' * 64}"):
        tiny_vit(name="tiny-preset", pretrained=True)


def test_frozen_parameters_stay_out_of_the_optimizer_and_do_not_change() -> None:
    from mammoth.engine.context import build_context
    from mammoth.models import build_model

    class Benchmark:  # what a method reads of a dataset
        n_classes, n_tasks, setting, input_shape = 5, 1, "class-il", SHAPE

        class config:
            batch_size, n_epochs = 4, 1

        def task_classes(self, task: int) -> range:
            return range(5)

        def train_transform(self, x, generator=None):
            return x

        def test_transform(self, x):
            return x

    net = tiny_vit(freeze="all-but-head", model_args={"depth": 2, "embed_dim": 32, "num_heads": 2, "drop_rate": 0.5})
    model = build_model("sgd", net=net, dataset=Benchmark(), lr=0.5)
    model.attach(build_context(Benchmark(), "cpu", torch.Generator().manual_seed(0)))
    model.begin_task(0)
    optimised = [parameter for group in model.optimizer.param_groups for parameter in group["params"]]
    assert optimised == [net.classifier.weight, net.classifier.bias]
    trunk, head = net.trunk.state_dict(), net.classifier.weight.detach().clone()
    x = torch.rand(4, *SHAPE)
    model.train()
    model.observe(x, torch.tensor([0, 1, 2, 3]), x)
    assert all(torch.equal(value, trunk[key]) for key, value in net.trunk.state_dict().items())
    assert not torch.equal(net.classifier.weight, head)
    assert not net.trunk.training  # its dropout is off while the head trains


def test_a_run_records_the_weights_file_and_its_sha256(tmp_path: Path) -> None:
    import json

    import mammoth
    from composing import compose_run

    args = {"depth": 1, "embed_dim": 16, "num_heads": 2, "patch_size": 4}
    torch.manual_seed(5)
    state = {key: value.contiguous() for key, value in create_timm_model(NAME, (1, 8, 8), dict(args)).state_dict().items()}
    weights = tmp_path / "vit.safetensors"
    save_file(state, str(weights))
    mammoth.run(compose_run(tmp_path / "run", "backbone=timm", f"backbone.name={NAME}", f"backbone.weights={weights}",
                            "backbone.model_args={depth:1,embed_dim:16,num_heads:2,patch_size:4}",
                            "dataset.n_epochs=1", "threads=1"))
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["weights"] == {"file": str(weights), "sha256": sha256(weights), "strict": True}
    unweighted = tmp_path / "plain"
    mammoth.run(compose_run(unweighted, "backbone=timm", f"backbone.name={NAME}", "dataset.n_epochs=1", "threads=1",
                            "backbone.model_args={depth:1,embed_dim:16,num_heads:2,patch_size:4}"))
    assert "weights" not in json.loads((unweighted / "results.json").read_text())
