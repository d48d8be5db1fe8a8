"""Regularisers composed with rehearsal methods (``+model/regularizer=NAME``): LiDER held to the
original Mammoth's own ``derpp_lider`` step by step over 2 tasks (scripts/reference_twf_regularizers.py
wrote the reference), its hooks, its checks and its resume."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from composing import compose_mammoth
from mammoth.backbones.base import MammothBackbone
from mammoth.datasets.source import InMemorySource
from mammoth.engine.context import build_context
from mammoth.errors import ConfigError
from mammoth.models import build_model
from mammoth.models.buffer import FIELDS, ReplayBatch
from mammoth.models.gem import Gem
from mammoth.models.regularizers import REGULARIZERS, build_regularizer
from mammoth.models.regularizers import star as star_module
from mammoth.models.regularizers.lider import LiDER

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import reference_twf_regularizers as reference  # noqa: E402
from reference_tasks import PairTasks

#: aimagelab/mammoth models/config/<model>_lider.yaml [seq-cifar100][500], with its dataset_config lider
#: (datasets/configs/seq-cifar100/lider.yaml): preset -> (method, {our dotted key: the original's value}).
LIDER_PRESETS = {
    "derpp-lider-seq-cifar100-500": ("derpp", {"model.lr": 0.03, "model.alpha": 0.3, "model.beta": 0.3,
                                               "model.regularizer.alpha_lip_lambda": 0.3,
                                               "model.regularizer.beta_lip_lambda": 0.5}),
    "er-ace-lider-seq-cifar100-500": ("er_ace", {"model.lr": 0.1, "model.regularizer.alpha_lip_lambda": 0.1,
                                                 "model.regularizer.beta_lip_lambda": 0.3}),
}
LIDER_DATASET_CONFIG = {"dataset.batch_size": 64, "dataset.n_epochs": 50, "model.lr_milestones": [35, 45],
                        "model.sched_multistep_lr_gamma": 0.1, "model.buffer_size": 500, "model.minibatch_size": None,
                        "model.momentum": 0.0, "model.weight_decay": 0.0, "model.regularizer.headless_init_act": "relu",
                        "model.regularizer.grad_iter_step": -2}
REFERENCE = json.loads((Path(__file__).parent / "data" / "regularizers_reference.json").read_text())
LIDER_TARGET = "mammoth.models.regularizers.lider.LiDER"
STAR_TARGET = "mammoth.models.regularizers.star.STAR"


class _Mean(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.mean((2, 3))


class TinyBackbone(MammothBackbone):
    """The reference's tiny network as a mammoth backbone: 2 convolution stages, the mean-pooled features."""

    def __init__(self) -> None:
        super().__init__()
        first, second, classifier = reference.tiny_modules()
        self.stages = nn.ModuleList([first, second, _Mean()])
        self.classifier = classifier  # registered after the stages: the parameters in the original's order
        self.num_features, self.num_classes = 6, 4


class _Config:
    batch_size = reference.BATCH
    n_epochs = 1


class TinyDataset(PairTasks):
    """The reference's 2 tasks, with no augmentation and no normalisation (the original ran without a transform)."""

    name = "tiny"
    n_classes, n_tasks, setting, config = 4, 2, "class-il", _Config()

    def task_source(self, task: int) -> InMemorySource:
        return InMemorySource(*reference.task_images(task))


def _lider_model(draws: list[list[int]] | None = None, **lider: float):
    settings = REFERENCE["lider"]["settings"]
    values = {name: settings[name] for name in ("alpha_lip_lambda", "beta_lip_lambda", "headless_init_act", "grad_iter_step")}
    dataset = TinyDataset()
    # buffer_size 32: the whole stream, as the original's 100 (its memory never fills either)
    model = build_model("derpp", net=TinyBackbone(), dataset=dataset, buffer_size=32, lr=settings["lr"],
                        alpha=settings["alpha"], beta=settings["beta"], minibatch_size=settings["minibatch_size"],
                        regularizer={"_target_": LIDER_TARGET, **values, **lider})
    model.attach(build_context(dataset, "cpu", torch.Generator().manual_seed(0)))
    model.regularizer.generator.manual_seed(REFERENCE["lider"]["lip_seed"])
    if draws is not None:
        _replay_draws(model, draws)
    return model


def _replay_draws(model, draws: list[list[int]]) -> None:
    """The buffer returns the items the original's buffer drew, in order (its ``np.random.choice``)."""
    buffer = model.buffer

    def sample(size: int, transform=None, generator=None) -> ReplayBatch:
        indices = torch.tensor(draws.pop(0))
        assert len(indices) == min(size, len(buffer))
        values = {name: storage.index_select(0, indices) for name, storage in buffer._storage.items()}
        if transform is not None:
            values["examples"] = transform(values["examples"])
        return ReplayBatch(indices=indices, **{name: values.get(name) for name in FIELDS})

    buffer.sample = sample


def test_derpp_with_lider_matches_the_originals_derpp_lider_step_by_step() -> None:
    expected = REFERENCE["lider"]
    draws = [list(draw) for draw in expected["draws"]]
    model = _lider_model(draws)
    for task in range(reference.N_TASKS):
        model.begin_task(task)
        if task == 0:
            # the budget: each layer's mean constant over the first task's data, float64 as the original's
            torch.testing.assert_close(model.regularizer.budget, torch.tensor(expected["budget"], dtype=torch.float64),
                                       rtol=1e-6, atol=1e-9)
        losses = [model.observe(x, y, x) for x, y in reference.batches(task)]
        # float64 Lipschitz terms on float32 networks: the same operations in the same order; 1e-5 covers
        # a BLAS that sums in another order
        assert losses == pytest.approx(expected["losses"][task], rel=1e-5)
        model.end_task(task, model.context.task_data(task))
        with torch.no_grad():
            model.net.eval()
            logits = model.net(reference.probe_images())
        torch.testing.assert_close(logits, torch.tensor(expected["logits"][task]), rtol=1e-4, atol=1e-5)
    assert draws == []  # 4 replay minibatches a step with a memory: derpp's 2, then LiDER's 2


def test_lider_adds_its_terms_only_with_a_memory_and_each_draws_its_own_minibatch() -> None:
    model = _lider_model()
    model.begin_task(0)
    x, y = reference.batches(0)[0]
    drawn = []
    sample = model.buffer.sample
    model.buffer.sample = lambda size, transform=None, generator=None: drawn.append(size) or sample(size, transform)
    first = model.observe(x, y, x)
    assert drawn == []  # an empty memory: no term, nothing drawn (the first reference loss is derpp's CE alone)
    assert first == pytest.approx(REFERENCE["lider"]["losses"][0][0], rel=1e-6)
    model.observe(x, y, x)
    assert drawn == [4, 4, 4, 4]
    only_alpha = _lider_model(beta_lip_lambda=0.0)
    only_alpha.begin_task(0)
    only_alpha.observe(x, y, x)
    drawn.clear()
    sample_alpha = only_alpha.buffer.sample
    only_alpha.buffer.sample = lambda size, transform=None, generator=None: drawn.append(size) or sample_alpha(size, transform)
    only_alpha.observe(x, y, x)
    assert drawn == [4, 4, 4]  # a term of weight 0 draws nothing, as in the original


def test_lider_draws_from_its_generator_not_torchs_global_one() -> None:
    model = _lider_model()
    before = torch.get_rng_state()
    model.begin_task(0)
    for x, y in reference.batches(0)[:2]:
        model.observe(x, y, x)
    assert torch.equal(torch.get_rng_state(), before)


def test_lider_resumes_bit_exactly() -> None:
    model = _lider_model()
    model.begin_task(0)
    for x, y in reference.batches(0)[:2]:
        model.observe(x, y, x)
    state, extra = model.state_dict(), model.extra_state()
    resumed = _lider_model()
    resumed.regularizer.generator.manual_seed(99)  # overwritten by the checkpoint
    resumed.load_state_dict(state)
    resumed.load_extra_state(extra)
    resumed.begin_task(0)
    model.begin_task(0)  # both recreate the optimizer; the budget is kept, not recomputed
    assert torch.equal(resumed.regularizer.budget, model.regularizer.budget)
    x, y = reference.batches(0)[2]
    assert resumed.observe(x, y, x) == model.observe(x, y, x)


@pytest.mark.parametrize(("values", "message"), [
    ({"alpha_lip_lambda": 0.0, "beta_lip_lambda": 0.0},
     r"^model\.regularizer: lider with alpha_lip_lambda=0 and beta_lip_lambda=0 adds nothing; allowed: "),
    ({"alpha_lip_lambda": "x"}, r"^model\.regularizer\.alpha_lip_lambda: invalid value 'x'.*expected a number"),
    ({"alpha_lip_lambda": 1.0, "headless_init_act": "tanh"},
     r"^model\.regularizer\.headless_init_act: invalid value 'tanh'.*allowed values: 'relu', 'lrelu'"),
    ({"alpha_lip_lambda": 1.0, "grad_iter_step": 11}, r"^model\.regularizer\.grad_iter_step=11 is outside the 10 power"),
    ({"alpha_lip_lambda": 1.0, "lip": 1.0}, r"^unknown argument 'lip' for model\.regularizer 'lider' \(model\.regularizer\.lip\)"),
])
def test_lider_values_are_checked_in_one_line(values, message) -> None:
    with pytest.raises(ConfigError, match=message):
        build_regularizer({"_target_": LIDER_TARGET, **values})


def test_a_method_whose_steps_bypass_step_refuses_a_regularizer() -> None:
    lider = {"_target_": LIDER_TARGET, "alpha_lip_lambda": 1.0}
    # its config has no regularizer field (the pre-flight's check: tests/cli/test_compose.py)
    with pytest.raises(ConfigError, match=r"^unknown argument 'regularizer' for model 'gem' \(model\.regularizer\)"):
        build_model("gem", net=TinyBackbone(), dataset=TinyDataset(), buffer_size=8, regularizer=lider)
    with pytest.raises(ConfigError, match=r"^model Gem takes no regularizer .*allowed: \+model/regularizer=NAME with bic, der, derpp"):
        Gem(TinyBackbone(), TinyDataset(), buffer_size=8, regularizer=lider)


def test_lider_on_several_processes_is_refused_by_the_method_it_composes_with() -> None:
    model = _lider_model()
    assert type(model).supports_distributed and not model.supports_distributed
    assert REGULARIZERS.names() == ["lider", "star"] and isinstance(model.regularizer, LiDER)


#: aimagelab/mammoth models/config/<model>_star.yaml [seq-cifar10][100] (no dataset_config: seq-cifar10's
#: defaults, batch 32, 50 epochs, no milestones): preset -> (method, {our dotted key: the original's value}).
STAR_PRESETS = {
    "derpp-star-seq-cifar10-100": ("derpp", {"model.lr": 0.1, "model.alpha": 0.15, "model.beta": 0.15, "seed": 0,
                                             "model.regularizer.p_gamma": 0.05, "model.regularizer.p_lam": 0.05}),
    "er-star-seq-cifar10-100": ("er", {"model.lr": 0.1, "seed": 4, "model.regularizer.p_gamma": 0.01,
                                       "model.regularizer.p_lam": 0.1}),
    "er-ace-star-seq-cifar10-100": ("er_ace", {"model.lr": 0.03, "seed": 4, "model.regularizer.p_gamma": 0.01,
                                               "model.regularizer.p_lam": 0.1}),
}
STAR_DATASET_CONFIG = {"dataset.batch_size": 32, "dataset.n_epochs": 50, "model.lr_milestones": None,
                       "model.buffer_size": 100, "model.minibatch_size": None, "model.momentum": 0.0,
                       "model.weight_decay": 0.0, "model.regularizer.p_steps": 1}


@pytest.mark.parametrize("name", sorted([*LIDER_PRESETS, *STAR_PRESETS]))
def test_regularizer_presets_hold_the_originals_best_arguments(name: str) -> None:
    lider = name in LIDER_PRESETS
    method, values = (LIDER_PRESETS if lider else STAR_PRESETS)[name]
    cfg = compose_mammoth(f"experiment={name}")
    expected = {**(LIDER_DATASET_CONFIG if lider else STAR_DATASET_CONFIG), **values}
    found = {key: OmegaConf.select(cfg, key) for key in expected}
    assert {key: list(value) if OmegaConf.is_config(value) else value for key, value in found.items()} == expected
    assert cfg.dataset.name == ("seq-cifar100" if lider else "seq-cifar10")
    assert cfg.model._target_.rsplit(".", 2)[1] == method
    assert cfg.model.regularizer._target_ == (LIDER_TARGET if lider else STAR_TARGET)


# ---- star ----


def _star_model(draws: list[list[int]] | None = None, method: str = "derpp", key: str = "star"):
    settings = REFERENCE["star"]["settings"]
    values = {name: settings[name] for name in ("p_steps", "p_lam", "p_gamma")}
    dataset = TinyDataset()
    own = {"alpha": settings["alpha"], "beta": settings["beta"]} if method == "derpp" else {}
    model = build_model(method, net=TinyBackbone(), dataset=dataset, buffer_size=32, lr=settings["lr"],
                        minibatch_size=settings["minibatch_size"], regularizer={"_target_": STAR_TARGET, **values}, **own)
    model.attach(build_context(dataset, "cpu", torch.Generator().manual_seed(0)))
    model.regularizer.generator.manual_seed(REFERENCE[key]["noise_seed"])  # the original's noise draws (the reference's)
    if draws is not None:
        _replay_draws(model, draws)
    return model


@pytest.mark.parametrize(("method", "key"), [("er", "star"), ("derpp", "derpp_star")])
def test_star_matches_the_originals_er_star_and_derpp_star_step_by_step(method, key, monkeypatch) -> None:
    expected = REFERENCE[key]
    # the noise scale both sides ran with (scripts/reference_twf_regularizers.py: at the original's 1e-20
    # the first perturbation step follows the computation's last bits, which differ between thread counts)
    monkeypatch.setattr(star_module, "EPS", expected["eps"])
    # STAR's minibatch first, then the method's, as the original draws them
    draws = [list(draw) for draw in expected["draws"]]
    model = _star_model(draws, method=method, key=key)
    tolerances = [1e-5, 1e-5]  # float32 work in the same order; derpp_star sums derpp's terms in another order
    for task in range(reference.N_TASKS):
        model.begin_task(task)
        losses = [model.observe(x, y, x) for x, y in reference.batches(task)]
        # the loss reported is the method's (as the original's); STAR changes the weights it is taken at
        assert losses == pytest.approx(expected["losses"][task], rel=tolerances[task])
        model.end_task(task, model.context.task_data(task))
        with torch.no_grad():
            model.net.eval()
            logits = model.net(reference.probe_images())
        torch.testing.assert_close(logits, torch.tensor(expected["logits"][task]), rtol=1e-4, atol=1e-5)
        model.net.train()
    assert draws == []
    # what STAR adds is far beyond the tolerances where they are tight: the method alone on the same draws
    plain = build_model(method, net=TinyBackbone(), dataset=TinyDataset(), buffer_size=32, lr=0.05, minibatch_size=4,
                        **({"alpha": 0.3, "beta": 0.3} if method == "derpp" else {}))
    plain.attach(build_context(TinyDataset(), "cpu", torch.Generator().manual_seed(0)))
    draws = [list(draw) for index, draw in enumerate(expected["draws"]) if index % (2 if method == "er" else 3)]
    _replay_draws(plain, draws)
    for task in range(reference.N_TASKS):
        plain.begin_task(task)
        plain_losses = [plain.observe(x, y, x) for x, y in reference.batches(task)]
        assert max(abs(a - b) / b for a, b in zip(plain_losses, expected["losses"][task])) > 50 * tolerances[task]


def test_star_adds_its_gradient_and_restores_the_weights() -> None:
    model = _star_model()
    plain = build_model("derpp", net=TinyBackbone(), dataset=TinyDataset(), buffer_size=32, lr=0.05, alpha=0.3, beta=0.3,
                        minibatch_size=4)
    plain.attach(build_context(TinyDataset(), "cpu", torch.Generator().manual_seed(0)))
    for each in (model, plain):
        each.begin_task(0)
    batches = reference.batches(0)
    for each in (model, plain):
        each.observe(*batches[0], batches[0][0])  # an empty memory: no STAR, the same step
    assert all(torch.equal(a, b) for a, b in zip(model.net.parameters(), plain.net.parameters()))
    before = [parameter.detach().clone() for parameter in model.net.parameters()]
    sample = model.buffer.sample
    drawn = []
    model.buffer.sample = lambda size, transform=None, generator=None: drawn.append(size) or sample(size, transform)
    model.regularizer.after_backward = lambda net, after=model.regularizer.after_backward: (
        drawn.append([p.detach().clone() for p in model.net.parameters()]), after(net))
    model.observe(*batches[1], batches[1][0])
    assert drawn[:3] == [4, 4, 4]  # STAR's minibatch, then derpp's two
    # after STAR's pass the weights are those of the step's start (moved there and back)
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(drawn[3], before))
    assert model.supports_fp16 is False and type(model).supports_fp16


@pytest.mark.parametrize(("values", "message"), [
    ({"p_steps": 0}, r"^model\.regularizer\.p_steps=0"),
    ({"p_gamma": 0.0}, r"^model\.regularizer\.p_gamma=0"),
    ({"p_lam": -1.0}, r"^model\.regularizer\.p_lam=-1"),
])
def test_star_values_are_checked_in_one_line(values, message) -> None:
    with pytest.raises(ConfigError, match=message):
        build_regularizer({"_target_": STAR_TARGET, **values})


def test_er_with_star_runs_and_resumes_bit_exactly() -> None:
    model = _star_model(method="er")
    model.begin_task(0)
    for x, y in reference.batches(0)[:2]:
        model.observe(x, y, x)
    resumed = _star_model(method="er")
    resumed.regularizer.generator.manual_seed(5)
    resumed.load_state_dict(model.state_dict())
    resumed.load_extra_state(model.extra_state())
    for each in (model, resumed):
        each.begin_task(0)
    x, y = reference.batches(0)[2]
    assert resumed.observe(x, y, x) == model.observe(x, y, x)
    assert torch.equal(resumed.regularizer.generator.get_state(), model.regularizer.generator.get_state())
