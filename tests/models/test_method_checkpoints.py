"""Every registered method's state survives a checkpoint that loads with weights_only=True: what
it keeps (buffers, importance weights, class means...) is only tensors, numbers, strings, lists
and dicts, and a restored model continues exactly as the original; a run stopped after a task and
resumed is bit-exact for every method (those that need a ViT's tokens on a 2-block vit)."""

from __future__ import annotations

import pytest
import torch

from mammoth.backbones import build_backbone
from mammoth.datasets import build_dataset
from mammoth.engine.checkpoint import load_checkpoint, save_checkpoint
from mammoth.engine.loop import TrainingState, run_tasks, train_task
from mammoth.models import MODELS, build_model
from mammoth.models.ranpac import RIDGES

#: The methods that train an MLP (every registered one but those that need a ViT's tokens).
RESUMED_METHODS = sorted(name for name in MODELS.names() if not getattr(MODELS.get(name).target, "requires_tokens", False))


def _train_two_tasks(model) -> None:
    """Both tasks of the fake dataset through the harness's ``train_task`` (one epoch, batches of 8)."""
    for task in range(2):
        train_task(model, model.context, task, model.context.task_data(task))


def _required_values(name: str) -> dict:
    """A value for every argument of ``name`` that has no default (sizes 32, other numbers 0.5), and
    ``buffer_size`` 32 for a method that takes it or ``memory_per_class``."""
    values = {}
    for argument in MODELS.get(name).arguments:
        if argument.required or (argument.name == "buffer_size" and MODELS.get(name).argument("memory_per_class")):
            values[argument.name] = 32 if "size" in argument.name else (1 if argument.hint is int else 0.5)
    return values


#: The methods whose memory can grow with the classes (``memory_per_class``), resumed with it too.
PER_CLASS_METHODS = sorted(name for name in RESUMED_METHODS if MODELS.get(name).argument("memory_per_class")
                           and getattr(MODELS.get(name).target, "supports_memory_per_class", True))


@pytest.mark.parametrize("name", RESUMED_METHODS)
def test_a_trained_method_round_trips_through_a_weights_only_checkpoint(tmp_path, name, make_model, make_batch, dataset):
    model = make_model(name, **_required_values(name))
    _train_two_tasks(model)
    path = tmp_path / "checkpoint.pt"
    state = TrainingState(2, {"class_il": [[50.0], [25.0, 75.0]]}, [1.0, 1.0], [0.1, 0.1])
    save_checkpoint(path, model, torch.Generator().manual_seed(3), state, {"model": name})

    restored = make_model(name, seed=1, **_required_values(name))
    assert load_checkpoint(path, restored, torch.Generator(), {"model": name}) == state
    for (key, value), (_, restored_value) in zip(model.state_dict().items(), restored.state_dict().items()):
        assert torch.equal(value, restored_value), key
    # Not checkpoint state: after a resume the harness calls begin_task(next task), which sets it.
    restored.current_task = model.current_task
    batch = make_batch(1, seed=9)
    model.eval(), restored.eval()
    with torch.no_grad():
        assert torch.equal(model(batch[0]), restored(batch[0]))  # the same predictions, method hooks included


#: The methods that need a ViT's tokens whose resume is checked, with small arguments: coda_prompt and
#: dualprompt (the two prompt methods whose begin_task changes prompts) and ranpac, which trains its
#: adapters in the first session only (its run goes on to a third task, past that session).
TOKEN_METHODS = {"coda_prompt": {"pool_size": 10}, "dualprompt": {"g_prompt_layer_idx": [0], "e_prompt_layer_idx": [1]},
                 "ranpac": {"adapter_size": 4, "rp_size": 32}}


#: Rehearsal methods with a regulariser (``+model/regularizer=NAME``) whose resume is checked: the
#: method, its values (on a 2-hidden-layer MLP: LiDER needs a stage before the feature vector).
REGULARIZED = {"derpp+lider": ("derpp", {"buffer_size": 64, "regularizer": {
    "_target_": "mammoth.models.regularizers.lider.LiDER", "alpha_lip_lambda": 0.3, "beta_lip_lambda": 0.5}}),
               "er+star": ("er", {"buffer_size": 64, "regularizer": {
                   "_target_": "mammoth.models.regularizers.star.STAR", "p_lam": 1.0, "p_gamma": 0.1}})}


def _run(name: str, run_dir, stop_after_task: int, resume: bool = False, memory_per_class: int | None = None):
    """A run of ``name`` on seq-digits (1 epoch, batches of 32, seed 7) up to ``stop_after_task`` tasks,
    built as ``mammoth.run`` builds it (torch's global generator seeded before the backbone): a
    32-unit MLP, or a 2-block vit for the methods that need tokens; a memory of 64 examples, or
    ``memory_per_class``."""
    dataset = build_dataset({"name": "seq-digits", "n_epochs": 1, "batch_size": 32}, seed=7)
    torch.manual_seed(7)
    if name in TOKEN_METHODS:
        net = build_backbone("vit", num_classes=dataset.n_classes, input_shape=dataset.input_shape, patch_size=4,
                             width=24, depth=2, heads=3)
        values = TOKEN_METHODS[name]
    elif name in REGULARIZED:
        net = build_backbone("mnistmlp", num_classes=dataset.n_classes, input_shape=dataset.input_shape, hidden_sizes=[32, 32])
        name, values = REGULARIZED[name]
    else:
        net = build_backbone("mnistmlp", num_classes=dataset.n_classes, input_shape=dataset.input_shape, hidden_sizes=[32])
        values = _required_values(name)
        values = {**values, "buffer_size": 64} if "buffer_size" in values else values
        if memory_per_class is not None:
            values = {**values, "buffer_size": None, "memory_per_class": memory_per_class}
    model = build_model(name, net=net, dataset=dataset, **values)
    state = run_tasks(model, dataset, torch.device("cpu"), run_dir, 7, {"model": name}, resume=resume,
                      stop_after_task=stop_after_task)
    return model, state


@pytest.mark.parametrize("name", [*RESUMED_METHODS, *TOKEN_METHODS, *REGULARIZED,
                                  *(f"{name}:per-class" for name in PER_CLASS_METHODS)])
def test_a_run_stopped_after_task_one_and_resumed_is_bit_exact(tmp_path, name):
    name, _, per_class = name.partition(":")
    memory = {"memory_per_class": 7} if per_class else {}  # 14 then 28 examples: the memory grows at task 2
    tasks = 3 if name == "ranpac" else 2
    (tmp_path / "whole").mkdir(), (tmp_path / "resumed").mkdir()
    whole, whole_state = _run(name, tmp_path / "whole", stop_after_task=tasks, **memory)
    _run(name, tmp_path / "resumed", stop_after_task=1, **memory)
    torch.manual_seed(12345)  # a resumed process starts with other global random state
    resumed, resumed_state = _run(name, tmp_path / "resumed", stop_after_task=tasks, resume=True, **memory)
    if per_class:  # a ReplayModel's buffer, gdumb's memory
        capacities = [(model.buffer if hasattr(model, "buffer") else model.memory).capacity for model in (whole, resumed)]
        assert capacities == [7 * 4, 7 * 4]
    assert resumed_state.next_task == whole_state.next_task == tasks
    assert resumed_state.accuracies == whole_state.accuracies
    # Which weights are frozen is no checkpoint state, and it changes float results: torch's matmul
    # picks its kernel for a 3-D input by requires_grad even under no_grad (ranpac's attention input
    # projection of the last batch of 3 rounded otherwise, and its G and Q then differed in their last bits).
    flags = {name: p.requires_grad for name, p in whole.named_parameters()}
    assert {name: p.requires_grad for name, p in resumed.named_parameters()} == flags
    for (key, value), (_, resumed_value) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(value, resumed_value), key
    assert _plain(whole.extra_state()) == _plain(resumed.extra_state())
    if name == "ranpac":  # frozen in both after the first session; 6 classes seen, a ridge it tries
        assert not any(flag for key, flag in flags.items() if key.startswith(("net.", "adapters.")))
        assert int(resumed.seen_classes) == 6 and float(resumed.ridge) in RIDGES


def _plain(value):
    """``value`` with tensors as nested lists (and generator states as bytes), comparable with ``==``."""
    if isinstance(value, torch.Tensor):
        return (str(value.dtype), value.tolist())
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


@pytest.mark.parametrize("name", RESUMED_METHODS)
def test_a_method_draws_nothing_from_torchs_global_generator(name, make_model):
    """Every random draw (batch order, augmentation, buffer sampling, memory selection, inner loops)
    comes from the run's generator: two tasks leave torch's global generator where it was."""
    model = make_model(name, **_required_values(name))
    before = torch.get_rng_state()
    _train_two_tasks(model)
    assert torch.equal(torch.get_rng_state(), before)
