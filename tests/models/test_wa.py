"""model=wa: cross-entropy and distillation, weight aligning after each task, iCaRL's memory, held
to PyCIL's own numbers step by step (scripts/reference_pycil_methods.py)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from pycil_reference import ImageDataset, TinyNet, memory_rows, one_thread, reference, tensor, train_like_the_script

from composing import compose_mammoth
from mammoth.engine.context import build_context
from mammoth.errors import ConfigError
from mammoth.models import build_model
from mammoth.models.wa import align_weights, kd_loss


def make_wa(seed: int = 0, **values):
    """wa on the script's tiny network, benchmark, memory and schedule (PyCIL's constants as the script sets them)."""
    recorded = reference()["wa"]
    constants = recorded["constants"]
    dataset = ImageDataset()
    model = build_model("wa", net=TinyNet(), dataset=dataset, buffer_size=recorded["memory_size"],
                        init_milestones=constants["init_milestones"], lr_milestones=constants["milestones"], **values)
    model.attach(build_context(dataset, "cpu", torch.Generator().manual_seed(seed)))
    return model


def test_wa_matches_pycils_losses_logits_alignment_memory_and_predictions(one_thread) -> None:
    recorded = reference()["wa"]
    model = make_wa()
    step_logits = []
    model.net.register_forward_hook(lambda module, inputs, output: step_logits.append(output.detach()) if module.training else None)
    calls = 0
    for task, expected in enumerate(recorded["tasks"]):
        past, seen = 2 * task, 2 * task + 2
        model.begin_task(task)
        with torch.no_grad():  # PyCIL's fresh rows (its global-RNG draws) in place of ours
            model.net.classifier.weight[past:seen] = tensor(expected["initial_weight"])
        data = model.context.task_data(task)
        source = model.training_data(task, data)
        model.train()
        del step_logits[:]
        epochs = recorded["constants"]["init_epoch" if task == 0 else "epochs"]
        losses = train_like_the_script(model, source, epochs, calls, lambda x, y: model.observe(x, y, x))
        calls += epochs
        share = past / seen
        wanted = [(1 - share) * step["ce"] + share * step.get("kd", 0.0) for step in expected["steps"]]
        # float32 through 10 SGD steps in the same order: agreement to rounding (measured: < 2e-7)
        assert torch.allclose(torch.tensor(losses), torch.tensor(wanted), atol=1e-5)
        for ours, step in zip(step_logits, expected["steps"], strict=True):
            assert torch.allclose(ours[:, :seen], tensor(step["logits"]), atol=1e-5)
        model.end_task(task, data)
        weight = model.net.classifier.weight[:seen]
        if task > 0:  # PyCIL aligns twice (in _train and after_task): the second factor is 1 to rounding
            assert torch.allclose(weight, tensor(expected["aligned_weight"]), atol=1e-6)
            assert model.gammas[-1] == pytest.approx(
                (tensor(expected["aligned_weight"])[seen - 1].norm() / tensor(expected["weights_before_alignment"])[seen - 1].norm()).item(), rel=1e-5)
        assert torch.allclose(weight, tensor(expected["final_weight"]), atol=1e-6)
        assert torch.allclose(model.net.classifier.bias[:seen], tensor(expected["final_bias"]), atol=1e-6)
        assert memory_rows(model.buffer.examples, model.buffer.labels) == expected["memory"]
        model.eval()
        with torch.no_grad():
            probe = model(script_probe())
        assert torch.allclose(probe[:, :seen], tensor(expected["probe_logits"]), atol=1e-5)


def script_probe() -> torch.Tensor:
    from pycil_reference import script

    return script().probe_images()


# ---- the parts, on the fake 2-task MLP benchmark of conftest.py ----


def test_kd_loss_is_pycils_batch_mean_without_t_squared() -> None:
    logits, old = torch.tensor([[1.0, 2.0], [0.5, -1.0]]), torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    expected = -(torch.softmax(old / 2, 1) * torch.log_softmax(logits / 2, 1)).sum() / 2
    assert kd_loss(logits, old, 2.0).item() == pytest.approx(expected.item())
    assert kd_loss(old, old, 2.0).item() == pytest.approx(-(torch.softmax(old / 2, 1) * torch.log_softmax(old / 2, 1)).sum().item() / 2)


def test_align_weights_rescales_only_the_new_rows_to_the_old_mean_norm() -> None:
    weight = torch.tensor([[3.0, 4.0], [0.0, 1.0], [6.0, 8.0], [0.0, 4.0], [9.0, 9.0]])
    gamma = align_weights(weight, past=2, seen=4)
    assert gamma.item() == pytest.approx(3.0 / 7.0)  # old norms 5, 1; new 10, 4
    assert weight[:2].tolist() == [[3.0, 4.0], [0.0, 1.0]] and weight[4].tolist() == [9.0, 9.0]
    assert weight[2:4].norm(dim=1).mean().item() == pytest.approx(3.0)


def test_first_task_uses_the_init_schedule_and_later_tasks_the_other(make_model) -> None:
    model = make_model("wa")
    model.begin_task(0)
    group = model.optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"], group["momentum"]) == (0.1, 0.0005, 0.9)
    assert sorted(model.scheduler.milestones) == [60, 120, 170]
    model.begin_task(1)
    group = model.optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"]) == (0.1, 0.0002)
    assert sorted(model.scheduler.milestones) == [60, 100, 140]


def test_each_task_starts_its_rows_afresh_from_the_runs_generator(make_model) -> None:
    model = make_model("wa")
    before = model.net.classifier.weight.detach().clone()
    model.begin_task(1)
    weight, bias = model.net.classifier.weight.detach(), model.net.classifier.bias.detach()
    assert torch.equal(weight[:2], before[:2]) and not torch.equal(weight[2:], before[2:])
    assert weight[2:].abs().max() <= (3 / weight.shape[1]) ** 0.5 and bias[2:].tolist() == [0.0, 0.0]
    again = make_model("wa")
    again.begin_task(1)
    assert torch.equal(again.net.classifier.weight, model.net.classifier.weight)


def test_second_task_distils_aligns_and_keeps_herded_exemplars(make_model, run_task) -> None:
    model = make_model("wa", buffer_size=8)
    run_task(model, 0)
    assert model.gammas == [] and model.buffer.labels.tolist().count(0) == 4
    run_task(model, 1)
    norms = model.net.classifier.weight.detach().norm(dim=1)
    assert norms[2:].mean().item() == pytest.approx(norms[:2].mean().item(), rel=1e-5)
    assert len(model.gammas) == 1 and sorted(model.buffer.labels.tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_clip_weights_keeps_the_classifier_non_negative(make_model, make_batch) -> None:
    model = make_model("wa", clip_weights=True)
    model.begin_task(0)
    model.observe(*make_batch(0))
    assert (model.net.classifier.weight >= 0).all()


def test_refusals_name_the_value_and_what_is_allowed(make_net, dataset) -> None:
    with pytest.raises(ConfigError, match=r"^model\.T="):
        build_model("wa", net=make_net(), dataset=dataset, buffer_size=8, T=0.0)
    with pytest.raises(ConfigError, match=r"^model\.init_milestones=\[5, 2\]"):
        build_model("wa", net=make_net(), dataset=dataset, buffer_size=8, init_milestones=[5, 2])
    dataset.setting = "domain-il"
    with pytest.raises(ConfigError, match=r"^model=wa does not support domain-il"):
        build_model("wa", net=make_net(), dataset=dataset, buffer_size=8)


def test_preset_holds_pycils_settings() -> None:
    cfg = compose_mammoth("experiment=wa-seq-cifar100-2000")
    values = OmegaConf.to_container(cfg.model)
    assert cfg.model._target_ == "mammoth.models.wa.WA" and cfg.dataset.name == "seq-cifar100"
    assert {key: values[key] for key in ("buffer_size", "T", "init_lr", "init_weight_decay", "init_milestones", "lr",
                                          "momentum", "weight_decay", "lr_milestones")} == {
        "buffer_size": 2000, "T": 2.0, "init_lr": 0.1, "init_weight_decay": 0.0005, "init_milestones": [60, 120, 170],
        "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0002, "lr_milestones": [60, 100, 140]}
    assert (cfg.dataset.batch_size, cfg.dataset.n_epochs, cfg.dataset.n_tasks) == (128, 170, 10)
