"""Benchmark the flat parameter / gradient utilities of ``MammothBackbone``.

Times ``get_params`` / ``set_params`` / ``get_grads`` / ``set_grads`` (with and without a
reused ``out=`` buffer) and ``flat_grads`` side by side with torch's ``parameters_to_vector`` /
``vector_to_parameters``, with one ``dst.copy_(src)`` of the same number of bytes into a
preallocated tensor (the memory-bandwidth floor), and with the same calls on a copy of the
backbone whose flat storage is switched off (``flat_storage = False``: the gathering path, as
before the flat storage), then checks the targets:

- with ``out=`` (and for ``set_*``): at most 1.05x one ``copy_`` of the same floats between the
  same tensors (``buf.copy_(storage.buffer)`` for ``get_params(out=buf)``, ``storage.buffer.copy_(v)``
  for ``set_params(v)``, and so for the gradients), for backbones above 1M parameters. Against the
  same tensors, because two identical ``copy_`` calls between different 10-45 MB tensors differ by
  up to ~15 % on this CPU (which memory is warm in the cache): a floor on other tensors measures
  that, not the utility's overhead (about 6 us of checks per call);
- without ``out=``: not slower than torch's function (up to ``--tolerance`` of noise).

``--step`` adds one training step's gradient path, ``zero_grad(set_to_none=True)`` + backward +
``get_grads(out=)``, flat against gathering: the flat storage moves each new gradient into its
buffer during the backward, so the saving of ``get_grads`` is partly paid there.

Usage: ``python scripts/bench_flat.py [--quick] [--step] [--device auto|cpu|cuda]``.
Ratios are medians of per-repetition ratios (candidates run interleaved), so they are far
steadier than the absolute times, which are printed for reference only; "best-of vs copy" divides
the fastest samples, the figure that survives a machine shared with other jobs best.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from torch.nn.utils import parameters_to_vector, vector_to_parameters  # noqa: E402

import _timing  # noqa: E402
import mammoth  # noqa: E402

#: name -> (backbone config, input shape); ``timm-vit`` is timm's ViT-Tiny/16 at 224 px, random init.
BACKBONES = {
    "mnistmlp": ({"_name": "mnistmlp"}, (1, 28, 28)),
    "resnet18": ({"_name": "resnet18"}, (3, 32, 32)),
    "vit": ({"_name": "vit"}, (3, 32, 32)),
    "timm-vit": ({"_name": "timm", "name": "vit_tiny_patch16_224"}, (3, 224, 224)),
}
TARGET_MIN_PARAMS = 1_000_000
COPY_TARGET = 1.05

COPY = "copy_ floor (dst.copy_(src))"
P2V = "torch: parameters_to_vector(params)"
V2P = "torch: vector_to_parameters(v, params) [aliases]"
P2V_GRADS = "torch: parameters_to_vector(grads)"
V2P_GRADS = "torch: vector_to_parameters(v, grads) [aliases]"
SAME = " [copy_ of the same tensors]"
GATHER = " [gather]"
STEP = "zero_grad + backward + get_grads(out=buf)"

# operation -> (torch counterpart, target kind): "copy" = within COPY_TARGET of the copy,
# "torch" = not slower than the torch counterpart.
OPERATIONS = {
    "get_params(out=buf)": (P2V, "copy"),
    "get_params()": (P2V, "torch"),
    "set_params(v)": (V2P, "copy"),
    "get_grads(out=buf)": (P2V_GRADS, "copy"),
    "get_grads()": (P2V_GRADS, "torch"),
    "set_grads(v)": (V2P_GRADS, "copy"),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions: a smoke run, not a measurement")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--repetitions", type=int, default=None, help="samples per candidate (default 41, --quick 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    parser.add_argument("--step", action="store_true", help="also time zero_grad + backward + get_grads, flat and gathering")
    parser.add_argument(
        "--tolerance", type=float, default=0.05,
        help="noise allowance of the 'not slower than torch' target (default 0.05 = 5%%)",
    )
    return parser.parse_args()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    return torch.device(name)


def build(name: str, device: torch.device) -> mammoth.MammothBackbone:
    """The backbone ``name`` of :data:`BACKBONES` (seed 0) on ``device``, after one backward."""
    config, shape = BACKBONES[name]
    options = {key: value for key, value in config.items() if key != "_name"}
    torch.manual_seed(0)
    net = mammoth.build_backbone(config["_name"], num_classes=10, input_shape=shape, **options).to(device)
    net.train()
    net(torch.randn(2, *shape, device=device)).sum().backward()
    return net


def candidates_for(net: mammoth.MammothBackbone, shape: tuple, device: torch.device, step: bool) -> dict:
    """Every timed callable for one backbone: the flat ones, the gathering ones (a copy of the
    backbone with ``flat_storage = False``) and the references."""
    n = net.num_params()
    dtype = next(net.parameters()).dtype
    buf = torch.empty(n, dtype=dtype, device=device)
    values = net.get_params().clone()
    grads = net.get_grads().clone()
    src = torch.randn(n, device=device).to(dtype)
    dst = torch.empty_like(src)
    # vector_to_parameters makes the parameters alias the vector, so it gets its own copy
    # of the network (with its gradients) and leaves ``net`` as it was.
    other = copy.deepcopy(net)
    gathering = copy.deepcopy(net)
    gathering.flat_storage = False
    for mine, theirs, gathered in zip(net.parameters(), other.parameters(), gathering.parameters()):
        theirs.grad = None if mine.grad is None else mine.grad.clone()
        gathered.grad = None if mine.grad is None else mine.grad.clone()
    assert net.flatten_parameters().flat and not gathering.flatten_parameters().flat

    storage = net.flatten_parameters()
    storage.claim_grads(create_missing=False)
    assert storage.grad_buffer is not None, "the gradients are not stored flat"
    candidates = {
        COPY: lambda: dst.copy_(src),
        "get_params(out=buf)" + SAME: lambda: buf.copy_(storage.buffer),
        "set_params(v)" + SAME: lambda: storage.buffer.copy_(values),
        "get_grads(out=buf)" + SAME: lambda: buf.copy_(storage.grad_buffer),
        "set_grads(v)" + SAME: lambda: storage.grad_buffer.copy_(grads),
        "get_params(out=buf)": lambda: net.get_params(out=buf),
        "get_params(out=buf)" + GATHER: lambda: gathering.get_params(out=buf),
        "get_params()": lambda: net.get_params(),
        P2V: lambda: parameters_to_vector(net.parameters()),
        "set_params(v)": lambda: net.set_params(values),
        "set_params(v)" + GATHER: lambda: gathering.set_params(values),
        V2P: lambda: vector_to_parameters(values, other.parameters()),
        "get_grads(out=buf)": lambda: net.get_grads(out=buf),
        "get_grads(out=buf)" + GATHER: lambda: gathering.get_grads(out=buf),
        "get_grads()": lambda: net.get_grads(),
        "flat_grads() [no copy]": lambda: net.flat_grads(),
        P2V_GRADS: lambda: parameters_to_vector(p.grad for p in net.parameters()),
        "set_grads(v)": lambda: net.set_grads(grads),
        "set_grads(v)" + GATHER: lambda: gathering.set_grads(grads),
        V2P_GRADS: lambda: vector_to_parameters(grads, (p.grad for p in other.parameters())),
    }
    if step:
        x = torch.randn(2, *shape, device=device)

        def training_step(model: mammoth.MammothBackbone) -> None:
            model.zero_grad(set_to_none=True)
            model(x).sum().backward()
            model.get_grads(out=buf)

        candidates[STEP] = lambda: training_step(net)
        candidates[STEP + GATHER] = lambda: training_step(gathering)
    return candidates


def paired_ratio(samples: dict[str, list[float]], name: str, reference: str) -> float:
    """Median over repetitions of ``name / reference`` within the same repetition."""
    return statistics.median(a / b for a, b in zip(samples[name], samples[reference]))


def main() -> int:
    args = parse_args()
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    repetitions = args.repetitions or (5 if args.quick else 41)
    min_sample_s = 0.002 if args.quick else 0.02
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""

    _timing.print_header(
        "Flat parameter / gradient utilities",
        {
            "torch": torch.__version__,
            "device": f"{device}{gpu}",
            "torch threads": torch.get_num_threads(),
            "repetitions": f"{repetitions} interleaved, >= {min_sample_s * 1e3:g} ms per sample"
            + (" (--quick: smoke run, numbers not meaningful)" if args.quick else ""),
            "ratios": "median of per-repetition ratios; median ms for reference only",
        },
    )

    rows, verdicts, noisy = [], [], []
    for name in args.backbones:
        net = build(name, device)
        missing = sum(p.grad is None for p in net.parameters())
        if missing:
            print(f"note: {name}: {missing} parameter(s) got no gradient (they read as zeros)")
        n = net.num_params()
        samples = _timing.interleaved(
            candidates_for(net, BACKBONES[name][1], device, args.step), repetitions=repetitions, warmup=2, min_sample_s=min_sample_s, sync=sync
        )
        if _timing.spread(samples[COPY]) > 0.25:
            noisy.append(f"{name} (copy IQR/median {_timing.spread(samples[COPY]):.2f})")
        for operation, values in samples.items():
            vs_copy = paired_ratio(samples, operation, COPY)
            best_vs_copy = min(values) / min(samples[COPY])
            torch_ref = OPERATIONS.get(operation, (None, None))[0]
            vs_torch = paired_ratio(samples, operation, torch_ref) if torch_ref else None
            vs_gather = paired_ratio(samples, operation, operation + GATHER) if operation + GATHER in samples else None
            vs_same = paired_ratio(samples, operation, operation + SAME) if operation + SAME in samples else None
            rows.append([
                name, f"{n:,}", operation, f"{statistics.median(values) * 1e3:.3f}",
                f"{vs_same:.2f}x" if vs_same is not None else "-",
                f"{vs_copy:.2f}x", f"{best_vs_copy:.2f}x", f"{vs_torch:.2f}x" if vs_torch is not None else "-",
                f"{vs_gather:.2f}x" if vs_gather is not None else "-",
            ])
            if operation in OPERATIONS and n > TARGET_MIN_PARAMS:
                kind = OPERATIONS[operation][1]
                if kind == "copy":
                    text = (f"vs the same copy_ {vs_same:.3f}x <= {COPY_TARGET}x (vs a copy_ of other tensors "
                            f"{vs_copy:.3f}x, best-of {best_vs_copy:.3f}x)")
                    verdicts.append((name, operation, text, vs_same <= COPY_TARGET))
                else:
                    limit = 1.0 + args.tolerance
                    verdicts.append((name, operation, f"vs torch {vs_torch:.3f}x <= {limit:.2f}x", vs_torch <= limit))

    print(_timing.markdown_table(
        ["backbone", "params", "operation", "median ms", "ratio vs the same copy_", "ratio vs copy", "best-of vs copy",
         "ratio vs torch's function",
         "ratio vs gathering"], rows
    ))
    print("\nTargets (backbones above 1M parameters):\n")
    for name, operation, text, ok in verdicts:
        print(f"- {'PASS' if ok else 'MISS'}  {name:9s} {operation:20s} {text}")
    if noisy:
        print(
            f"\nWARNING: noisy timings for {', '.join(noisy)}; load average now {_timing.load_average()}. "
            "Other processes compete for the cores (and stall torch's worker threads): rerun on an idle "
            "machine" + (", or with --threads 1." if torch.get_num_threads() > 1 else ".")
        )
    misses = sum(not ok for *_, ok in verdicts)
    suffix = " (--quick: indicative only)" if args.quick else ""
    print(f"\n{len(verdicts) - misses}/{len(verdicts)} targets met{suffix}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
