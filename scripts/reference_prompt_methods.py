"""Reference numbers of the ORIGINAL Mammoth's l2p, dualprompt and coda_prompt, for
``tests/models/test_prompt_fidelity.py``.

For each run of :data:`RECIPE` (each method at its defaults, and one variant each), the script
builds mammoth-cl's model (``backbone=timm``, a 2-block ViT of width 24 with 3 heads, 8-pixel
patches, 32-pixel images, seeded) for its initial weights, then, in a child process that
imports timm as the original pins it (0.9.8), copies them into the original's own classes (its
prompted ViT, frozen query ViT, prompt modules and its ``ContinualModel`` subclass, whose
``observe``, ``begin_task`` and ``forward`` run unchanged), feeds both tasks' batches, and
stores in ``tests/models/data/prompt_reference.safetensors``: the initial weights
(``backbone.*``, ``<run>.init.*``), the loss of every step, the prompts chosen in every training
step and at test (l2p, dualprompt), the test logits after both tasks, and for coda_prompt the
components the original re-initialised at task 2 (its Gram-Schmidt draws from torch's global
generator, ours from the run's: the test copies these in and checks ours separately). The
file's metadata holds the recipe and the versions of both sides.

Rerun it (about 20 s on a CPU):

    git -C /work/.mirror/aimagelab+mammoth/repo archive HEAD | tar -x -C /tmp/orig-mammoth
    pip install --target /tmp/p_origdeps --no-deps timm==0.9.8     # the timm the original pins
    python scripts/reference_prompt_methods.py --original /tmp/orig-mammoth --original-path /tmp/p_origdeps

The stored file was made from the original at commit e75a491c69fd729edeb01431afb753d9157d9a81
with timm 0.9.8 on its side, timm 1.0.31 on ours, torch 2.14.1 (CPU). The original's modules
import kornia and its ``datasets`` package at import time, which these methods never call on
this path; the child stubs them (``kornia*``, ``datasets*``). coda_prompt's ``Model`` hard-codes
a 224-pixel ViT-B (width 768); the script assembles the same ``Model`` from the original's
``VisionTransformer`` and ``CodaPrompt`` classes at width 24 (``key_dim=24``) instead. The
original's coda_prompt cannot train on a CPU at all (an in-place add to a leaf tensor that only
a CUDA copy avoids); the script gives its ViT module a ``torch.zeros`` that makes that copy on
the CPU too (:class:`_CudaLikeZeros`), which changes no number.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import sys
import types
from argparse import Namespace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

OUTPUT = Path(__file__).resolve().parents[1] / "tests" / "models" / "data" / "prompt_reference.safetensors"

#: The shared recipe (stored in the file's metadata; the test reads it from there). Each run is a
#: method with settings; what a run leaves out is the method's default, the same in both.
RECIPE: dict[str, Any] = {
    "seed": 0,
    "n_classes": 4,
    "n_tasks": 2,
    "batch_size": 6,
    "steps": 3,
    "backbone": {"name": "vit_tiny_patch16_224", "input_shape": [3, 32, 32],
                 "model_args": {"depth": 2, "embed_dim": 24, "num_heads": 3, "patch_size": 8}},
    "runs": {
        "l2p": {"method": "l2p", "settings": {"pool_size_l2p": 6, "length": 2, "top_k": 2, "lr": 1.0}},
        "l2p-batchwise-mask": {"method": "l2p", "settings": {
            "pool_size_l2p": 6, "length": 2, "top_k": 2, "lr": 1.0, "batchwise_prompt": True, "use_prompt_mask": True,
            "head_type": "token+prompt", "pull_constraint_coeff": 0.5}},
        "dualprompt": {"method": "dualprompt", "settings": {
            "g_prompt_layer_idx": [0], "e_prompt_layer_idx": [1], "g_prompt_length": 2, "size": 4, "length": 2,
            "top_k": 1, "lr": 1.0}},
        "dualprompt-permute-fix": {"method": "dualprompt", "settings": {
            "g_prompt_layer_idx": [1], "e_prompt_layer_idx": [0, 1], "g_prompt_length": 2, "size": 4, "length": 2,
            "top_k": 2, "lr": 1.0, "use_permute_fix": True, "batchwise_prompt": False}},
        "coda_prompt": {"method": "coda_prompt", "settings": {
            "pool_size": 10, "prompt_len": 4, "ortho_mu": 0.1, "mu": 0.5, "lr": 0.01}},
        "coda_prompt-virtual-batch": {"method": "coda_prompt", "settings": {
            "pool_size": 10, "prompt_len": 4, "virtual_bs_iterations": 2, "lr": 0.01}},
    },
}

#: The original's defaults of the arguments its code reads (its get_parser), per method.
ORIGINAL_DEFAULTS: dict[str, dict[str, Any]] = {
    "l2p": {"pool_size_l2p": 10, "length": 5, "top_k": 5, "prompt_key_init": "uniform", "use_prompt_mask": False,
            "batchwise_prompt": False, "embedding_key": "cls", "pull_constraint": True, "pull_constraint_coeff": 0.1,
            "head_type": "prompt", "clip_grad": 1.0},
    "dualprompt": {"g_prompt_length": 5, "g_prompt_layer_idx": [0, 1], "e_prompt_layer_idx": [2, 3, 4], "size": 10,
                   "length": 5, "top_k": 1, "prompt_key_init": "uniform", "batchwise_prompt": True,
                   "embedding_key": "cls", "pull_constraint": True, "pull_constraint_coeff": 1.0,
                   "use_permute_fix": False, "clip_grad": 1.0, "use_prefix_tune_for_g_prompt": True,
                   "use_prefix_tune_for_e_prompt": True, "same_key_value": False},
    "coda_prompt": {"mu": 0.0, "pool_size": 100, "prompt_len": 8, "ortho_mu": 0.0, "virtual_bs_iterations": 1},
}


def original_args(run: str) -> Namespace:
    """The original's ``args`` for ``run``: its defaults, the run's settings, adam without weight
    decay, and l2p's and dualprompt's batch-size scaling of the learning rate done as theirs."""
    spec = RECIPE["runs"][run]
    values = {**ORIGINAL_DEFAULTS[spec["method"]], **spec["settings"], "optimizer": "adam", "optim_wd": 0.0,
              "n_epochs": 2}
    if spec["method"] != "coda_prompt":
        values["lr"] = values["lr"] * RECIPE["batch_size"] / 256.0
    return Namespace(**values)


def batch(task: int, step: int, size: int) -> tuple[Tensor, Tensor]:
    """The normalised inputs and labels of ``step`` of ``task`` (``step=-1``: the test batch)."""
    generator = torch.Generator().manual_seed(1000 + 100 * task + step)
    inputs = (torch.rand(size, 3, 32, 32, generator=generator) - 0.5) / 0.5
    labels = 2 * task + torch.randint(0, 2, (size,), generator=generator)
    return inputs, labels


# ---- importing the original ----


class _Stub(types.ModuleType):
    """A module whose every attribute is itself (a base class, a callable, an index)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> _Stub:
        return self

    def __getitem__(self, key: Any) -> _Stub:
        return self

    def __mro_entries__(self, bases: tuple) -> tuple:
        return (object,)


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``kornia``, ``datasets`` and their submodules as stubs."""

    PREFIXES = ("kornia", "datasets")

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name.split(".")[0] in self.PREFIXES:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec: Any) -> types.ModuleType:
        module = _Stub(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def import_original(root: Path) -> dict[str, Any]:
    """The original's classes this script runs."""
    sys.meta_path.insert(0, _StubFinder())
    sys.path.insert(0, str(root))
    import models.coda_prompt_utils.vit as coda_vit
    from models.coda_prompt import CodaPrompt as CodaMethod
    from models.coda_prompt_utils.model import CodaPrompt as CodaPool
    from models.coda_prompt_utils.model import Model as CodaModel
    from models.coda_prompt_utils.vit import VisionTransformer as CodaViT
    from models.dualprompt import DualPrompt
    from models.dualprompt_utils.model import Model as DualModel
    from models.dualprompt_utils.vision_transformer import VisionTransformer as DualViT
    from models.l2p import L2P
    from models.l2p_utils.l2p_model import L2PModel
    from models.l2p_utils.vit_prompt import VisionTransformer as L2PViT

    coda_vit.torch = _CudaLikeZeros()
    return {"L2P": L2P, "L2PModel": L2PModel, "L2PViT": L2PViT, "DualPrompt": DualPrompt, "DualModel": DualModel,
            "DualViT": DualViT, "CodaMethod": CodaMethod, "CodaModel": CodaModel, "CodaPool": CodaPool,
            "CodaViT": CodaViT}


class _CudaLikeZeros(types.SimpleNamespace):
    """``torch`` for the original's ``coda_prompt_utils/vit.py``, whose ``torch.zeros((1,),
    requires_grad=True).to(x.device)`` is a leaf on a CPU (``.to`` returns it) and its next line
    adds to it in place, which torch refuses; on CUDA ``.to`` copies it. Here ``zeros`` returns
    that copy on every device; everything else is torch's."""

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)

    @staticmethod
    def zeros(*args: Any, **kwargs: Any) -> Tensor:
        value = torch.zeros(*args, **kwargs)
        return value.clone() if value.requires_grad else value


# ---- building ours and the original's ----


def build_ours(run: str) -> nn.Module:
    """mammoth-cl's model of ``run`` (not attached: only its initial weights are used)."""
    from mammoth.backbones.timm import TimmBackbone
    from mammoth.models import build_model

    torch.manual_seed(RECIPE["seed"])
    spec = RECIPE["backbone"]
    net = TimmBackbone(RECIPE["n_classes"], tuple(spec["input_shape"]), name=spec["name"], model_args=spec["model_args"])
    dataset = Namespace(n_classes=RECIPE["n_classes"], n_tasks=RECIPE["n_tasks"])
    return build_model(RECIPE["runs"][run]["method"], net=net, dataset=dataset, **RECIPE["runs"][run]["settings"])


def vit_kwargs() -> dict[str, Any]:
    """The original's ViT arguments for the recipe's backbone."""
    args = RECIPE["backbone"]["model_args"]
    return {"img_size": 32, "patch_size": args["patch_size"], "embed_dim": args["embed_dim"], "depth": args["depth"],
            "num_heads": args["num_heads"], "num_classes": RECIPE["n_classes"], "drop_rate": 0.0,
            "drop_path_rate": 0.0}


def load_into(module: nn.Module, state: dict[str, Tensor], allowed_missing: tuple[str, ...]) -> None:
    """Load ``state`` into ``module``; only parameters named with ``allowed_missing`` may stay unset."""
    missing, unexpected = module.load_state_dict(state, strict=False)
    left = [key for key in missing if not key.startswith(allowed_missing)]
    assert not left and not unexpected, (left, unexpected)


def frozen_pair(cls: type, query_vit: nn.Module, prompted: nn.Module) -> nn.Module:
    """The original's two-ViT model ``cls`` (L2PModel, dualprompt's Model) around the two ViTs,
    frozen as the original's ``--freeze`` default freezes them."""
    net = cls.__new__(cls)
    nn.Module.__init__(net)
    net.original_model, net.model, net.n_classes = query_vit, prompted, RECIPE["n_classes"]
    for parameter in query_vit.parameters():
        parameter.requires_grad = False
    for name, parameter in prompted.named_parameters():
        if name.startswith(("blocks", "patch_embed", "cls_token", "norm", "pos_embed")):
            parameter.requires_grad = False
    return net


def original_method(cls: type, net: nn.Module, args: Namespace) -> Any:
    """An instance of the original's ContinualModel subclass ``cls`` around ``net``, with the
    state its hooks read (built without its ``__init__``, which would build a ViT-B)."""
    method = cls.__new__(cls)
    nn.Module.__init__(method)
    method.net, method.args, method.loss = net, args, F.cross_entropy
    method._current_task, method._epoch_iteration, method._task_iteration = 0, 0, 0
    method.dataset = Namespace(get_offsets=lambda task: (2 * task, 2 * task + 2))
    return method


def train_original(method: Any, run: str, chosen: Any = None, after_begin: Any = None) -> dict[str, Tensor]:
    """The original's harness over the recipe: per task, ``meta_begin_task``'s counters and fresh
    optimizer, then ``begin_task``, then ``observe`` per batch (``meta_observe`` counting the
    epoch's batches); then the test batch through ``forward``. ``chosen(inputs, task, train)``
    gives the prompts the method picks; ``after_begin(task)`` runs after ``begin_task``."""
    losses, train_index = [], []
    for task in range(RECIPE["n_tasks"]):
        method._current_task, method._epoch_iteration = task, 0
        method._n_past_classes, method._n_seen_classes = 2 * task, 2 * task + 2
        method.train()
        method.opt = method.get_optimizer()
        method.begin_task(None)
        if after_begin is not None:
            after_begin(task)
        for step in range(RECIPE["steps"]):
            inputs, labels = batch(task, step, RECIPE["batch_size"])
            if chosen is not None:
                train_index.append(chosen(inputs, task, True))
            losses.append(method.observe(inputs, labels, inputs))
            method._epoch_iteration += 1
    method.eval()
    test_inputs, _ = batch(0, -1, RECIPE["batch_size"])
    result = {f"{run}.losses": torch.tensor(losses, dtype=torch.float64)}
    with torch.no_grad():
        result[f"{run}.test_logits"] = method.forward(test_inputs)
    if chosen is not None:
        result[f"{run}.train_index"] = torch.stack(train_index)
        result[f"{run}.test_index"] = chosen(test_inputs, -1, False)
    return result


def initial_state(run: str, ours: nn.Module) -> dict[str, Tensor]:
    """Our model's initial weights: ``backbone.*`` (the same for every run, seeded alike) and the
    method's own ``<run>.init.*``."""
    state = {f"backbone.{key}": value.detach().clone() for key, value in ours.net.state_dict().items()}
    state.update({f"{run}.init.{key}": value.detach().clone() for key, value in ours.state_dict().items()
                  if not key.startswith("net.")})
    return state


# ---- the three methods ----


def trunk_of(init: dict[str, Tensor]) -> dict[str, Tensor]:
    """Our backbone's timm weights from the initial state (the original's ViTs use timm's names)."""
    return {key[len("backbone.trunk."):]: value for key, value in init.items() if key.startswith("backbone.trunk.")}


def own_of(init: dict[str, Tensor], run: str) -> dict[str, Tensor]:
    """The method's own initial weights (prompts, keys, head) by our names."""
    prefix = f"{run}.init."
    return {key[len(prefix):]: value for key, value in init.items() if key.startswith(prefix)}


def run_l2p(original: dict[str, Any], run: str, init: dict[str, Tensor]) -> dict[str, Tensor]:
    """The original's L2P on ``run`` from our initial weights ``init``."""
    args, state, own = original_args(run), trunk_of(init), own_of(init, run)
    query_vit = original["L2PViT"](args=Namespace(), **vit_kwargs())
    prompted = original["L2PViT"](
        args=Namespace(), prompt_length=args.length, embedding_key=args.embedding_key, prompt_init=args.prompt_key_init,
        prompt_pool=True, prompt_key=True, pool_size=args.pool_size_l2p, top_k=args.top_k,
        batchwise_prompt=args.batchwise_prompt, prompt_key_init=args.prompt_key_init, head_type=args.head_type,
        use_prompt_mask=args.use_prompt_mask, **vit_kwargs())
    load_into(query_vit, state, ("head",))
    # the original's resize_pos_embed extends pretrained position embeddings with the class token's
    position, prompt_tokens = state["pos_embed"], args.length * args.top_k
    extended = torch.cat([position[:, :1].expand(-1, 1 + prompt_tokens, -1), position[:, 1:]], dim=1)
    load_into(prompted, {**state, "pos_embed": extended, "prompt.prompt": own["prompt"],
                         "prompt.prompt_key": own["prompt_key"], "head.weight": own["head.weight"],
                         "head.bias": own["head.bias"]}, ())
    net = frozen_pair(original["L2PModel"], query_vit, prompted)
    method = original_method(original["L2P"], net, args)

    def chosen(inputs: Tensor, task: int, train: bool) -> Tensor:
        with torch.no_grad():
            features = net.original_model(inputs)["pre_logits"]
            # the task_id L2PModel passes; its prompt mask then holds negative indices (the last prompts)
            index = net.model(inputs, task_id=-1, cls_features=features, train=train)["prompt_idx"]
            return index % args.pool_size_l2p

    return train_original(method, run, chosen)


def run_dualprompt(original: dict[str, Any], run: str, init: dict[str, Tensor]) -> dict[str, Tensor]:
    """The original's DualPrompt on ``run`` from our initial weights ``init``."""
    args, state, own = original_args(run), trunk_of(init), own_of(init, run)
    width, heads = RECIPE["backbone"]["model_args"]["embed_dim"], RECIPE["backbone"]["model_args"]["num_heads"]
    query_vit = original["DualViT"](args=args, **vit_kwargs())
    prompted = original["DualViT"](
        args=args, prompt_length=args.length, embedding_key=args.embedding_key, prompt_init=args.prompt_key_init,
        prompt_pool=True, prompt_key=True, pool_size=args.size, top_k=args.top_k, batchwise_prompt=args.batchwise_prompt,
        prompt_key_init=args.prompt_key_init, head_type="token", use_prompt_mask=True, use_g_prompt=True,
        g_prompt_length=args.g_prompt_length, g_prompt_layer_idx=args.g_prompt_layer_idx,
        use_prefix_tune_for_g_prompt=True, use_e_prompt=True, e_prompt_layer_idx=args.e_prompt_layer_idx,
        use_prefix_tune_for_e_prompt=True, same_key_value=False, **vit_kwargs())
    load_into(query_vit, state, ("head",))
    per_head = (heads, width // heads)  # ours keep each prompt token's heads flattened into the width
    load_into(prompted, {
        **state, "g_prompt": own["g_prompt"].reshape(*own["g_prompt"].shape[:-1], *per_head),
        "e_prompt.prompt": own["e_prompt"].reshape(*own["e_prompt"].shape[:-1], *per_head),
        "e_prompt.prompt_key": own["prompt_key"], "head.weight": own["head.weight"], "head.bias": own["head.bias"]}, ())
    net = frozen_pair(original["DualModel"], query_vit, prompted)
    method = original_method(original["DualPrompt"], net, args)

    def chosen(inputs: Tensor, task: int, train: bool) -> Tensor:
        with torch.no_grad():
            features = net.original_model(inputs)["pre_logits"]
            return net.model(inputs, task_id=task, cls_features=features, train=train)["prompt_idx"]

    return train_original(method, run, chosen)


def run_coda_prompt(original: dict[str, Any], run: str, init: dict[str, Tensor]) -> dict[str, Tensor]:
    """The original's CODA-Prompt on ``run`` from our initial weights ``init`` (its Model
    assembled at width 24)."""
    args, own = original_args(run), own_of(init, run)
    kwargs = {key: value for key, value in vit_kwargs().items() if key not in ("num_classes", "drop_rate")}
    vit = original["CodaViT"](args=Namespace(), **kwargs)
    load_into(vit, trunk_of(init), ("head",))
    width = RECIPE["backbone"]["model_args"]["embed_dim"]
    pool = original["CodaPool"](width, RECIPE["n_tasks"], [args.pool_size, args.prompt_len, args.ortho_mu], key_dim=width)
    names = sorted(name for name in own if name.startswith("e_"))
    with torch.no_grad():
        for name in names:
            getattr(pool, name).copy_(own[name])
    net = original["CodaModel"].__new__(original["CodaModel"])
    nn.Module.__init__(net)
    net.task_id, net.feat, net.prompt, net.last = 0, vit, pool, nn.Linear(width, RECIPE["n_classes"])
    net.last.load_state_dict({"weight": own["head.weight"], "bias": own["head.bias"]})
    method = original_method(original["CodaMethod"], net, args)
    reinitialised = {}

    def after_begin(task: int) -> None:  # the components the original re-drew for this task
        if task > 0:
            reinitialised.update({f"{run}.task{task}.{name}": getattr(pool, name).detach().clone() for name in names})

    return {**train_original(method, run, after_begin=after_begin), **reinitialised}


RUNNERS = {"l2p": run_l2p, "dualprompt": run_dualprompt, "coda_prompt": run_coda_prompt}


def original_side(root: Path, inits_path: Path, results_path: Path) -> None:
    """In the child process (timm as the original pins it): run every run of the recipe through
    the original from the initial weights in ``inits_path``; write the results to ``results_path``."""
    import timm
    from safetensors.torch import load_file, save_file

    original = import_original(root)
    inits = load_file(str(inits_path))
    results: dict[str, Tensor] = {}
    for run, spec in RECIPE["runs"].items():
        init = {key: value for key, value in inits.items() if key.startswith(("backbone.", f"{run}.init."))}
        results.update(RUNNERS[spec["method"]](original, run, init))
    save_file({key: value.contiguous() for key, value in results.items()}, str(results_path),
              metadata={"timm": timm.__version__, "torch": torch.__version__})


def main() -> None:
    """Build our initial weights here, run the original in a child process with the timm it pins,
    and write the reference file."""
    import argparse
    import os
    import subprocess
    import tempfile

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--original", type=Path, default=Path("/tmp/orig-mammoth"), help="the original's extracted tree")
    parser.add_argument("--original-path", default="/tmp/p_origdeps", help="prepended to the child's PYTHONPATH (timm 0.9.8)")
    parser.add_argument("--child", nargs=2, type=Path, metavar=("INITS", "RESULTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        original_side(args.original, *args.child)
        return
    import timm

    tensors: dict[str, Tensor] = {}
    for run in RECIPE["runs"]:
        for key, value in initial_state(run, build_ours(run)).items():
            assert key not in tensors or torch.equal(tensors[key], value), f"{key} differs between runs"
            tensors[key] = value.contiguous()
    with tempfile.TemporaryDirectory() as folder:
        inits, results = Path(folder) / "inits.safetensors", Path(folder) / "results.safetensors"
        save_file(tensors, str(inits))
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [args.original_path,
                                                                                 os.environ.get("PYTHONPATH")]))}
        subprocess.run([sys.executable, __file__, "--original", str(args.original), "--child", str(inits), str(results)],
                       env=environment, check=True)
        tensors.update(load_file(str(results)))
        with safe_open(str(results), "pt") as handle:
            original_versions = handle.metadata()
    versions = {"original_timm": original_versions["timm"], "ours_timm": timm.__version__, "torch": torch.__version__}
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(OUTPUT), metadata={"recipe": json.dumps(RECIPE), "versions": json.dumps(versions)})
    for key in sorted(key for key in tensors if key.endswith("losses")):
        print(key, [round(value, 6) for value in tensors[key].tolist()])
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size} bytes), {versions}")


if __name__ == "__main__":
    main()
