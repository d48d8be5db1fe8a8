"""Weights reach a backbone only through mammoth's verified loader: ``backbone.model_args`` holds
architecture arguments only, every weight of the model comes from the file (or the partial load is
deliberate and recorded), the bytes hashed are the bytes loaded, a hub cache file is its blob, and
a bad name or file is one line. Tiny models (random init), files written in tmp dirs, no network."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("timm")

from safetensors.torch import save_file  # noqa: E402

from mammoth import build_backbone  # noqa: E402
from mammoth.backbones.timm import TimmBackbone, create_timm_model  # noqa: E402
from mammoth.errors import BackboneError  # noqa: E402

NAME = "vit_tiny_patch16_224"
SHAPE = (3, 16, 16)
TINY = {"depth": 2, "embed_dim": 16, "num_heads": 2, "patch_size": 8}
REPO = Path(__file__).resolve().parents[2]


def tiny_vit(**options) -> TimmBackbone:
    options.setdefault("name", NAME)
    options.setdefault("model_args", dict(TINY))
    return build_backbone("timm", num_classes=5, input_shape=SHAPE, **options)


def state_of(seed: int, **args) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = create_timm_model(NAME, SHAPE, {**TINY, **args})
    return {key: value.detach().clone().contiguous() for key, value in model.state_dict().items()}


def saved(path: Path, state: dict[str, torch.Tensor]) -> Path:
    save_file(state, str(path))
    return path


def first_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def trunk_equals(net: TimmBackbone, state: dict[str, torch.Tensor]) -> bool:
    loaded = net.trunk.state_dict()
    return sorted(loaded) == sorted(state) and all(torch.equal(loaded[key], value) for key, value in state.items())


# ---- 1. model_args: architecture arguments only ----

@pytest.mark.parametrize("key, value", [
    ("pretrained", True),
    ("pretrained_cfg", "bogus"),
    ("pretrained_cfg_overlay", {"url": "file:///tmp/zz.pth", "hf_hub_id": None}),
    ("pretrained_strict", False),
    ("checkpoint_path", "/nonexistent/w.pth"),
    ("cache_dir", "/tmp"),
    ("hf_hub_id", "timm/x"),
    ("weights_url", "http://example.invalid/w.pth"),
    ("state_file", "w.pth"),
])
def test_loading_keys_in_model_args_are_refused_in_one_line(key, value) -> None:
    with pytest.raises(BackboneError) as error:
        tiny_vit(model_args={**TINY, key: value})
    message = first_line(error)
    assert message.startswith(f"backbone.model_args.{key} loads weights or files, which model_args may not; "
                              "allowed: architecture arguments (")
    allowed = message.split("allowed: architecture arguments (")[1].split(")")[0].split(", ")
    assert {"depth", "drop_path_rate", "drop_rate", "embed_dim"} <= set(allowed)
    assert not any(name.startswith(("pretrained", "checkpoint", "cache")) or name in ("in_chans", "img_size") for name in allowed)
    assert message.endswith("weights come from backbone.pretrained=true or backbone.weights=PATH")


def test_the_reported_overlay_route_writes_nothing(tmp_path: Path) -> None:
    # {pretrained: true, pretrained_cfg_overlay: {url: file://...zz.pth}, cache_dir: DIR} copied zz.pth into DIR
    source = tmp_path / "zz.pth"
    torch.save({"x": torch.ones(1)}, source)
    target = tmp_path / "site-packages"
    target.mkdir()
    args = {"pretrained": True, "pretrained_cfg_overlay": {"url": f"file://{source}", "hf_hub_id": None},
            "cache_dir": str(target)}
    with pytest.raises(BackboneError, match=r"^backbone.model_args.pretrained loads weights or files"):
        tiny_vit(model_args={**TINY, **args})
    assert list(target.iterdir()) == []


@pytest.mark.parametrize("key, value, message", [
    ("in_chans", 7, "backbone.model_args.in_chans is set by mammoth (3 from the data); allowed: act_layer, "),
    ("img_size", 224, "backbone.model_args.img_size is set by mammoth ([16, 16] from the data); allowed: "),
    ("num_classes", 10, "backbone.model_args.num_classes is set by mammoth; allowed: "),
    ("drop_rate", 5, "backbone.model_args.drop_rate=5 is not a rate; allowed: a number from 0 to 1"),
    ("attn_drop_rate", "x", "backbone.model_args.attn_drop_rate='x' is not a rate; allowed: a number from 0 to 1"),
    ("dept", 3, "unknown argument 'dept' for timm model 'vit_tiny_patch16_224' (backbone.model_args.dept); allowed: "),
    ("features_only", True, "unknown argument 'features_only' for timm model 'vit_tiny_patch16_224'"),
    ("embed_dim", 7, "timm model 'vit_tiny_patch16_224' cannot be built with backbone.model_args={'depth': 2, "
                     "'embed_dim': 7, 'num_heads': 2, 'patch_size': 8} (AssertionError: dim should be divisible by num_heads)"),
])
def test_bad_model_args_are_one_line(key, value, message) -> None:
    with pytest.raises(BackboneError) as error:
        tiny_vit(model_args={**TINY, key: value})
    assert first_line(error).startswith(message)
    if key == "dept":
        assert first_line(error).endswith("(did you mean 'depth'?)")


def test_architecture_arguments_of_the_model_class_pass() -> None:
    net = tiny_vit(model_args={**TINY, "drop_path_rate": 0.1, "global_pool": "avg", "class_token": False})
    assert len(net.trunk.blocks) == 2 and net.trunk.global_pool == "avg" and net.trunk.cls_token is None
    resnet = build_backbone("timm", num_classes=3, input_shape=(3, 16, 16), name="test_resnet",
                            model_args={"drop_rate": 0.25, "stem_width": 8})
    assert resnet.trunk.drop_rate == 0.25 and resnet.trunk.conv1[0].out_channels == 8


def test_a_missing_checkpoint_path_is_reported_as_what_it_is(tmp_path: Path) -> None:
    # it was "Error: cannot write the run directory: ; allowed: a hydra.run.dir ..."
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "mammoth", "backbone=timm", f"hydra.run.dir={tmp_path / 'run'}",
               "backbone.model_args={depth: 1, embed_dim: 16, num_heads: 2, patch_size: 4, checkpoint_path: /nonexistent.pth}"]
    process = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert process.returncode == 1
    assert process.stderr.strip().splitlines()[-1].startswith(
        "Error: backbone.model_args.checkpoint_path loads weights or files, which model_args may not")
    assert "Traceback" not in process.stderr and "cannot write" not in process.stderr
    assert not (tmp_path / "run" / "results.json").exists()


# ---- 2. every weight from the file, or a deliberate, recorded partial load ----

def test_a_file_of_fewer_blocks_is_refused_naming_the_missing_keys(tmp_path: Path) -> None:
    path = saved(tmp_path / "depth1.safetensors", state_of(1, depth=1))
    with pytest.raises(BackboneError) as error:
        tiny_vit(weights=str(path))
    assert first_line(error) == (
        f"the weights file {path} does not fit timm model '{NAME}': 12 keys (blocks.1.norm1.weight, "
        "blocks.1.norm1.bias, blocks.1.attn.qkv.weight, ...) of the model missing from it, 0 keys in it unknown to "
        "the model; allowed: a file holding every weight of the model but its head, or backbone.weights_strict=false "
        "for a deliberate partial load"
    )


def test_a_file_of_more_blocks_or_foreign_tensors_is_refused(tmp_path: Path) -> None:
    deeper = saved(tmp_path / "depth3.safetensors", state_of(1, depth=3))
    with pytest.raises(BackboneError, match=r": 0 keys of the model missing from it, 12 keys \(blocks\.2\.[^)]*\) in it unknown"):
        tiny_vit(weights=str(deeper))
    foreign = saved(tmp_path / "foo.safetensors", {"foo.weight": torch.zeros(3)})
    with pytest.raises(BackboneError) as error:
        tiny_vit(weights=str(foreign))
    expected = len(state_of(1))
    assert f": {expected} keys (cls_token, pos_embed, patch_embed.proj.weight, ...) of the model missing from it, " \
           "1 key (foo.weight) in it unknown to the model;" in first_line(error)


def test_the_classifier_of_a_published_checkpoint_is_the_only_key_left_out(tmp_path: Path) -> None:
    torch.manual_seed(3)
    full = create_timm_model(NAME, SHAPE, {**TINY})  # the trunk's keys...
    state = {key: value.contiguous() for key, value in full.state_dict().items()}
    with_head = {**state, "head.weight": torch.randn(1000, 16), "head.bias": torch.randn(1000)}  # ...and an ImageNet head
    net = tiny_vit(weights=str(saved(tmp_path / "published.safetensors", with_head)))
    assert trunk_equals(net, state) and net.weights.strict and net.weights.missing == ()


def test_a_deliberate_partial_load_is_recorded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import mammoth
    from composing import compose_run

    args = {"depth": 2, "embed_dim": 16, "num_heads": 2, "patch_size": 4}
    torch.manual_seed(5)
    state = {key: value.contiguous() for key, value in create_timm_model(NAME, (1, 8, 8), {**args, "depth": 1}).state_dict().items()}
    weights = saved(tmp_path / "depth1.safetensors", state)
    overrides = ("backbone=timm", f"backbone.name={NAME}", f"backbone.weights={weights}", "dataset.n_epochs=1",
                 "threads=1", "backbone.model_args={depth:2,embed_dim:16,num_heads:2,patch_size:4}")
    with pytest.raises(BackboneError, match="backbone.weights_strict=false for a deliberate partial load"):
        mammoth.run(compose_run(tmp_path / "strict", *overrides))
    assert not (tmp_path / "strict" / "results.json").exists()
    with caplog.at_level("WARNING", logger="mammoth.backbones.timm"):
        mammoth.run(compose_run(tmp_path / "run", *overrides, "backbone.weights_strict=false"))
    assert f"backbone.weights_strict=false: {weights} loaded into timm model '{NAME}' without 12 keys (blocks.1.norm1.weight, " \
           "blocks.1.norm1.bias, blocks.1.attn.qkv.weight, ...) of the model and with 0 keys unused" in caplog.text
    record = json.loads((tmp_path / "run" / "results.json").read_text())["weights"]
    missing = [f"blocks.1.{name}" for name in ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias",
                                                "attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias",
                                                "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias")]
    assert record == {"file": str(weights), "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
                      "strict": False, "missing": missing, "unexpected": []}


# ---- 3. the bytes hashed are the bytes loaded ----

@pytest.fixture
def swapped_after_hashing(monkeypatch: pytest.MonkeyPatch):
    """``arm(path, other)``: the first sha256 over more than 1 KiB renames ``other`` over ``path``
    right after it is computed (a concurrent writer, deterministically between pin and load)."""
    real = hashlib.sha256
    plan: dict[str, Path] = {}

    def sha256(data: bytes = b"", **kwargs):
        digest = real(data, **kwargs)
        if plan and len(data) > 1024:
            os.replace(plan.pop("other"), plan.pop("path"))
        return digest

    monkeypatch.setattr(hashlib, "sha256", sha256)

    def arm(path: Path, other: Path) -> None:
        plan.update(path=path, other=other)
    return arm


def test_the_weights_loaded_are_the_bytes_pinned(tmp_path: Path, swapped_after_hashing) -> None:
    pinned, other = state_of(1), state_of(2)
    path = saved(tmp_path / "w.safetensors", pinned)
    pin = hashlib.sha256(path.read_bytes()).hexdigest()
    swapped_after_hashing(path, saved(tmp_path / "other.safetensors", other))
    net = tiny_vit(weights=str(path), weights_sha256=pin)
    assert trunk_equals(net, pinned) and net.weights_sha256 == pin
    assert trunk_equals(tiny_vit(weights=str(path)), other)  # the file did change


def test_torchvision_weights_load_from_the_bytes_hashed_with_weights_only(tmp_path: Path, monkeypatch,
                                                                          swapped_after_hashing) -> None:
    import torch.hub
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *args, **kwargs: pytest.fail("downloaded"))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(1)
    pinned = torchvision.models.mobilenet_v3_small().state_dict()
    torch.save(pinned, cache / "staged.pth")
    name = f"mobilenet_v3_small-{hashlib.sha256((cache / 'staged.pth').read_bytes()).hexdigest()[:8]}.pth"
    os.replace(cache / "staged.pth", cache / name)
    monkeypatch.setattr(torchvision.models.MobileNet_V3_Small_Weights.IMAGENET1K_V1.value, "url",
                        f"https://download.pytorch.org/models/{name}")
    torch.manual_seed(2)
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), tmp_path / "other.pth")
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: loads.append(kwargs.get("weights_only")) or real_load(*args, **kwargs))
    swapped_after_hashing(cache / name, tmp_path / "other.pth")
    net = build_backbone("torchvision", num_classes=10, input_shape=(3, 32, 32), arch="mobilenet_v3_small", weights="DEFAULT")
    assert torch.equal(net.trunk.features[0][0].weight, pinned["features.0.0.weight"])
    assert loads == [True]  # one load, of the verified bytes, weights only


# ---- 4. a hub cache file is its own blob ----

def hub_layout(cache: Path, payload: bytes, blob_name: str | None = None, target: Path | None = None) -> Path:
    repo_id = create_timm_model(NAME, SHAPE, dict(TINY)).pretrained_cfg["hf_hub_id"]
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True)
    revision = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    if target is None:
        target = repo / "blobs" / (blob_name or hashlib.sha256(payload).hexdigest())
        target.write_bytes(payload)
    (snapshot / "model.safetensors").symlink_to(target)
    return target


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hub"


def payload_of(state: dict[str, torch.Tensor], directory: Path) -> bytes:
    return saved(directory / "payload.safetensors", state).read_bytes()


def test_a_blob_named_in_upper_case_hex_is_refused(offline_hub: Path) -> None:
    good = payload_of(state_of(1), offline_hub.parent)
    evil = payload_of(state_of(2), offline_hub.parent)
    blob = hub_layout(offline_hub, evil, blob_name=hashlib.sha256(good).hexdigest().upper())
    with pytest.raises(BackboneError) as error:
        tiny_vit(pretrained=True)
    assert f"is stored as {blob.name!r}, not a blob name; allowed: the content's sha256 or git sha1 in lower-case hex; " \
           "refused: delete it (it is fetched again)" in first_line(error)


def test_a_snapshot_link_out_of_the_cache_is_refused(offline_hub: Path) -> None:
    outside = offline_hub.parent / "elsewhere.safetensors"
    outside.write_bytes(payload_of(state_of(2), offline_hub.parent))
    hub_layout(offline_hub, b"", target=outside)
    with pytest.raises(BackboneError) as error:
        tiny_vit(pretrained=True)
    assert f"resolves to {outside}, outside the cache's " in first_line(error)
    assert first_line(error).endswith("/blobs; refused: delete it (it is fetched again)")


def test_a_blob_named_by_its_git_sha1_is_checked_too(offline_hub: Path) -> None:
    state = state_of(1)
    payload = payload_of(state, offline_hub.parent)
    git_sha1 = hashlib.sha1(b"blob %d\0" % len(payload) + payload).hexdigest()
    blob = hub_layout(offline_hub, payload, blob_name=git_sha1)
    assert trunk_equals(tiny_vit(pretrained=True), state)
    blob.write_bytes(payload_of(state_of(2), offline_hub.parent))
    with pytest.raises(BackboneError, match=r"does not match the git sha1 in its name \(its content has [0-9a-f]{40}\)"):
        tiny_vit(pretrained=True)


# ---- 5. one line for a bad tag or a file that holds no weights ----

def test_an_unknown_pretrained_tag_lists_the_known_ones() -> None:
    with pytest.raises(BackboneError) as error:
        build_backbone("timm", num_classes=3, input_shape=SHAPE, name="test_resnet.bogus")
    assert first_line(error) == "unknown pretrained tag 'bogus' of timm model 'test_resnet'; allowed: r160_in1k"


@pytest.mark.parametrize("content", [b"hello weights\n" * 10, b"PK\x03\x04 truncated", b"\x80\x02 truncated", b""])
def test_a_file_that_holds_no_weights_is_one_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "weights.txt"
    path.write_bytes(content)
    with pytest.raises(BackboneError) as error:
        tiny_vit(weights=str(path))
    message = first_line(error)
    assert message.startswith(f"the weights file {path} for timm model '{NAME}' ")
    assert "neither a safetensors file nor a torch weights-only checkpoint" in message or "refused unread" in message
