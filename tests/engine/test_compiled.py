"""``compile=true`` (mammoth.engine.compiled): the backbone stays the module the method holds, with
the same outputs for every ``returnt``, the same state_dict keys and flat vectors; a run compiled
and one not give the same results and resume each other; what cannot be compiled is refused in one
line. In-process with torch.compile's ``eager`` backend (dynamo's tracing and guards, the same
arithmetic, so results are bit-exact); the one test with inductor's code generation is in the
second suite (test_inductor_compiles_the_backbone)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

import composing
import mammoth
from mammoth.backbones import build_backbone
from mammoth.backbones.base import RETURNT_VALUES
from mammoth.engine import compiled
from mammoth.engine.checkpoint import read_checkpoint
from mammoth.engine.compiled import check_compile, compile_backbone, compiled_run, is_compiled
from mammoth.errors import ConfigError
from mammoth.files import CHECKPOINT_NAME
from mammoth.models import MODELS
from mammoth.models.utils import Frozen

#: The methods that train through the token interface, block by block: compile=true refuses them.
REFUSING = ("coda-prompt", "dualprompt", "l2p")


@pytest.fixture
def eager(monkeypatch: pytest.MonkeyPatch) -> None:
    """compile=true with torch.compile's ``eager`` backend, from fresh dynamo caches and counters."""
    monkeypatch.setattr(compiled, "BACKEND", "eager")
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def graphs() -> int:
    """How many graphs dynamo compiled since the counters were cleared."""
    return counters["stats"]["unique_graphs"]


def small_backbones() -> dict[str, torch.nn.Module]:
    """mnistmlp, resnet18 and the built-in vit, each small, with a matching input batch."""
    torch.manual_seed(0)
    return {
        "mnistmlp": (build_backbone("mnistmlp", num_classes=5, input_shape=(1, 8, 8), hidden_sizes=[16]), (4, 1, 8, 8)),
        "resnet18": (build_backbone("resnet", num_classes=5, input_shape=(3, 8, 8), width=4), (4, 3, 8, 8)),
        "vit": (build_backbone("vit", num_classes=5, input_shape=(3, 8, 8), patch_size=4, width=12, depth=1, heads=2),
                (4, 3, 8, 8)),
    }


def _equal(a, b) -> bool:
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return torch.equal(a, b)


@pytest.mark.parametrize("name", [
    "mnistmlp",
    # dynamo traces resnet18 and the vit in ~10 s each on 2 cores: the second suite
    pytest.param("resnet18", marks=pytest.mark.distributed), pytest.param("vit", marks=pytest.mark.distributed),
])
def test_a_compiled_backbone_is_the_same_module_with_the_same_outputs_keys_and_flat_vectors(eager, name):
    net, shape = small_backbones()[name]
    reference = Frozen(net).net.train()  # an uncompiled deep copy
    keys = list(net.state_dict())
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with compiled_run(True):
        assert compile_backbone(net) is net and is_compiled(net)
        for returnt in RETURNT_VALUES:
            assert _equal(net(x, returnt=returnt), reference(x, returnt=returnt)), returnt
        assert graphs() == len(RETURNT_VALUES)  # one graph per returnt, then they are reused
        for returnt in RETURNT_VALUES:
            net(x, returnt=returnt)
        assert graphs() == len(RETURNT_VALUES)
    assert list(net.state_dict()) == keys and not any("_orig_mod" in key for key in net.state_dict())
    assert torch.equal(net.get_params(), reference.get_params())
    net.set_params(torch.zeros(net.num_params()))  # the flat utilities reach the compiled module's parameters
    with compiled_run(True):
        assert torch.equal(net(x), torch.zeros(shape[0], 5))  # every weight 0: every network outputs 0


def test_a_compiled_forward_trains_like_the_uncompiled_one(eager):
    net, shape = small_backbones()["mnistmlp"]
    reference = Frozen(net).net.train().requires_grad_(True)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    with compiled_run(True):
        compile_backbone(net)
        net(x).square().sum().backward()
    reference(x).square().sum().backward()
    assert torch.equal(net.get_grads(), reference.get_grads())


def test_a_deep_copy_is_uncompiled_and_computes_with_its_own_weights(eager):
    net, shape = small_backbones()["mnistmlp"]
    compile_backbone(net)
    frozen = Frozen(net)  # what der, lwf, xder ... keep as a teacher
    x = torch.randn(shape)
    before = frozen(x)
    with torch.no_grad():
        net.set_params(net.get_params() + 1.0)
    assert not is_compiled(frozen.net) and torch.equal(frozen(x), before)


def test_a_hook_added_after_compiling_runs_in_a_compiled_run(eager):
    net, shape = small_backbones()["mnistmlp"]
    x = torch.randn(shape)
    calls = []
    with compiled_run(True):
        compile_backbone(net)
        plain = net(x)
        handle = next(iter(net.stages)).register_forward_hook(lambda module, inputs, output: calls.append(1) or output * 0)
        hooked = net(x)
        handle.remove()
        again = net(x)
    assert calls == [1] and not torch.equal(hooked, plain) and torch.equal(again, plain)


def test_reaching_the_recompile_limit_raises_instead_of_running_uncompiled(eager, monkeypatch):
    monkeypatch.setattr(compiled, "RECOMPILE_LIMIT", 2)
    net, shape = small_backbones()["mnistmlp"]
    x = torch.randn(shape)
    with compiled_run(True):
        compile_backbone(net)
        net(x, returnt="out"), net(x, returnt="features")
        with pytest.raises(Exception, match="(?i)recompil"):
            net(x, returnt="both")


def test_bf16_autocast_reaches_the_compiled_forward(eager):
    net, shape = small_backbones()["mnistmlp"]
    reference = Frozen(net).net
    x = torch.randn(shape)
    with compiled_run(True), torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
        compile_backbone(net)
        out = net.eval()(x)
        expected = reference(x)
    assert out.dtype == torch.bfloat16 and torch.equal(out, expected)


# ---- the refusals ----


@pytest.mark.parametrize("name", REFUSING)
def test_methods_that_train_through_the_tokens_refuse_compile_in_one_line(name):
    with pytest.raises(ConfigError) as error:
        check_compile(True, name, MODELS.get(name).target, "cpu")
    assert str(error.value) == (
        f"model={name} does not support compile=true (its training does not run the backbone through its forward, "
        "which is what compile=true compiles); allowed for it: compile=false")
    check_compile(False, name, MODELS.get(name).target, "cpu")


def test_the_refusing_methods_are_those_that_run_the_backbone_block_by_block():
    import inspect

    for name in MODELS.names():
        method = MODELS.get(name).target
        source = "".join(inspect.getsource(cls) for cls in method.__mro__ if cls.__module__.startswith("mammoth.models"))
        assert getattr(method, "supports_compile", True) == ("run_block(" not in source and "token_features(" not in source), name
    assert sorted(name for name in MODELS.names() if not MODELS.get(name).target.supports_compile) == list(REFUSING)


def test_a_cpu_without_a_cpp_compiler_is_refused_in_one_line(monkeypatch):
    from torch._inductor import config as inductor_config

    monkeypatch.setattr(inductor_config.cpp, "cxx", ("no-such-c++-compiler",))
    with pytest.raises(ConfigError) as error:
        check_compile(True, "sgd", MODELS.get("sgd").target, "cpu")
    assert str(error.value).startswith("compile=true on the CPU needs a C++ compiler, and torch's inductor found none")
    assert "\n" not in str(error.value)


def test_the_docs_list_the_methods_that_refuse_compile():
    from docs_pages import page

    text = " ".join(page("backbones.md").split())
    assert f"refused in one line by the prompt methods ({', '.join(REFUSING)})" in text


# ---- through mammoth.run ----


def _run(output_dir: Path, *overrides: str) -> dict:
    mammoth.run(composing.compose_run(output_dir, "model=er", "model.buffer_size=50", "dataset.n_epochs=1",
                                      "dataset.n_tasks=2", "threads=1", *overrides, seed=3))
    return json.loads((output_dir / "results.json").read_text())


@pytest.fixture(scope="module")
def uncompiled(tmp_path_factory) -> tuple[dict, Path]:
    """The results and the run directory of the uncompiled run that the compiled ones are compared with."""
    directory = tmp_path_factory.mktemp("uncompiled")
    return _run(directory), directory


def _stopped_after_task_1(output_dir: Path, compile: str) -> None:
    mammoth.run(composing.compose_run(output_dir, "model=er", "model.buffer_size=50", "dataset.n_epochs=1",
                                      "dataset.n_tasks=2", "threads=1", f"compile={compile}", "stop_after_task=1", seed=3))
    assert not (output_dir / "results.json").exists()


def test_a_compiled_run_checkpoints_the_uncompiled_keys_and_resumes_uncompiled(eager, uncompiled, tmp_path):
    expected, expected_dir = uncompiled
    _stopped_after_task_1(tmp_path, "true")
    assert graphs() >= 2  # the training forward, and evaluation's (eval mode, no gradients)
    keys = list(read_checkpoint(tmp_path / CHECKPOINT_NAME)["model"])
    assert keys == list(read_checkpoint(expected_dir / CHECKPOINT_NAME)["model"]) and "net.classifier.weight" in keys
    results = _run(tmp_path, "compile=false", "resume=true")
    assert results["config"]["compile"] is False  # what the last process ran (a resume may change it, as threads)
    assert results["class_il"] == expected["class_il"] and results["task_il"] == expected["task_il"]


def test_an_uncompiled_run_resumes_compiled_with_the_same_results(eager, uncompiled, tmp_path):
    expected, _ = uncompiled
    _stopped_after_task_1(tmp_path, "false")
    assert graphs() == 0
    results = _run(tmp_path, "compile=true", "resume=true")
    assert graphs() >= 2 and results["config"]["compile"] is True and expected["config"]["compile"] is False
    assert results["class_il"] == expected["class_il"] and results["task_il"] == expected["task_il"]


def test_a_refused_method_stops_before_training(eager, tmp_path):
    with pytest.raises(ConfigError, match="^model=l2p does not support compile=true"):
        mammoth.run(composing.compose_run(tmp_path, "model=l2p", "backbone=vit", "compile=true"))
    assert graphs() == 0 and not (tmp_path / "results.json").exists()


# ---- two processes (the second suite: torchrun with gloo) ----

#: A launcher for torchrun: python -m mammoth with torch.compile's eager backend.
LAUNCHER = """
import sys
from mammoth.engine import compiled
compiled.BACKEND = "eager"
from mammoth.app.cli import main
sys.argv = ["mammoth", *sys.argv[1:]]
main()
"""


@pytest.mark.distributed
def test_two_processes_train_compiled_as_uncompiled(tmp_path):
    """er on a ResNet (its BatchNorm synchronised over the ranks, whose collectives break the
    compiled graph) on 2 gloo processes: the same results compiled and not."""
    import os
    import socket
    import subprocess
    import sys

    (tmp_path / "launch.py").write_text(LAUNCHER)
    results = {}
    for compile in ("false", "true"):
        run_dir = tmp_path / f"run-{compile}"
        with socket.socket() as probe:  # a free port for the rendezvous
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}", "launch.py",
                   "model=er", "model.buffer_size=50", "dataset.n_epochs=1", "dataset.n_tasks=2", "threads=1",
                   "dataset.fitting_mode=iters", "dataset.n_iters=4",
                   "backbone=resnet", "backbone.width=4", f"compile={compile}", f"hydra.run.dir={run_dir}"]
        environment = {**os.environ, "OMP_NUM_THREADS": "1",
                       "PYTHONPATH": os.pathsep.join([str(Path(mammoth.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        results[compile] = json.loads((run_dir / "results.json").read_text())
    assert results["true"]["config"]["compile"] is True
    assert results["true"]["class_il"] == results["false"]["class_il"]


# ---- inductor (the second suite: its C++ code generation takes ~20 s on a CPU) ----


@pytest.mark.distributed
def test_inductor_compiles_the_backbone():
    net, shape = small_backbones()["mnistmlp"]
    reference = Frozen(net).net.train().requires_grad_(True)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(4))
    torch._dynamo.reset()
    with compiled_run(True):
        check_compile(True, "sgd", MODELS.get("sgd").target, "cpu")
        compile_backbone(net)
        out = net(x)
        out.square().sum().backward()
    reference(x).square().sum().backward()
    # inductor fuses and reorders float32 arithmetic: equal to rounding (a few ulps of values near 1)
    assert torch.allclose(out, reference(x), rtol=1e-5, atol=1e-6)
    assert torch.allclose(net.get_grads(), reference.get_grads(), rtol=1e-4, atol=1e-6)
    assert list(net.state_dict()) == list(reference.state_dict())
