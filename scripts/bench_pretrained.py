"""Step time on the pretrained-backbone path (issue 14 §4): prompt tuning against full fine-tuning,
and the precision and memory-layout options, measured side by side in one run.

Every candidate is one training step (``model.observe`` on the same batch of 224-pixel images,
inside the context's autocast, as ``TrainingContext.fit`` runs it) of a freshly built model at
the start of task 1 of a synthetic 2-task, 20-class benchmark (random uint8 images: the step
time does not depend on the pixels):

- ``finetune``: ``model=sgd`` on ``backbone=timm`` ``vit_tiny_patch16_224`` (random init), every
  weight trained: full fine-tuning;
- ``l2p``: ``model=l2p`` on the same backbone: the ViT frozen, a query pass without prompts and
  a prompted pass, only prompts, keys and the head trained;
- the same two under ``precision=bf16`` (autocast; on a CPU without bf16 matrix units it is
  slower, on recent CPUs and GPUs faster);
- ``resnet18`` (``model=sgd``, ImageNet stem) in the default layout and with ``channels_last``.

The table gives the median time per step over the rounds and the ratio to ``finetune`` fp32
(medians of the per-round ratios). Absolute times drift with the machine's load; compare ratios.

Usage: ``python scripts/bench_pretrained.py [--rounds N] [--batch N] [--threads N]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import _timing  # noqa: E402
from mammoth.backbones import build_backbone  # noqa: E402
from mammoth.datasets.base import ContinualDataset  # noqa: E402
from mammoth.engine.context import build_context  # noqa: E402
from mammoth.models import build_model  # noqa: E402

SEED = 0
IMAGE = 224


class SyntheticImages(ContinualDataset):
    """2 class-IL tasks of 10 classes, 8 random 224-pixel images per class (not registered)."""

    name = "synthetic-224"
    setting = "class-il"
    default_n_tasks = 2
    n_classes_per_task = 10
    input_shape = (3, IMAGE, IMAGE)
    mean = (0.485, 0.456, 0.406)
    std = (0.229, 0.224, 0.225)
    default_backbone = "timm"
    default_batch_size = 16
    default_n_epochs = 1

    def load_source(self):
        generator = torch.Generator().manual_seed(SEED)
        labels = torch.arange(20).repeat_interleave(8)
        images = torch.randint(0, 256, (len(labels), *self.input_shape), dtype=torch.uint8, generator=generator)
        return images, labels, images[::8].clone(), labels[::8].clone()


def candidate(dataset: SyntheticImages, method: str, backbone: str, precision: str = "fp32",
              channels_last: bool = False):
    """A step function: ``method`` on a fresh ``backbone`` at the start of task 1, one fixed batch."""
    torch.manual_seed(SEED)
    if backbone == "vit":
        net = build_backbone("timm", name="vit_tiny_patch16_224", num_classes=dataset.n_classes,
                             input_shape=dataset.input_shape)
    else:
        net = build_backbone("resnet18", num_classes=dataset.n_classes, input_shape=dataset.input_shape, stem="imagenet")
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    model = build_model(method, net=net, dataset=dataset)
    context = build_context(dataset, "cpu", torch.Generator().manual_seed(SEED), precision=precision,
                            channels_last=channels_last)
    model.attach(context)
    model.begin_task(0)
    model.training_data(0, dataset.task_source(0))
    batch = next(context.batches(dataset.task_source(0), dataset.config.batch_size))
    model.train()

    def step() -> float:
        with context.autocast():
            return model.observe(batch.inputs, batch.labels, batch.not_aug_inputs)

    return step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = SyntheticImages({"batch_size": args.batch})
    candidates = {
        "finetune fp32": candidate(dataset, "sgd", "vit"),
        "l2p fp32": candidate(dataset, "l2p", "vit"),
        "finetune bf16": candidate(dataset, "sgd", "vit", precision="bf16"),
        "l2p bf16": candidate(dataset, "l2p", "vit", precision="bf16"),
        "resnet18 fp32": candidate(dataset, "sgd", "resnet"),
        "resnet18 channels_last": candidate(dataset, "sgd", "resnet", channels_last=True),
    }
    _timing.print_header("Step time on the pretrained-backbone path", {
        "backbone": "timm vit_tiny_patch16_224 (random init) and resnet18 (ImageNet stem), 224x224 images",
        "batch": args.batch, "threads": torch.get_num_threads(), "rounds": args.rounds})
    samples = _timing.interleaved(candidates, repetitions=args.rounds, warmup=1)
    reference = samples["finetune fp32"]
    rows = []
    for name, values in samples.items():
        ratio = statistics.median(value / base for value, base in zip(values, reference))
        rows.append([name, f"{statistics.median(values) * 1e3:.0f}", f"{ratio:.2f}x"])
    print(_timing.markdown_table(["step", "median ms/step", "ratio to finetune fp32"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
