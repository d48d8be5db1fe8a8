"""Benchmark mammoth's training harness against a plain PyTorch loop doing the same work.

One epoch of ``sgd`` and of ``er`` (buffer_size 200) with ``mnistmlp`` on ``seq-digits``,
over ALL 5 tasks' training data (1,438 examples, concatenated; batch 32 = the dataset's
default, 45 steps), run two ways:

- harness: the harness's loop (``TrainingContext.fit`` of ``model.observe``, batches read from an
  ``InMemorySource``) with a model from ``mammoth.models.build_model``;
- plain: a hand-written loop with the same data tensors, batch size, shuffling
  (``torch.randperm`` with a generator of the same seed), uint8 -> float / 255 and
  normalisation, the same ``torch.optim.SGD`` and lr, one cross-entropy per step and
  ``loss.item()``; for ER the same replay (a sampled replay minibatch of the batch's size
  concatenated to the batch, one CE) from a plain reservoir buffer written here.

Every round runs every variant once (rotating the order), each with a fresh network from
the same seed; only the epoch is timed. The target is harness/plain <= 1.10x (median of
the per-round ratios). The plain SGD loop must end with the same weights as the harness.

Then the replay buffer's cost per step (``ReplayBuffer.add`` + ``sample`` with the train
transform, as ``er`` does it, on a buffer past capacity) against the training step itself
(forward + backward + optimizer step on the 32 + 32 concatenated batch), as a ratio.

Last, the step time of every registered method as a ratio to ``er``'s: each method trains
task 0 of seq-digits for one epoch (so replay, penalties and frozen copies are active), then
``context.fit`` on task 1 is timed, every method once per round in a rotating order; the ratio
is the median over rounds of (method / er) in the same round. Only the steps are timed, not
the work some methods do between tasks (Fisher, herding, BiC's fit, GDumb's final training).

Usage: ``python scripts/bench_train.py [--quick] [--rounds N] [--threads N]``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import _timing  # noqa: E402
from mammoth.backbones import build_backbone  # noqa: E402
from mammoth.models.buffer import ReplayBuffer  # noqa: E402
from mammoth.datasets import build_dataset  # noqa: E402
from mammoth.models import build_model  # noqa: E402
from mammoth.datasets.source import InMemorySource  # noqa: E402
from mammoth.engine.context import build_context  # noqa: E402
from mammoth.engine.loop import train_task  # noqa: E402

TARGET = 1.10
BUFFER_SIZE = 200
SEED = 0
DEVICE = torch.device("cpu")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds: a smoke run, not a measurement")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 15, --quick 3)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads(N) (default: leave torch's default, printed)")
    return parser.parse_args()


# ---- data and fresh networks ----


def load_data():
    dataset = build_dataset({"name": "seq-digits", "n_epochs": 1}, seed=SEED)  # one epoch per training
    train_x, train_y, _, _ = dataset.source()  # uint8 images; every task's examples, task after task:
    order = torch.argsort(train_y // dataset.n_classes_per_task, stable=True)
    return dataset, train_x[order], train_y[order]


def fresh_net(dataset):
    torch.manual_seed(SEED)
    return build_backbone("mnistmlp", num_classes=dataset.n_classes, input_shape=dataset.input_shape)


def harness_model(name, dataset):
    net = fresh_net(dataset)
    model = build_model(name, net=net, dataset=dataset, **({"buffer_size": BUFFER_SIZE} if name == "er" else {}))
    model.begin_task(0)
    return model


def harness_epoch(model, dataset, x, y, generator):
    """One epoch of the harness's loop over ``(x, y)``: ``context.fit`` of ``model.observe``, as a callable."""
    context = build_context(dataset, DEVICE, generator)
    model.attach(context)
    source = InMemorySource(x, y)
    return lambda: context.fit(lambda batch: model.observe(batch.inputs, batch.labels, batch.not_aug_inputs),
                               source, 1, "benchmark", end_epoch=model.end_epoch)


# ---- the plain loop ----


class PlainReservoir:
    """A plain reservoir buffer (algorithm R): per-item slot draws in Python, one indexed write."""

    def __init__(self, capacity: int, seed: int) -> None:
        self.capacity, self.seen = capacity, 0
        self.rng = random.Random(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.x = self.y = None

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.x is None:
            self.x = torch.zeros((self.capacity, *x.shape[1:]), dtype=x.dtype)
            self.y = torch.zeros(self.capacity, dtype=y.dtype)
        slots = {}
        for i in range(len(y)):
            position = self.seen + i
            slot = position if position < self.capacity else self.rng.randint(0, position)
            if slot < self.capacity:
                slots[slot] = i  # a later item of the batch overwrites an earlier one
        self.seen += len(y)
        if slots:
            targets = torch.tensor(list(slots.keys()))
            sources = torch.tensor(list(slots.values()))
            self.x[targets] = x.detach()[sources]
            self.y[targets] = y[sources]

    def sample(self, size: int):
        filled = min(self.seen, self.capacity)
        index = torch.randperm(filled, generator=self.generator)[:size]
        return self.x[index], self.y[index]


class PlainTrainer:
    """The plain loop's state: network, optimizer, normalisation constants, optional buffer."""

    def __init__(self, dataset, lr: float, replay: bool) -> None:
        self.net = fresh_net(dataset)
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=lr)
        self.mean = torch.tensor(dataset.mean).view(1, -1, 1, 1)
        self.std = torch.tensor(dataset.std).view(1, -1, 1, 1)
        self.buffer = PlainReservoir(BUFFER_SIZE, SEED) if replay else None

    def step(self, inputs, labels) -> float:
        loss = F.cross_entropy(self.net(inputs), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def epoch(self, x, y, batch_size: int, generator: torch.Generator) -> float:
        total = 0.0
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), batch_size):
            index = order[start : start + batch_size]
            raw = x[index].float().div_(255)
            inputs, labels = (raw - self.mean) / self.std, y[index]
            if self.buffer is not None and self.buffer.seen:
                replay_x, replay_y = self.buffer.sample(len(labels))
                inputs = torch.cat([inputs, (replay_x - self.mean) / self.std])
                labels = torch.cat([labels, replay_y])
            total += self.step(inputs, labels)
            if self.buffer is not None:
                self.buffer.add(raw, y[index])
        return total / -(-len(y) // batch_size)


# ---- timing ----


def epoch_rounds(dataset, x, y, rounds: int) -> dict[str, list[float]]:
    """``{variant: [seconds per epoch, one per round]}``; each round runs every variant once."""
    import time

    batch_size = dataset.config.batch_size

    def harness(name):
        model = harness_model(name, dataset)
        return harness_epoch(model, dataset, x, y, torch.Generator().manual_seed(SEED)), model

    lr = harness_model("sgd", dataset).lr  # the models' default lr (model.lr)

    def plain(name):
        trainer = PlainTrainer(dataset, lr, replay=name == "er")
        generator = torch.Generator().manual_seed(SEED)
        return lambda: trainer.epoch(x, y, batch_size, generator), trainer

    setups = {f"{kind} {name}": (lambda k=kind, n=name: (harness if k == "harness" else plain)(n))
              for name in ("sgd", "er") for kind in ("harness", "plain")}
    names = list(setups)
    for name in names:  # warm-up: one epoch of each
        setups[name]()[0]()
    samples = {name: [] for name in names}
    for repetition in range(rounds):
        shift = repetition % len(names)
        for name in names[shift:] + names[:shift]:
            run, _ = setups[name]()
            start = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - start)
    return samples


def sgd_weights_match(dataset, x, y) -> bool:
    """The plain SGD loop ends with exactly the harness's weights (same work, same order)."""
    model = harness_model("sgd", dataset)
    harness_epoch(model, dataset, x, y, torch.Generator().manual_seed(SEED))()
    trainer = PlainTrainer(dataset, model.lr, replay=False)
    trainer.epoch(x, y, dataset.config.batch_size, torch.Generator().manual_seed(SEED))
    return all(torch.equal(a, b) for a, b in zip(model.net.parameters(), trainer.net.parameters()))


def buffer_vs_step(dataset, x, y, repetitions: int, min_sample_s: float) -> dict[str, list[float]]:
    """Per-step costs: mammoth's buffer add + sample, the plain reservoir's, and the ER training step."""
    batch_size = dataset.config.batch_size
    raw = x[:batch_size].float().div(255)
    labels = y[:batch_size]
    model = harness_model("er", dataset)
    buffer = ReplayBuffer(BUFFER_SIZE, seed=SEED)
    plain = PlainReservoir(BUFFER_SIZE, SEED)
    everything = x.float().div(255)
    for start in range(0, len(y), batch_size):  # past capacity, as during most of training
        buffer.add(everything[start : start + batch_size], labels=y[start : start + batch_size])
        plain.add(everything[start : start + batch_size], y[start : start + batch_size])
    step_inputs = torch.cat([dataset.train_transform(raw), dataset.train_transform(raw)])
    step_labels = torch.cat([labels, labels])

    def mammoth_buffer():
        buffer.add(raw, labels=labels)
        buffer.sample(batch_size, transform=dataset.train_transform)

    mean, std = torch.tensor(dataset.mean).view(1, -1, 1, 1), torch.tensor(dataset.std).view(1, -1, 1, 1)

    def plain_buffer():
        plain.add(raw, labels)
        replay_x, _ = plain.sample(batch_size)
        (replay_x - mean) / std  # the normalisation the plain loop applies to replayed examples

    return _timing.interleaved(
        {
            "ReplayBuffer add + sample": mammoth_buffer,
            "plain reservoir add + sample": plain_buffer,
            "training step (fwd+bwd+step, 64 rows)": lambda: model.step(model.loss(model.net(step_inputs), step_labels)),
        },
        repetitions=repetitions, warmup=3, min_sample_s=min_sample_s,
    )


# ---- every method's step time relative to er ----

#: Arguments each method needs beyond the defaults (the original's best ones for seq-mnist).
METHOD_ARGUMENTS = {
    "ewc-on": {"e_lambda": 90.0, "gamma": 1.0, "lr": 0.03},
    "si": {"c": 1.0, "xi": 0.9},
    "mer": {"beta": 1.0, "gamma": 1.0},
    "xder": {"alpha": 0.3, "beta": 0.8},
}
#: What the step of each method uses of the backbone contract (for the table).
CONTRACT = {
    "sgd": "net(x)", "joint-cumulative": "net(x)", "er": "net(x)", "der": "net(x)", "derpp": "net(x)",
    "lwf": "net(x) of a frozen copy", "ewc-on": "get_params(out=), set_grads",
    "si": "get_params(out=), get_grads(out=), set_grads", "agem": "get_grads(out=), set_grads",
    "gem": "get_grads(out=), set_grads", "icarl": "net(x) of a frozen copy", "er-ace": "net(x)",
    "gdumb": "- (stores only)", "bic": "net(x) of a frozen copy", "mer": "get_params(out=), set_params",
    "xder": "net(x)", "slca": "net(x, returnt=\"features\") + its own heads",
}


def prepared_method(name: str, dataset):
    """``name`` after one epoch of task 0, at the start of task 1; returns (model, what it trains on
    in task 1, its context)."""
    from mammoth.models import MODELS

    values = dict(METHOD_ARGUMENTS.get(name, {}))
    if any(argument.name == "buffer_size" for argument in MODELS.get(name).arguments):
        values["buffer_size"] = BUFFER_SIZE
    model = build_model(name, net=fresh_net(dataset), dataset=dataset, **values)
    context = build_context(dataset, DEVICE, torch.Generator().manual_seed(SEED))
    model.attach(context)
    train_task(model, context, 0, dataset.task_source(0))
    model.begin_task(1)
    return model, model.training_data(1, dataset.task_source(1)), context


def method_step_times(dataset, rounds: int) -> dict[str, list[float]]:
    """``{method: [seconds per step of task 1, one per round]}``, every method once per round."""
    import time

    from mammoth.models import list_models

    from mammoth.models import MODELS

    # joint trains at the last task only; the prompt methods and ranpac need a ViT backbone (token interface)
    names = [name for name in list_models()
             if name != "joint" and not getattr(MODELS.get(name).target, "requires_tokens", False)]
    samples: dict[str, list[float]] = {name: [] for name in names}
    for repetition in range(rounds + 1):  # the first round warms up and is dropped
        shift = repetition % len(names)
        for name in names[shift:] + names[:shift]:
            model, source, context = prepared_method(name, dataset)
            if not len(source):  # gdumb trains at the end of the run only
                continue
            steps = -(-len(source) // dataset.config.batch_size)  # icarl and bic add the memory to the task's data
            start = time.perf_counter()
            context.fit(lambda batch, model=model: model.observe(batch.inputs, batch.labels, batch.not_aug_inputs),
                        source, 1, "task 2", end_epoch=model.end_epoch)
            elapsed = (time.perf_counter() - start) / steps
            if repetition:
                samples[name].append(elapsed)
    return samples


def print_method_ratios(rounds: int) -> None:
    """The per-method table: median us per step and the ratio to er's."""
    dataset = build_dataset({"name": "seq-digits", "n_epochs": 1}, seed=SEED)
    samples = method_step_times(dataset, rounds)
    print(f"Step time of every method on seq-digits task 2 (mnistmlp, batch {dataset.config.batch_size}, "
          f"buffer {BUFFER_SIZE}; {rounds} rounds)\n")
    rows = [[name, f"{statistics.median(values) * 1e6:.0f}", f"{paired(samples, name, 'er'):.2f}x",
             CONTRACT.get(name, "?")] for name, values in samples.items() if values]
    print(_timing.markdown_table(["method", "median us/step", "ratio to er", "backbone contract used"], rows))


def paired(samples, name, reference) -> float:
    return statistics.median(a / b for a, b in zip(samples[name], samples[reference]))


def main() -> int:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = args.rounds or (3 if args.quick else 15)
    dataset, x, y = load_data()
    _timing.print_header(
        "Training harness vs a plain PyTorch loop (seq-digits, mnistmlp, one epoch)",
        {
            "torch": torch.__version__,
            "torch threads": f"{torch.get_num_threads()}" + (" (--threads)" if args.threads else " (torch's default)"),
            "data": f"all {dataset.n_tasks} tasks' training data: {len(y)} examples, batch {dataset.config.batch_size}, "
                    f"{-(-len(y) // dataset.config.batch_size)} steps; er buffer_size {BUFFER_SIZE}",
            "rounds": f"{rounds} interleaved (fresh network, seed {SEED}, each round)"
                      + (" (--quick: smoke run, numbers not meaningful)" if args.quick else ""),
        },
    )
    print(f"plain SGD loop ends with the harness's exact weights: {sgd_weights_match(dataset, x, y)}\n")

    samples = epoch_rounds(dataset, x, y, rounds)
    rows, verdicts = [], []
    for name in ("sgd", "er"):
        harness, plain = samples[f"harness {name}"], samples[f"plain {name}"]
        ratio = paired(samples, f"harness {name}", f"plain {name}")
        ok = ratio <= TARGET
        verdicts.append(ok)
        rows.append([
            name, f"{statistics.median(harness) * 1e3:.2f}", f"{statistics.median(plain) * 1e3:.2f}",
            f"{ratio:.3f}x", f"{_timing.spread([a / b for a, b in zip(harness, plain)]):.2f}",
            f"<= {TARGET:.2f}x", "PASS" if ok else "MISS",
        ])
    print(_timing.markdown_table(
        ["method", "harness ms/epoch", "plain ms/epoch", "harness/plain", "IQR/median", "target", "result"], rows
    ))
    print("\n(harness/plain: median of the per-round ratios; ms: medians, for reference only)")
    noisy = [name for name in ("sgd", "er")
             if _timing.spread([a / b for a, b in zip(samples[f"harness {name}"], samples[f"plain {name}"])]) > 0.25]
    if noisy:
        print(f"WARNING: noisy ratios ({', '.join(noisy)}: IQR/median > 0.25); with {torch.get_num_threads()} "
              "threads on a loaded machine a step can stall on a descheduled thread; rerun, or use --threads 1")
    print()

    micro = buffer_vs_step(dataset, x, y, repetitions=5 if args.quick else 21,
                           min_sample_s=0.002 if args.quick else 0.02)
    step = "training step (fwd+bwd+step, 64 rows)"
    print(_timing.markdown_table(
        ["per step", "median us", "ratio vs training step"],
        [[name, f"{statistics.median(values) * 1e6:.1f}", f"{paired(micro, name, step):.3f}x"]
         for name, values in micro.items()],
    ))
    print(f"\nbuffer cost per ER step (mammoth add + sample) / training step: {paired(micro, 'ReplayBuffer add + sample', step):.2f}x")
    print(f"\n{sum(verdicts)}/{len(verdicts)} targets met" + (" (--quick: indicative only)" if args.quick else ""))
    print()
    print_method_ratios(rounds=2 if args.quick else 7)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
