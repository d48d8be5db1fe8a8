"""Reference values of Avalanche's MAS and RWalk plugins and PyCIL's (offline) EWC for the tests.

The script runs each reference implementation's OWN code, unchanged, in a child process of its own:

- ``mas``, ``rwalk``: Avalanche's ``MASPlugin`` (avalanche/training/plugins/mas.py) and
  ``RWalkPlugin`` (avalanche/training/plugins/rwalk.py), driven by :class:`PluginStrategy`, a
  minimal strategy with the attributes the plugins read (``model``, ``optimizer``, ``mbatch``,
  ``loss``, ``experience.dataset``, ``train_mb_size``, ``_criterion``, ``clock``) that calls their
  hooks in the order of Avalanche's ``SGDUpdate.training_epoch`` and ``BaseTemplate.train``
  (``model.train()`` then ``before_training`` per experience; per batch
  ``before_training_iteration``, ``zero_grad``, a loss starting at ``torch.zeros(1)``, forward,
  ``+= criterion``, ``before_backward``, backward, step, ``after_training_iteration``, then the
  clock's ``train_iterations += 1``; ``after_training_exp``, then ``train_exp_counter += 1``).
  Avalanche's package ``__init__`` files import its whole library (benchmarks, evaluation,
  loggers, which need packages not installed here): the packages ``avalanche``,
  ``avalanche.models``, ``avalanche.training`` and ``avalanche.training.plugins`` are replaced by
  empty packages over the real directories, so the plugins' modules and the ones they import
  (``avalanche.core``, ``avalanche.training.utils``, ``avalanche.models.utils``,
  ``avalanche.models.dynamic_modules``, ``avalanche.models.batch_renorm``, ``avalanche._annotations``)
  load from the real files; ``avalanche.benchmarks`` (imported for type checks and classes never
  instantiated on this path) is a stub. No package beyond torch is needed.
- ``ewc``: PyCIL's ``models/ewc.py`` (its ``EWC.incremental_train`` and ``after_task``) with its
  module settings set for a tiny run (epochs, milestones past the run, batch size, no workers,
  no weight decay: see :data:`EWC_PATCH`; ``lamda`` and ``fishermax`` keep PyCIL's values), its
  ``IncrementalNet`` replaced by :class:`TinyIncrementalNet` (a linear-ReLU layer and a head that
  grows as PyCIL's ``update_fc`` grows it: the old rows copied, the new rows the initial weights of
  this implementation's head for those classes) and its ``DataLoader`` by :class:`OrderedLoader`
  (the batches of :func:`train_order`: the same on both sides); a stub DataManager serves the tasks.

Both sides train the same tiny network (16 inputs, 8 hidden units, 6 classes: mammoth's
``mnistmlp`` with ``hidden_sizes=[8]``) from :func:`initial_weights`, with SGD at lr 0.1, on 3
class-IL tasks of 2 classes (:func:`task_data`), 2 epochs of 3 batches of 4 each, in the orders of
:func:`train_order`. The child writes the losses of every step, the importances, penalties and
anchors after every task, the weights and the logits of :func:`probe_inputs` to
``tests/models/data/importance_methods_reference.json``; tests/models/test_importance_methods.py
holds this implementation to them.

To rerun (a few seconds)::

    mkdir -p /tmp/avalanche /tmp/pycil
    git --git-dir /work/.mirror/ContinualAI+avalanche/repo archive HEAD | tar -x -C /tmp/avalanche
    git --git-dir /work/.mirror/G-U-N+PyCIL/repo archive HEAD | tar -x -C /tmp/pycil
    python scripts/reference_importance_methods.py --avalanche /tmp/avalanche --pycil /tmp/pycil
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import torch
from torch import nn

OUTPUT = Path(__file__).resolve().parents[1] / "tests" / "models" / "data" / "importance_methods_reference.json"

#: The benchmark: 3 class-IL tasks of 2 classes, 12 examples (1x4x4 in [0, 1]) each, batches of 4, 2 epochs.
N_TASKS, CLASSES_PER_TASK, PER_TASK, BATCH, EPOCHS = 3, 2, 12, 4, 2
INPUT, HIDDEN, LR = (1, 4, 4), 8, 0.1
N_CLASSES = N_TASKS * CLASSES_PER_TASK
#: Avalanche's defaults (MASPlugin, the MAS strategy) for mas; RWalkPlugin's for rwalk but delta_t,
#: 4 instead of 10 so that the 18 steps close 4 score windows, one across a task's end.
MAS_SETTINGS = {"lambda_reg": 1.0, "alpha": 0.5}
RWALK_SETTINGS = {"ewc_lambda": 0.1, "ewc_alpha": 0.9, "delta_t": 4}
#: PyCIL's ewc.py module settings changed for the tiny run (the rest, lamda=1000 and fishermax=1e-4, are its own).
EWC_PATCH = {"init_epoch": EPOCHS, "epochs": EPOCHS, "init_lr": LR, "lrate": LR, "init_milestones": [100],
             "milestones": [100], "init_weight_decay": 0.0, "weight_decay": 0.0, "batch_size": BATCH, "num_workers": 0}


# ---- what both sides share (the tests import these) ----


def initial_weights() -> list[torch.Tensor]:
    """The network's initial parameters in ``parameters()`` order: hidden weight and bias, head weight and bias."""
    generator = torch.Generator().manual_seed(7)
    shapes = [(HIDDEN, math.prod(INPUT)), (HIDDEN,), (N_CLASSES, HIDDEN), (N_CLASSES,)]
    return [0.5 * torch.randn(shape, generator=generator) for shape in shapes]


def task_data(task: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``task``'s training inputs in [0, 1] (PER_TASK, 1, 4, 4) and labels (its 2 classes alternating)."""
    generator = torch.Generator().manual_seed(300 + task)
    labels = torch.arange(CLASSES_PER_TASK).repeat(PER_TASK // CLASSES_PER_TASK) + task * CLASSES_PER_TASK
    patterns = torch.rand(N_CLASSES, *INPUT, generator=torch.Generator().manual_seed(299))
    inputs = (0.6 * patterns[labels] + 0.4 * torch.rand(PER_TASK, *INPUT, generator=generator)).clamp(0, 1)
    return inputs, labels


def train_order(task: int, epoch: int) -> list[torch.Tensor]:
    """The batches (index tensors into ``task_data(task)``) of ``epoch`` of ``task``; epoch ``EPOCHS``
    is the order of PyCIL's Fisher pass over its (shuffled) train loader."""
    order = torch.randperm(PER_TASK, generator=torch.Generator().manual_seed(100 * task + epoch))
    return [order[start : start + BATCH] for start in range(0, PER_TASK, BATCH)]


def probe_inputs() -> torch.Tensor:
    """Inputs of every class whose logits are compared after each task."""
    return torch.cat([task_data(task)[0][:4] for task in range(N_TASKS)])


def flat(tensors: Any) -> list[float]:
    """Tensors (an iterable) as one flat list of floats (each float32 value exactly)."""
    return [float(value) for tensor in tensors for value in tensor.detach().flatten()]


def tiny_network() -> nn.Module:
    """The reference side's network: mammoth's mnistmlp with one hidden layer of 8, as a Sequential."""
    network = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(INPUT), HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, N_CLASSES))
    with torch.no_grad():
        for parameter, value in zip(network.parameters(), initial_weights()):
            parameter.copy_(value)
    return network


# ---- Avalanche's side ----


def import_avalanche(root: Path) -> None:
    """Empty packages over Avalanche's real directories, and a stub ``avalanche.benchmarks``."""
    sys.path.insert(0, str(root))
    for name, directory in (("avalanche", ""), ("avalanche.models", "models"), ("avalanche.training", "training"),
                            ("avalanche.training.plugins", "training/plugins")):
        package = types.ModuleType(name)
        package.__path__ = [str(root / "avalanche" / directory)]
        sys.modules[name] = package

    class CLExperience:  # only isinstance checks on this path
        pass

    class OnlineCLExperience(CLExperience):
        pass

    class ConstantSequence:  # imported by dynamic_modules, not instantiated here
        pass

    stubs = {"avalanche.benchmarks": {"CLExperience": CLExperience, "OnlineCLExperience": OnlineCLExperience},
             "avalanche.benchmarks.scenarios": {"CLExperience": CLExperience},
             "avalanche.benchmarks.utils": {"_make_taskaware_classification_dataset": None},
             "avalanche.benchmarks.utils.flat_data": {"ConstantSequence": ConstantSequence}}
    for name, values in stubs.items():
        module = types.ModuleType(name)
        module.__dict__.update(values)
        sys.modules[name] = module


class PluginStrategy:
    """The attributes and hook order of Avalanche's supervised template that MASPlugin and RWalkPlugin read."""

    def __init__(self, plugin: Any) -> None:
        self.plugin, self.model = plugin, tiny_network()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LR)
        self._criterion = nn.CrossEntropyLoss()
        self.clock = types.SimpleNamespace(train_iterations=0, train_exp_counter=0)
        self.device, self.train_mb_size, self.loss, self.mbatch = "cpu", BATCH, None, None

    def train_experience(self, task: int) -> list[float]:
        """One experience (``strategy.train(experience)``); returns each step's loss."""
        inputs, labels = task_data(task)
        task_labels = torch.zeros(PER_TASK, dtype=torch.long)
        self.experience = types.SimpleNamespace(dataset=torch.utils.data.TensorDataset(inputs, labels, task_labels))
        self.model.train()
        self.plugin.before_training(self)
        losses = []
        for epoch in range(EPOCHS):
            for index in train_order(task, epoch):
                self.mbatch = [inputs[index], labels[index], task_labels[index]]
                self.plugin.before_training_iteration(self)
                self.optimizer.zero_grad()
                self.loss = torch.zeros(1)
                output = self.model(self.mbatch[0])
                self.loss += self._criterion(output, self.mbatch[1])
                self.plugin.before_backward(self)
                self.loss.backward()
                self.optimizer.step()
                losses.append(float(self.loss))
                self.plugin.after_training_iteration(self)
                self.clock.train_iterations += 1
        self.plugin.after_training_exp(self)
        self.clock.train_exp_counter += 1
        return losses

    def named(self, values: Any) -> list[float]:
        """A plugin's ``{name: ParamData}`` as a flat list in ``named_parameters`` order (missing: zeros)."""
        return flat(values[name].data if name in values else torch.zeros_like(parameter)
                    for name, parameter in self.model.named_parameters())

    def probe(self) -> list[float]:
        """The logits of :func:`probe_inputs`, flat."""
        with torch.no_grad():
            return flat([self.model(probe_inputs())])


def run_avalanche(root: Path) -> dict:
    """MASPlugin and RWalkPlugin over the 3 tasks."""
    import_avalanche(root)
    from avalanche.training.plugins.mas import MASPlugin
    from avalanche.training.plugins.rwalk import RWalkPlugin

    result: dict[str, Any] = {"source": {"repository": "ContinualAI/avalanche", "commit": mirror_commit("ContinualAI+avalanche"),
                                         "torch": torch.__version__}}
    strategy = PluginStrategy(MASPlugin(**MAS_SETTINGS))
    mas: dict[str, Any] = {"settings": MAS_SETTINGS, "losses": [], "importance": [], "anchor": [], "weights": [], "logits": []}
    for task in range(N_TASKS):
        mas["losses"].append(strategy.train_experience(task))
        mas["importance"].append(strategy.named(strategy.plugin.importance))
        mas["anchor"].append(strategy.named(strategy.plugin.params))
        mas["weights"].append(flat(strategy.model.parameters()))
        mas["logits"].append(strategy.probe())
    result["mas"] = mas

    strategy = PluginStrategy(RWalkPlugin(**RWALK_SETTINGS))
    rwalk: dict[str, Any] = {"settings": RWALK_SETTINGS, "losses": [], "importance": [], "scores": [], "penalties": [],
                             "anchor": [], "weights": [], "logits": []}
    for task in range(N_TASKS):
        rwalk["losses"].append(strategy.train_experience(task))
        plugin = strategy.plugin
        for key, values in (("importance", plugin.exp_importance), ("scores", plugin.exp_scores),
                            ("penalties", plugin.exp_penalties), ("anchor", plugin.exp_params)):
            rwalk[key].append(strategy.named(values))
        rwalk["weights"].append(flat(strategy.model.parameters()))
        rwalk["logits"].append(strategy.probe())
    result["rwalk"] = rwalk
    return result


# ---- PyCIL's side ----


class TinyIncrementalNet(nn.Module):
    """PyCIL's ``IncrementalNet`` for the tiny run: ``backbone`` (linear + ReLU) and a head ``fc`` that
    ``update_fc`` grows as PyCIL's does (old rows copied; new rows: :func:`initial_weights`' rows)."""

    def __init__(self, args: Any, pretrained: bool) -> None:
        super().__init__()
        weights = initial_weights()
        self.backbone = nn.Linear(math.prod(INPUT), HIDDEN)
        with torch.no_grad():
            self.backbone.weight.copy_(weights[0])
            self.backbone.bias.copy_(weights[1])
        self.fc: nn.Linear | None = None

    def update_fc(self, nb_classes: int) -> None:
        """A head of ``nb_classes`` outputs keeping the old head's rows."""
        weights = initial_weights()
        fc = nn.Linear(HIDDEN, nb_classes)
        with torch.no_grad():
            fc.weight.copy_(weights[2][:nb_classes])
            fc.bias.copy_(weights[3][:nb_classes])
            if self.fc is not None:
                old = self.fc.out_features
                fc.weight[:old] = self.fc.weight.data
                fc.bias[:old] = self.fc.bias.data
        self.fc = fc

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"logits": ...}``, as PyCIL's networks answer."""
        return {"logits": self.fc(torch.relu(self.backbone(x.flatten(1))))}


class TaskDataset(torch.utils.data.Dataset):
    """``(index, input, label)`` items of a task's training data, or of the probe inputs (test)."""

    def __init__(self, task: int, test: bool, classes: int) -> None:
        self.task = task
        if test:
            labels = torch.cat([task_data(t)[1][:4] for t in range(N_TASKS)])
            keep = labels < classes
            self.inputs, self.labels = probe_inputs()[keep], labels[keep]
        else:
            self.inputs, self.labels = task_data(task)
        self.passes = 0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple:
        return index, self.inputs[index], self.labels[index]


class OrderedLoader:
    """PyCIL's ``DataLoader`` for the tiny run: a shuffled loader's k-th pass is ``train_order(task, k)``."""

    def __init__(self, dataset: TaskDataset, batch_size: int, shuffle: bool, num_workers: int = 0) -> None:
        self.dataset, self.batch_size, self.shuffle = dataset, batch_size, shuffle

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def __iter__(self):
        dataset = self.dataset
        if self.shuffle:
            batches = train_order(dataset.task, dataset.passes)
            dataset.passes += 1
        else:
            batches = list(torch.arange(len(dataset)).split(self.batch_size))
        for index in batches:
            yield index, dataset.inputs[index], dataset.labels[index]


def run_pycil(root: Path) -> dict:
    """PyCIL's EWC over the 3 tasks: CE and EWC terms of every step, Fisher, anchor, weights, logits."""
    sys.path.insert(0, str(root))
    from models import ewc

    for name, value in EWC_PATCH.items():
        setattr(ewc, name, value)
    ewc.IncrementalNet = TinyIncrementalNet
    ewc.DataLoader = OrderedLoader
    recorded: dict[str, list] = {"ce": [], "ewc": []}
    functional = ewc.F

    def cross_entropy(*args: Any, **kwargs: Any) -> torch.Tensor:
        recorded["ce"].append(functional.cross_entropy(*args, **kwargs))
        return recorded["ce"][-1]

    ewc.F = types.SimpleNamespace(cross_entropy=cross_entropy)  # records the training loss (the Fisher pass calls torch's own)

    class DataManager:
        """The parts of PyCIL's DataManager EWC reads."""

        def get_task_size(self, task: int) -> int:
            return CLASSES_PER_TASK

        def get_dataset(self, indices: Any, source: str, mode: str) -> TaskDataset:
            return TaskDataset(int(indices[-1]) // CLASSES_PER_TASK, source == "test", int(indices[-1]) + 1)

    learner = ewc.EWC({"memory_size": 0, "device": [torch.device("cpu")]})
    compute_ewc = learner.compute_ewc
    learner.compute_ewc = lambda: recorded["ewc"].append(compute_ewc()) or recorded["ewc"][-1]
    result: dict[str, Any] = {"settings": {"lamda": ewc.lamda, "fishermax": ewc.fishermax, "momentum": 0.9, **EWC_PATCH},
                              "ce": [], "ewc": [], "fisher": [], "anchor": [], "weights": [], "logits": []}
    for task in range(N_TASKS):
        recorded["ce"].clear(), recorded["ewc"].clear()
        learner.incremental_train(DataManager())
        result["ce"].append([float(value) for value in recorded["ce"]])
        result["ewc"].append([float(value) for value in recorded["ewc"]])
        result["fisher"].append({name: flat([value]) for name, value in learner.fisher.items()})
        result["anchor"].append({name: flat([value]) for name, value in learner.mean.items()})
        result["weights"].append({name: flat([value]) for name, value in learner._network.named_parameters()})
        learner._network.eval()
        with torch.no_grad():
            result["logits"].append(learner._network(probe_inputs())["logits"].tolist())
        learner.after_task()
    result["source"] = {"repository": "G-U-N/PyCIL", "commit": mirror_commit("G-U-N+PyCIL"), "torch": torch.__version__}
    return result


# ---- the parent ----


def mirror_commit(name: str) -> str:
    """The commit of the local mirror the code was extracted from (``unknown`` without one)."""
    command = ["git", "--git-dir", f"/work/.mirror/{name}/repo", "rev-parse", "HEAD"]
    return subprocess.run(command, capture_output=True, text=True, check=False).stdout.strip() or "unknown"


def child_result(part: str, root: Path) -> dict:
    """Run one part in a fresh process (each codebase has its own top-level packages)."""
    command = [sys.executable, __file__, "--part", part, "--root", str(root)]
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    if finished.returncode:
        raise SystemExit(f"the {part} part failed:\n{finished.stderr[-3000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def main() -> None:
    """Run Avalanche's MAS and RWalk and PyCIL's EWC, and write the reference file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--avalanche", type=Path, help="the extracted Avalanche (git archive)")
    parser.add_argument("--pycil", type=Path, help="the extracted PyCIL (git archive)")
    parser.add_argument("--part", choices=("avalanche", "pycil"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    arguments = parser.parse_args()
    if arguments.part is not None:
        run = run_avalanche if arguments.part == "avalanche" else run_pycil
        print(json.dumps(run(arguments.root.resolve())))
        return
    reference = json.loads(arguments.output.read_text()) if arguments.output.exists() else {}
    if arguments.avalanche is not None:
        reference["avalanche"] = child_result("avalanche", arguments.avalanche)
    if arguments.pycil is not None:
        reference["pycil"] = {"ewc": child_result("pycil", arguments.pycil)}
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(reference) + "\n")
    print(f"wrote {arguments.output}")


if __name__ == "__main__":
    main()
