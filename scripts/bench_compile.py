"""Step time with ``compile=true`` against without (issue 24 §5), measured side by side in one run.

Every candidate is one training step of the harness (``model.observe`` of ``model=sgd`` on one
fixed batch, inside the context's autocast, as ``TrainingContext.fit`` runs it) of a freshly built
model on a synthetic 10-class benchmark (random images: the step time does not depend on the
pixels), for ``mnistmlp`` (1x28x28), ``resnet18`` (3x32x32, CIFAR stem) and the built-in ``vit``
(3x32x32, its defaults). The compiled candidate's backbone is compiled as ``compile=true`` compiles
it (``mammoth.engine.compiled``, inductor, inside ``compiled_run``).

The compile time (the compiled step's first call: dynamo's tracing and inductor's code generation
of the forward and the backward) is reported on its own and left out of the step times; so is the
time of the first ``returnt="features"`` call in eval mode without gradients (one more graph, as
icarl's or ranpac's feature pass compiles). The step times are the medians over the rounds and the
ratio is the median of the per-round ratios compiled / uncompiled. Absolute times drift with the
machine's load; compare ratios.

Usage: ``python scripts/bench_compile.py [--rounds N] [--batch N] [--threads N] [--backbones mnistmlp,resnet18,vit]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch._dynamo  # noqa: E402
from torch._dynamo.utils import counters  # noqa: E402

import _timing  # noqa: E402
from mammoth.backbones import build_backbone  # noqa: E402
from mammoth.datasets.base import ContinualDataset  # noqa: E402
from mammoth.engine import compiled  # noqa: E402
from mammoth.engine.context import build_context  # noqa: E402
from mammoth.models import build_model  # noqa: E402

SEED = 0
#: backbone -> (registered name, arguments, input shape)
BACKBONES = {
    "mnistmlp": ("mnistmlp", {}, (1, 28, 28)),
    "resnet18": ("resnet18", {"stem": "cifar"}, (3, 32, 32)),
    "vit": ("vit", {}, (3, 32, 32)),
}


def synthetic(shape: tuple[int, int, int], batch: int) -> ContinualDataset:
    """2 class-IL tasks of 5 classes, ``2 * batch`` random uint8 images of ``shape`` per task (not registered)."""

    class Synthetic(ContinualDataset):
        name = "synthetic"
        setting = "class-il"
        default_n_tasks = 2
        n_classes_per_task = 5
        input_shape = shape
        mean = (0.5,) * shape[0]
        std = (0.25,) * shape[0]
        default_backbone = "mnistmlp"
        default_batch_size = batch
        default_n_epochs = 1

        def load_source(self):
            generator = torch.Generator().manual_seed(SEED)
            labels = torch.arange(10).repeat_interleave(max(1, (2 * batch) // 5))
            images = torch.randint(0, 256, (len(labels), *shape), dtype=torch.uint8, generator=generator)
            test_labels = torch.arange(10).repeat(2)
            test_images = torch.randint(0, 256, (len(test_labels), *shape), dtype=torch.uint8, generator=generator)
            return images, labels, test_images, test_labels

    return Synthetic({"batch_size": batch})


def candidate(backbone: str, batch: int, compile: bool):
    """``(step, net, batch)``: the harness's sgd step on a fresh ``backbone``, compiled or not."""
    name, arguments, shape = BACKBONES[backbone]
    dataset = synthetic(shape, batch)
    torch.manual_seed(SEED)
    net = build_backbone(name, num_classes=dataset.n_classes, input_shape=dataset.input_shape, **arguments)
    model = build_model("sgd", net=net, dataset=dataset, lr=0.01)
    if compile:
        compiled.compile_backbone(model.net)
    context = build_context(dataset, "cpu", torch.Generator().manual_seed(SEED))
    step, data = _timing.observe_step(model, context, dataset.task_source(0), batch)
    return step, model.net, data.inputs


def first_call(function) -> float:
    """Seconds of one call of ``function`` (a compiled one's first call: its compile time)."""
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--backbones", default="mnistmlp,resnet18,vit")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [name.strip() for name in args.backbones.split(",") if name.strip()]
    _timing.print_header("Step time with compile=true against without", {
        "step": f"model=sgd's observe, batch {args.batch}, fp32", "backend": compiled.BACKEND,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "rounds": args.rounds})
    rows = []
    with compiled.compiled_run(True):
        for backbone in names:
            torch._dynamo.reset()
            counters.clear()
            plain, _, _ = candidate(backbone, args.batch, compile=False)
            fast, net, inputs = candidate(backbone, args.batch, compile=True)
            compile_seconds = first_call(fast)
            graphs = counters["stats"]["unique_graphs"]
            samples = _timing.interleaved({"plain": plain, "compiled": fast}, repetitions=args.rounds, warmup=1)
            with torch.no_grad():
                net.eval()
                features_seconds = first_call(lambda: net(inputs, returnt="features"))
                net.train()
            ratio = statistics.median(c / p for c, p in zip(samples["compiled"], samples["plain"]))
            rows.append([backbone, f"{statistics.median(samples['plain']) * 1e3:.1f}",
                         f"{statistics.median(samples['compiled']) * 1e3:.1f}", f"{ratio:.2f}x",
                         f"{compile_seconds:.1f}", str(graphs), f"{features_seconds:.1f}"])
            print(f"... {backbone} done", file=sys.stderr, flush=True)
    print(_timing.markdown_table(
        ["backbone", "ms/step", "ms/step compiled", "ratio compiled/plain", "compile s (first step)",
         "graphs", "features graph s"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
