"""l2p, dualprompt, coda-prompt as methods: what they refuse, what they train (never the backbone),
how they score, their task switches, and their checkpoints and resumes on the built-in vit."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from mammoth.backbones.mlp import MNISTMLP
from mammoth.backbones.vit import VisionTransformer
from mammoth.engine.checkpoint import load_checkpoint, save_checkpoint
from mammoth.engine.context import build_context
from mammoth.engine.loop import TrainingState
from mammoth.errors import BackboneError, ConfigError
from mammoth.models import build_model
from mammoth.models.coda_prompt import gram_schmidt

#: Small enough for 2 blocks: the prompt layers of the originals' defaults do not exist here.
SMALL = {
    "l2p": {},
    "dualprompt": {"g_prompt_layer_idx": [0], "e_prompt_layer_idx": [1]},
    "coda_prompt": {"pool_size": 10},
}


def tiny_vit(seed: int = 0) -> VisionTransformer:
    """The built-in vit on the fake dataset's 1x4x4 images: 2 blocks of width 24."""
    torch.manual_seed(seed)
    return VisionTransformer(num_classes=4, input_shape=(1, 4, 4), patch_size=2, width=24, depth=2, heads=3)


def make(name: str, dataset: Any, seed: int = 0, **values: Any) -> Any:
    """``name`` on the tiny vit, attached to a CPU context of the fake dataset."""
    model = build_model(name, net=tiny_vit(seed), dataset=dataset, **{**SMALL[name], **values})
    model.attach(build_context(dataset, "cpu", torch.Generator().manual_seed(seed)))
    return model


@pytest.mark.parametrize("name", sorted(SMALL))
def test_a_backbone_without_tokens_is_refused_in_one_line(name: str, dataset) -> None:
    net = MNISTMLP(num_classes=4, input_shape=(1, 4, 4), hidden_sizes=(16,))
    with pytest.raises(BackboneError) as error:
        build_model(name, net=net, dataset=dataset)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"model={name.replace('_', '-')} needs a Vision Transformer backbone with the token interface, and MNISTMLP")
    assert "allowed: backbone=vit, or backbone=timm" in message


@pytest.mark.parametrize(("name", "values", "expected"), [
    ("l2p", {"top_k": 11}, "model.top_k=11 is larger than the prompt pool; allowed: 1..10"),
    ("dualprompt", {"e_prompt_layer_idx": [2]}, ("model.e_prompt_layer_idx=[2] is not a list of distinct block indices; "
                                                "allowed: indices in 0..1")),
    ("coda_prompt", {"pool_size": 1}, ("model.pool_size=1 gives no prompt component to each of the 2 tasks; "
                                      "allowed: pool_size >= 2")),
    # 25 keys of width 24 cannot all be orthogonal: the original's Gram-Schmidt redraws forever
    ("coda_prompt", {"pool_size": 25}, ("model.pool_size=25 is more than the backbone's width 24: the pool's keys "
                                       "cannot all be orthogonal; allowed: pool_size <= 24")),
])
def test_bad_prompt_settings_are_refused_naming_the_value(name: str, values: dict, expected: str, dataset) -> None:
    with pytest.raises(ConfigError) as error:
        build_model(name, net=tiny_vit(), dataset=dataset, **{**SMALL[name], **values})
    assert str(error.value).startswith(expected)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_training_changes_prompts_and_head_never_the_backbone(name: str, dataset, run_task) -> None:
    model = make(name, dataset)
    backbone = {key: value.clone() for key, value in model.net.state_dict().items()}
    own = {key: value.clone() for key, value in model.state_dict().items() if not key.startswith("net.")}
    run_task(model, 0)
    assert all(torch.equal(value, backbone[key]) for key, value in model.net.state_dict().items())
    changed = {key for key, value in model.state_dict().items() if key in own and not torch.equal(value, own[key])}
    assert "head.weight" in changed and len(changed) >= 2  # the head and at least one prompt tensor
    trained = {id(p) for group in model.optimizer.param_groups for p in group["params"]}
    assert not trained & {id(p) for p in model.net.parameters()}
    assert not model.net.training  # the frozen backbone stays in eval mode while the method trains
    model.train()
    assert model.training and not model.net.training


@pytest.mark.parametrize("name", sorted(SMALL))
def test_scores_cover_the_classes_seen_so_far(name: str, dataset, run_task) -> None:
    model = make(name, dataset)
    run_task(model, 0)
    model.eval()
    with torch.no_grad():
        scores = model(torch.rand(5, 1, 4, 4))
    assert scores.shape == (5, 4)
    assert torch.isfinite(scores[:, :2]).all() and (scores[:, 2:] == float("-inf")).all()


def test_l2p_and_dualprompt_scale_lr_by_batch_size_and_coda_does_not(dataset) -> None:
    for name, expected in (("l2p", 0.03 * 8 / 256), ("dualprompt", 0.03 * 8 / 256), ("coda_prompt", 0.001)):
        model = make(name, dataset)
        model.begin_task(0)
        assert model.optimizer.param_groups[0]["lr"] == pytest.approx(expected)
        assert isinstance(model.optimizer, torch.optim.Adam)


def test_l2p_prompt_mask_trains_the_last_prompts_as_the_original(dataset) -> None:
    model = make("l2p", dataset, use_prompt_mask=True, top_k=3)
    for task in range(2):
        model.begin_task(task)
        model.train()
        with torch.no_grad():
            index = model.prompted(torch.rand(4, 1, 4, 4))["index"]
        assert torch.equal(index, torch.tensor([[7, 8, 9]] * 4))  # the original's arange(-top_k, 0)
    model.eval()
    with torch.no_grad():
        assert model.prompted(torch.rand(4, 1, 4, 4))["index"].shape == (4, 3)  # chosen by key at test


def test_l2p_inserts_prompts_after_the_class_token_with_its_position(dataset) -> None:
    model = make("l2p", dataset, top_k=1, length=1, head_type="token+prompt")
    x = torch.rand(2, 1, 4, 4)
    with torch.no_grad():
        out = model.prompted(x)
        prompt = model.prompt[out["index"][:, 0], 0] + model.net.class_position()
        tokens = model.net.embed_tokens(x)
        tokens = torch.cat([tokens[:, :1], prompt.unsqueeze(1), tokens[:, 1:]], dim=1)
        for block in range(2):
            tokens = model.net.run_block(block, tokens)
        expected = model.head(model.net.final_norm(tokens)[:, :2].mean(dim=1))
    assert torch.allclose(out["logits"], expected, atol=1e-6)


def test_dualprompt_copies_the_previous_task_prompts_at_a_new_task(dataset) -> None:
    model = make("dualprompt", dataset, top_k=2, size=4)
    before = model.e_prompt.detach().clone()
    model.begin_task(1)
    assert torch.equal(model.e_prompt[:, :, 2:4], before[:, :, 0:2])
    assert torch.equal(model.e_prompt[:, :, :2], before[:, :, :2])
    with torch.no_grad():
        model.train()
        assert torch.equal(model.prompted(torch.rand(3, 1, 4, 4), train=True)["index"], torch.tensor([[2, 3]] * 3))


def test_gram_schmidt_gives_orthonormal_new_rows_and_zeros_after_them() -> None:
    values = torch.rand(6, 2, 3)
    gram_schmidt(values, 0, 2, torch.Generator().manual_seed(0))
    rows = values.reshape(6, -1)
    assert torch.allclose(rows[:2] @ rows[:2].T, torch.eye(2), atol=1e-6)
    assert torch.equal(rows[2:], torch.zeros(4, 6))
    kept = rows[:2].clone()
    gram_schmidt(values, 2, 4, torch.Generator().manual_seed(1))
    assert torch.equal(rows[:2], kept)
    assert torch.allclose(rows[:4] @ rows[:4].T, torch.eye(4), atol=1e-6)
    assert torch.equal(rows[4:], torch.zeros(2, 6))


def test_coda_prompt_reinitialises_the_new_task_components_from_the_run_generator(dataset) -> None:
    first, second = make("coda_prompt", dataset, seed=0), make("coda_prompt", dataset, seed=0)
    second.context.generator.manual_seed(5)
    first.begin_task(1), second.begin_task(1)
    keys = first.e_k_0.detach()
    assert torch.allclose(keys[:10] @ keys[:10].T, torch.eye(10), atol=1e-5)
    assert not torch.equal(first.e_k_0[5:], second.e_k_0[5:]) and torch.equal(first.e_k_0[:5], second.e_k_0[:5])


@pytest.mark.parametrize("name", sorted(SMALL))
def test_a_trained_prompt_method_round_trips_through_a_checkpoint(tmp_path, name: str, dataset, run_task) -> None:
    model = make(name, dataset)
    for task in range(2):
        run_task(model, task)
    state = TrainingState(2, {"class_il": [[50.0], [25.0, 75.0]]}, [1.0, 1.0], [0.1, 0.1])
    save_checkpoint(tmp_path / "checkpoint.pt", model, torch.Generator().manual_seed(3), state, {"model": name})
    restored = make(name, dataset, seed=1)
    assert load_checkpoint(tmp_path / "checkpoint.pt", restored, torch.Generator(), {"model": name}) == state
    restored.current_task = model.current_task
    model.eval(), restored.eval()
    x = torch.rand(4, 1, 4, 4)
    with torch.no_grad():
        assert torch.equal(model(x), restored(x))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_the_harness_evaluates_through_the_method_prompt_selection(name: str, dataset, run_task) -> None:
    from mammoth.engine.evaluation import evaluate_tasks

    model = make(name, dataset)
    for task in range(2):
        run_task(model, task)
    sources = [model.context.task_data(task) for task in range(2)]
    # one batch per task (16 examples): dualprompt's batch-wise vote sees the same batch below
    accuracy = evaluate_tasks(model, model.context, sources, batch_size=16)
    model.eval()
    expected = []
    with torch.no_grad():
        for source in sources:
            inputs = model.context.test_transform(source.read(torch.arange(len(source)), "cpu"))
            expected.append(100.0 * float((model(inputs).argmax(1) == source.labels).float().mean()))
    assert accuracy["class_il"] == pytest.approx(expected)
