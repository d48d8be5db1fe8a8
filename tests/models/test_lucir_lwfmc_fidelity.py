"""lucir and lwf_mc against the original Mammoth's code, step by step.

scripts/reference_lucir_lwfmc.py ran the original's models/lucir.py and models/lwf_mc.py on a
16-unit MLP of its own class and 3 tasks of 2 classes; these tests build the same network
(``backbone=mnistmlp``, the same weights), feed this implementation the same batches and compare
every step's loss, the imprinted and trained classifier, the memory and the logits after each task.

LUCIR runs on the MLP and on a ResNet-18 of width 2 (under a second of CPU each), whose
BatchNorm layers are in train mode in training, eval mode in the frozen copy and the herding, and
on batch statistics without running updates in the finetuning.

Tolerances: the two runs do the same float32 operations, mostly in the same order, but not all of
them (the cosine classifier's blocks, the herding's features and the losses' reductions go through
differently shaped matmuls). Measured on the MLP: the losses differ by up to 1.1e-7 relative, the
weights and logits by up to 2.4e-7 absolute; held to 1e-5 (margin for other CPUs' BLAS, which sums
in other orders). On the ResNet the first two tasks agree exactly (losses) and to 1e-8
(weights, logits), and so does the third task's first step; from its second step on the losses
differ by float32 roundings (1e-7 relative), which its 17 further steps of SGD with momentum at lr
0.1 grow to 8e-7 relative (losses) and 2.7e-6 absolute (weights, logits). Where the rounding
enters is not pinned down (running the backbone with gradients in the finetuning, as the original
does, changes nothing). Held to 1e-5 (losses) and 1e-4 (weights, logits): BatchNorm on a batch of
4 divides by small variances, which magnify any change in summation order (with two threads
instead of one the losses of 8x8 images moved by 1e-3, hence one thread and 16x16 images). The memory
(which examples herding picks) must be the same examples, in the same slots.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import Tensor

from mammoth.backbones.mlp import MNISTMLP
from mammoth.datasets.source import DataSource, InMemorySource
from mammoth.engine.context import build_context
from mammoth.models import build_model
from reference_tasks import PairTasks, reference_script

REPO = Path(__file__).resolve().parents[2]
REFERENCE_FILE = Path(__file__).resolve().parent / "data" / "lucir_lwfmc_reference.json"


@lru_cache(maxsize=1)
def script() -> ModuleType:
    """scripts/reference_lucir_lwfmc.py as a module (its top level needs only torch)."""
    return reference_script('reference_lucir_lwfmc')


@lru_cache(maxsize=1)
def reference() -> dict[str, Any]:
    """The original's numbers (written by the script)."""
    return json.loads(REFERENCE_FILE.read_text())


class Config:
    """The dataset config fields the methods read."""

    batch_size = 4
    n_epochs = 1


class TinyDataset(PairTasks):
    """The script's benchmark: 3 class-IL tasks of 2 classes, 1x6x6 images (3x16x16 with ``rgb``), no transforms."""

    name = "reference-tiny"
    n_classes = 6
    n_tasks = 3
    config = Config()

    def __init__(self, rgb: bool = False) -> None:
        self.input_shape = (3, 16, 16) if rgb else (1, 6, 6)

    def task_source(self, task: int) -> DataSource:
        """The task's images of :func:`task_images` in the script."""
        return InMemorySource(*script().task_images(task, self.input_shape))


def tiny_mlp() -> MNISTMLP:
    """``backbone=mnistmlp`` with the script's hidden size and weights."""
    net = MNISTMLP(num_classes=6, input_shape=(1, 6, 6), hidden_sizes=(script().HIDDEN, script().HIDDEN))
    script().set_mlp_weights(net)
    return net


def tiny_resnet() -> Any:
    """``backbone=resnet18`` of width 2 with the script's weights."""
    from mammoth.backbones import build_backbone

    net = build_backbone("resnet18", num_classes=6, input_shape=(3, 16, 16), width=script().RESNET_WIDTH)
    script().set_weights_by_position(net)
    return net


def tensor(values: Any) -> Tensor:
    """Nested lists of the reference file as a float tensor."""
    return torch.tensor(values, dtype=torch.float32)


def close(ours: Tensor, theirs: Any, atol: float = 1e-5) -> bool:
    """``ours`` within ``atol`` of the reference values ``theirs``."""
    return torch.allclose(ours.detach().float(), tensor(theirs), rtol=0, atol=atol)


# ---- lucir ----


#: Tolerances (losses relative, weights and logits absolute) per reference entry.
TOLERANCES = {"lucir": (1e-5, 1e-5), "lucir_resnet": (1e-5, 1e-4)}


@pytest.fixture(scope="module", params=["lucir", "lucir_resnet"])
def lucir_run(request) -> dict[str, Any]:
    """This implementation's LUCIR on the script's benchmark (the MLP, or the ResNet on RGB images),
    recorded as the script records the original; ``key`` names the reference's entry. One CPU
    thread: these networks are too small to share, and on a loaded machine two threads take 40x longer."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _lucir_run(request.param)
    finally:
        torch.set_num_threads(threads)


def _lucir_run(key: str) -> dict[str, Any]:
    settings = dict(reference()["lucir"]["settings"])
    rgb = key == "lucir_resnet"
    dataset = TinyDataset(rgb)
    model = build_model("lucir", net=tiny_resnet() if rgb else tiny_mlp(), dataset=dataset, **settings)
    with torch.no_grad():
        for block, values in zip(model.head.weights, script().head_weights()):
            block.copy_(values)
    context = build_context(dataset, "cpu", torch.Generator().manual_seed(script().GENERATOR_SEED))
    model.attach(context)
    losses: list[float] = []
    lucir_loss = model.lucir_loss
    model.lucir_loss = lambda *args, **kwargs: (lambda loss: losses.append(loss.item()) or loss)(lucir_loss(*args, **kwargs))
    run: dict[str, Any] = {"key": key, "losses": [], "imprinted": [], "blocks": [], "sigma": [], "memory_examples": [],
                           "memory_labels": [], "logits": []}
    for task in range(dataset.n_tasks):
        data = context.task_data(task)
        model.train()
        model.begin_task(task)
        run["imprinted"].append(model.head.weights[task].detach().clone())
        for batch in context.batches(model.training_data(task, data), shuffle=False):
            model.observe(batch.inputs, batch.labels, batch.not_aug_inputs)
        model.end_task(task, data)
        run["losses"].append(list(losses))
        losses.clear()
        run["blocks"].append(torch.cat([block.detach().clone() for block in model.head.weights]))
        run["sigma"].append(float(model.head.sigma.detach()))
        run["memory_examples"].append(model.buffer.examples.clone())
        run["memory_labels"].append(model.buffer.labels.tolist())
        model.eval()
        with torch.no_grad():
            run["logits"].append(model(script().probe_images(dataset.input_shape)))
    return run


def test_lucir_losses_match_the_original_step_by_step(lucir_run) -> None:
    theirs = reference()[lucir_run["key"]]["losses"]
    # per task: its training steps (12 examples, then 12 + 12 of the memory, in batches of 4), then
    # 4 finetuning epochs over the memory's 12 examples
    assert [len(task) for task in lucir_run["losses"]] == [len(task) for task in theirs] == [15, 18, 18]
    for ours, original in zip(lucir_run["losses"], theirs):
        assert ours == pytest.approx(original, rel=TOLERANCES[lucir_run["key"]][0])


def test_lucir_imprints_and_trains_the_same_classifier(lucir_run) -> None:
    original = reference()[lucir_run["key"]]
    atol = TOLERANCES[lucir_run["key"]][1]
    for task in range(3):
        assert close(lucir_run["imprinted"][task], original["imprinted"][task], atol), task
        assert close(lucir_run["blocks"][task], original["blocks"][task], atol), task
    assert lucir_run["sigma"] == pytest.approx(original["sigma"], abs=atol)
    assert original["sigma"][0] != 1.0  # sigma trains (and the finetuning moves it)


def test_lucir_memory_holds_the_originals_exemplars(lucir_run) -> None:
    original = reference()[lucir_run["key"]]
    assert lucir_run["memory_labels"] == original["memory_labels"]
    for ours, theirs in zip(lucir_run["memory_examples"], original["memory_examples"]):
        assert close(ours, theirs, atol=1e-7)  # the same images (stored to 8 digits; distinct ones differ by > 1e-3)


def test_lucir_logits_match_after_every_task(lucir_run) -> None:
    for ours, theirs in zip(lucir_run["logits"], reference()[lucir_run["key"]]["logits"]):
        assert close(ours, theirs, TOLERANCES[lucir_run["key"]][1])


def test_lucir_margin_ranking_loss_is_the_originals() -> None:
    from mammoth.models.lucir import margin_ranking_loss

    labels, scores = script().margin_inputs()
    ours = margin_ranking_loss(labels, scores, 2, 0.5, 3)
    assert float(ours) == pytest.approx(reference()["lucir"]["margin_loss"], rel=1e-6)
    assert float(margin_ranking_loss(labels.clamp(min=3), scores, 2, 0.5, 3)) == 0.0  # no past-class example



# ---- lwf_mc ----


def test_lwf_mc_losses_and_logits_match_the_original_step_by_step() -> None:
    settings = reference()["lwf_mc"]["settings"]
    dataset = TinyDataset()
    model = build_model("lwf_mc", net=tiny_mlp(), dataset=dataset, **settings)
    context = build_context(dataset, "cpu", torch.Generator().manual_seed(0))
    model.attach(context)
    theirs = reference()["lwf_mc"]
    for task in range(dataset.n_tasks):
        data = context.task_data(task)
        model.train()
        model.begin_task(task)
        losses = [model.observe(batch.inputs, batch.labels, batch.not_aug_inputs)
                  for batch in context.batches(data, shuffle=False)]
        model.end_task(task, data)
        assert losses == pytest.approx(theirs["losses"][task], rel=1e-5), task
        model.eval()
        with torch.no_grad():
            assert close(model(script().probe_images()), theirs["logits"][task]), task
    assert model.old_net is not None  # distilled from the second task on

# ---- lucir's own behaviour ----


class UnevenDataset(TinyDataset):
    """3 tasks of 3, 2 and 1 classes (``base_classes`` 3, then uneven increments)."""

    def task_classes(self, task: int) -> range:
        return (range(0, 3), range(3, 5), range(5, 6))[task]


def test_lucir_head_has_a_block_per_task_of_its_size_and_trains_only_the_current_one() -> None:
    model = build_model("lucir", net=tiny_mlp(), dataset=UnevenDataset(), buffer_size=12, fitting_epochs=1)
    model.attach(build_context(UnevenDataset(), "cpu", torch.Generator().manual_seed(0)))
    assert [tuple(block.shape) for block in model.head.weights] == [(3, 16), (2, 16), (1, 16)]
    for task in range(3):
        model.begin_task(task)
        trained = {id(p) for group in model.optimizer.param_groups for p in group["params"]}
        assert [id(block) in trained for block in model.head.weights] == [i == task for i in range(3)]
        assert [block.requires_grad for block in model.head.weights] == [i == task for i in range(3)]
        assert id(model.head.sigma) in trained
        assert not {id(p) for p in model.net.classifier.parameters()} & trained  # the backbone's own head is unused
        for batch in model.context.batches(model.training_data(task, model.context.task_data(task)), shuffle=False):
            model.observe(batch.inputs, batch.labels, batch.not_aug_inputs)
        model.end_task(task, model.context.task_data(task))
    assert model(script().probe_images()).shape == (12, 6)
    assert sorted(set(model.buffer.labels.tolist())) == [0, 1, 2, 3, 4, 5] and len(model.buffer) == 12


def test_lucir_less_forget_weight_follows_the_originals_schedule() -> None:
    model = build_model("lucir", net=tiny_mlp(), dataset=TinyDataset(), buffer_size=12, lamda_base=4.0)
    assert [model.less_forget_weight(task) for task in range(4)] == [0.0, 0.0, 4.0, pytest.approx(4.0 * 2 ** 0.5)]
