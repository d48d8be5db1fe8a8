"""``compile=true``: the backbone's forward compiled with :func:`torch.compile` (the original
Mammoth's ``--code_optimization 3``).

The backbone stays the module the method holds (``self.net``): :func:`compile_backbone` compiles
its ``__call__`` in place (``nn.Module.compile``), so its ``state_dict`` keys, the flat parameter
utilities and every ``returnt`` are those of the uncompiled network, a checkpoint of a compiled
run resumes uncompiled and the other way round, and a deep copy (a method's frozen teacher) is an
uncompiled network (torch leaves the compiled call out of a module's pickled state). Each
``returnt``, train/eval mode and gradient mode the method uses is its own graph, compiled on its
first call; a batch of a new size recompiles once, then shapes are dynamic.

What torch.compile would otherwise do silently is made explicit for the run's duration
(:func:`compiled_run`): hooks added to the backbone after it was compiled (a method's adapters)
recompile instead of being left out of the compiled graph, and a forward that reaches dynamo's
recompilation limit raises instead of falling back to the uncompiled network, so a run that
records ``compile=true`` ran compiled.

A method whose training does not go through the backbone's forward (the prompt methods, which run
a ViT block by block through the token interface) declares ``supports_compile = False`` and is
refused in one line (:func:`check_compile`), as is a device inductor cannot compile for.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from mammoth.errors import ConfigError

#: The torch.compile backend of ``compile=true``; the tests set ``"eager"`` (dynamo's tracing and
#: guards without inductor's code generation, which takes tens of seconds on a CPU).
BACKEND = "inductor"

#: How many graphs one compiled backbone may hold during a run (dynamo's default is 8): a method
#: may use up to 4 ``returnt`` values, in train and eval mode, with and without gradients, and
#: each once with a static and once with a dynamic batch size.
RECOMPILE_LIMIT = 64


def check_compile(compile: bool, name: str, method: type, device: torch.device | str) -> None:
    """With ``compile`` true: refuse, in one line and before anything is built, a method that does
    not run the backbone's forward (``supports_compile = False``) and a device that :data:`BACKEND`
    cannot compile for. Nothing without ``compile``. On several processes each compiles its own
    backbone (the gradients are reduced outside the compiled forward; the CPU BatchNorm
    synchronisation's collectives break its graph)."""
    if not compile:
        return
    if not getattr(method, "supports_compile", True):
        raise ConfigError(
            f"model={name} does not support compile=true (its training does not run the backbone through its "
            "forward, which is what compile=true compiles); allowed for it: compile=false"
        )
    if BACKEND == "inductor":
        _check_inductor(torch.device(device))


def _check_inductor(device: torch.device) -> None:
    """Inductor compiles CPU code with a C++ compiler and CUDA code with Triton (compute capability 7.0 or more)."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if major < 7:
            raise ConfigError(
                f"compile=true needs a GPU of compute capability 7.0 or more (Triton's), and {device} has "
                f"{major}.{minor}; allowed on it: compile=false"
            )
        try:
            import triton  # noqa: F401  # optional: inductor's GPU code generator, installed with CUDA torch
        except ImportError:
            raise ConfigError("compile=true on CUDA needs the triton package, which is not installed; "
                              "allowed: compile=false, or pip install triton") from None
        return
    from torch._inductor import cpp_builder  # lazy: inductor's compiler search (private; no public API finds it)

    try:
        cpp_builder.get_cpp_compiler()
    except Exception as error:  # InvalidCxxCompiler, or the search's own failure: no compiler to use
        raise ConfigError(
            f"compile=true on the CPU needs a C++ compiler, and torch's inductor found none ({type(error).__name__}); "
            "allowed: compile=false, or install g++ (or name one in the CXX environment variable)"
        ) from None


def compile_backbone(net: nn.Module) -> nn.Module:
    """``net`` with its ``__call__`` compiled in place by :func:`torch.compile` with :data:`BACKEND`
    (``nn.Module.compile``: the same module, the same ``state_dict`` keys); returns ``net``."""
    net.compile(backend=BACKEND)
    return net


def is_compiled(net: nn.Module) -> bool:
    """Whether ``net``'s ``__call__`` runs compiled (:func:`compile_backbone`)."""
    return getattr(net, "_compiled_call_impl", None) is not None


@contextlib.contextmanager
def compiled_run(compile: bool) -> Iterator[None]:
    """The block (a run's training and evaluation) with dynamo set as the module docstring says
    when ``compile`` is true: hooks added after compiling recompile, and reaching
    :data:`RECOMPILE_LIMIT` raises instead of running uncompiled. Nothing changes without ``compile``."""
    if not compile:
        yield
        return
    import torch._dynamo  # lazy: dynamo's settings (private module; torch.compile has no per-call ones)

    with torch._dynamo.config.patch(skip_nnmodule_hook_guards=False, recompile_limit=RECOMPILE_LIMIT,
                                    fail_on_recompile_limit_hit=True):
        yield
