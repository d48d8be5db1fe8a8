"""The token interface (mammoth.backbones.tokens) on the built-in vit and on a timm ViT: the pieces
give the plain forward's features, and a prefix equals attending to extra tokens."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mammoth import build_backbone
from mammoth.backbones.tokens import require_tokens, token_features
from mammoth.errors import BackboneError

SHAPE = (3, 32, 32)


def builtin_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_backbone("vit", num_classes=4, input_shape=SHAPE, width=32, depth=2, heads=4).eval()


def timm_vit() -> torch.nn.Module:
    pytest.importorskip("timm")
    import mammoth.backbones.timm  # noqa: F401  registers backbone=timm

    torch.manual_seed(0)
    return build_backbone("timm", num_classes=4, input_shape=SHAPE, name="vit_tiny_patch16_224",
                          model_args={"depth": 2, "embed_dim": 32, "num_heads": 4, "patch_size": 4}).eval()


def prefix_of(net: torch.nn.Module, index: int, extra: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The keys and values block ``index`` projects from the tokens ``extra``."""
    if hasattr(net, "trunk"):
        block = net.trunk.blocks[index]
        _, k, v = block.attn.qkv(block.norm1(extra)).chunk(3, dim=-1)
        return k, v
    block = net.stages[1 + index]
    attention = block.self_attention
    _, k, v = F.linear(block.ln_1(extra), attention.in_proj_weight, attention.in_proj_bias).chunk(3, dim=-1)
    return k, v


@pytest.fixture(params=["vit", "timm"])
def net(request: pytest.FixtureRequest) -> torch.nn.Module:
    return builtin_vit() if request.param == "vit" else timm_vit()


def test_the_pieces_give_the_plain_features(net: torch.nn.Module) -> None:
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        assert net.supports_tokens and net.num_blocks == 2
        tokens = net.embed_tokens(x)
        assert tokens.shape == (3, 1 + 64, 32)  # the class token and 8x8 patches of 4x4 pixels
        assert torch.allclose(token_features(net, x), net(x, returnt="features"), atol=1e-5)


def test_a_prefix_equals_attending_to_extra_tokens(net: torch.nn.Module) -> None:
    """Block ``i`` run on ``[extra; tokens]`` gives, for the rows of ``tokens``, what ``run_block``
    gives with the keys and values ``extra`` projects as its prefix: the block's own computation
    is the reference."""
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        tokens = net.embed_tokens(x)
        extra = torch.randn(2, 5, 32)
        expected = net.run_block(1, torch.cat([extra, tokens], dim=1))[:, 5:]
        found = net.run_block(1, tokens, prefix_of(net, 1, extra))
        assert found.shape == tokens.shape
        assert torch.allclose(found, expected, atol=1e-5)
        assert not torch.allclose(found, net.run_block(1, tokens), atol=1e-3)  # the prefix changes the output


def test_prefix_and_index_errors(net: torch.nn.Module) -> None:
    tokens = net.embed_tokens(torch.randn(2, *SHAPE))
    with pytest.raises(BackboneError, match=r"block index 2 is out of range; allowed: 0..1"):
        net.run_block(2, tokens)
    with pytest.raises(BackboneError, match=r"prefix keys of shape \(2, 5, 16\); allowed: \(2, length, 32\)"):
        net.run_block(0, tokens, (torch.zeros(2, 5, 16), torch.zeros(2, 5, 32)))


def test_backbones_without_tokens_are_refused_in_one_line() -> None:
    resnet = build_backbone("resnet18", num_classes=4, input_shape=SHAPE)
    with pytest.raises(BackboneError, match=r"^l2p needs a Vision Transformer backbone with the token interface, and ResNet"):
        require_tokens(resnet, "l2p")
    assert require_tokens(builtin_vit(), "l2p").supports_tokens


def test_prompts_go_after_the_class_token_with_its_position(net: torch.nn.Module) -> None:
    from mammoth.backbones.tokens import insert_prompts

    position = net.trunk.pos_embed[0, 0] if hasattr(net, "trunk") else net.stages[0].position[0, 0]
    assert net.num_prefix_tokens == 1
    assert torch.equal(net.class_position(), position)
    tokens = net.embed_tokens(torch.rand(2, *SHAPE))
    prompts = torch.rand(2, 3, 32)
    inserted = insert_prompts(net, tokens, prompts)
    assert inserted.shape == (2, tokens.shape[1] + 3, 32)
    assert torch.equal(inserted[:, :1], tokens[:, :1]) and torch.equal(inserted[:, 4:], tokens[:, 1:])
    assert torch.allclose(inserted[:, 1:4], prompts + position)


def test_a_timm_vit_without_position_for_its_class_token_gives_zeros() -> None:
    pytest.importorskip("timm")
    import mammoth.backbones.timm  # noqa: F401  registers backbone=timm

    net = build_backbone("timm", num_classes=4, input_shape=SHAPE, name="vit_tiny_patch16_224",
                         model_args={"depth": 1, "embed_dim": 32, "num_heads": 4, "patch_size": 8, "no_embed_class": True})
    assert torch.equal(net.class_position(), torch.zeros(32))


def _timm(name: str, **model_args) -> torch.nn.Module:
    pytest.importorskip("timm")
    import mammoth.backbones.timm  # noqa: F401  registers backbone=timm

    torch.manual_seed(0)
    return build_backbone("timm", num_classes=4, input_shape=SHAPE, name=name,
                          model_args={"depth": 2, "patch_size": 8, **model_args}).eval()


def test_timm_vision_transformer_subclasses_serve_tokens_and_others_are_refused_naming_the_model() -> None:
    distilled = _timm("deit_tiny_distilled_patch16_224", embed_dim=32, num_heads=4)
    x = torch.rand(2, *SHAPE)
    assert distilled.supports_tokens and distilled.num_prefix_tokens == 2  # class and distillation tokens
    assert torch.allclose(token_features(distilled, x), distilled(x, returnt="features"), atol=1e-6)
    beit = _timm("beit_base_patch16_224", embed_dim=32, num_heads=4)  # relative-position blocks: no token interface
    assert not beit.supports_tokens
    with pytest.raises(BackboneError) as error:
        require_tokens(beit, "model=l2p")
    assert str(error.value).startswith(
        "model=l2p needs a Vision Transformer backbone with the token interface, and TimmBackbone "
        "'beit_base_patch16_224' has none; allowed: backbone=vit, or backbone=timm with a timm ViT")
