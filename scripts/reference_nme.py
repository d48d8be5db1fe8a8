"""Reference values of PyCIL's nearest-mean-of-exemplars (NME) evaluation, for tests/engine/test_nme_reference.py.

The script runs PyCIL's OWN code, unchanged (``models/base.py``: ``BaseLearner._reduce_exemplar``
computes one mean per class of the memory, ``_eval_nme`` ranks the classes of each test example
by the distance of its normalised feature to the means, ``_evaluate`` gives top-1 and top-5), in
a child process, on a tiny network (one linear layer and a ReLU: ``relu(x @ W.T + b)``, its
``extract_vector``) with a memory of 3 examples of each of 6 classes and 30 test examples, all
from :func:`case`; it writes the case, PyCIL's class means, its top-5 rankings and accuracies to
``tests/engine/data/nme_reference.json``. The test feeds the same case to mammoth's evaluation
(``evaluate_tasks`` with a method whose ``nme_features`` is the same network) and holds it to
these numbers; it never runs PyCIL.

What is adapted to run PyCIL here, and why: its learner is built with PyCIL's own
``BaseLearner.__init__`` and given the network, the memory and the class counts as attributes
(what its ``incremental_train`` and ``build_rehearsal_memory`` would set); ``data_manager`` is a
stub whose ``get_dataset(..., appendent=(data, targets))`` serves the memory as PyCIL's
``DummyDataset`` does, ``(index, image, label)``, with the identity as the test transform (the
test's context has no normalisation either). ``_reduce_exemplar`` with ``m`` = 3 keeps the
whole memory, so its means are those of the memory mammoth reads.

To rerun (a few seconds)::

    python scripts/reference_nme.py --pycil /tmp/pycil     # an export of PyCIL (github.com/G-U-N/PyCIL)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import torch

OUTPUT = Path(__file__).resolve().parents[1] / "tests" / "engine" / "data" / "nme_reference.json"
CLASSES, PER_CLASS, TESTS, INPUTS, FEATURES = 6, 3, 30, 16, 8


def case(seed: int = 0) -> dict:
    """The network's weights, the memory and the test examples (lists of floats): examples are
    their class's centre plus noise, so the nearest mean is right on most of them."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(FEATURES, INPUTS, generator=generator)
    bias = 0.1 * torch.randn(FEATURES, generator=generator)
    centres = torch.randn(CLASSES, INPUTS, generator=generator)
    memory_labels = torch.arange(CLASSES).repeat_interleave(PER_CLASS)
    memory = centres[memory_labels] + 0.7 * torch.randn(len(memory_labels), INPUTS, generator=generator)
    test_labels = torch.randint(0, CLASSES, (TESTS,), generator=generator)
    test = centres[test_labels] + 0.7 * torch.randn(TESTS, INPUTS, generator=generator)
    return {"seed": seed, "weight": weight.tolist(), "bias": bias.tolist(), "memory": memory.tolist(),
            "memory_labels": memory_labels.tolist(), "test": test.tolist(), "test_labels": test_labels.tolist()}


CHILD = r'''
import json, sys
import numpy as np
import torch
from torch import nn
sys.path.insert(0, sys.argv[1])
from models.base import BaseLearner  # PyCIL's own

case = json.loads(sys.stdin.read())


class Network(nn.Module):
    """The tiny network: extract_vector(x) = relu(x @ W.T + b), as PyCIL's networks' extract_vector."""

    def __init__(self):
        super().__init__()
        self.weight = torch.tensor(case["weight"])
        self.bias = torch.tensor(case["bias"])
        self.feature_dim = self.weight.shape[0]

    def extract_vector(self, x):
        return torch.relu(x @ self.weight.T + self.bias)


class Dataset(torch.utils.data.Dataset):
    """PyCIL's DummyDataset: (index, image, label), the test transform the identity."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return index, torch.tensor(self.images[index], dtype=torch.float32), int(self.labels[index])


class DataManager:
    def get_dataset(self, indices, source, mode, appendent=None, ret_data=False):
        assert list(indices) == [] and source == "train" and mode == "test"
        return Dataset(*appendent)


classes = int(max(case["memory_labels"])) + 1
learner = BaseLearner({"memory_size": 0, "memory_per_class": 3, "fixed_memory": True, "device": ["cpu"]})
learner._network = Network()
learner._known_classes = learner._total_classes = classes
learner._data_memory = np.array(case["memory"], dtype=np.float32)
learner._targets_memory = np.array(case["memory_labels"])
learner._reduce_exemplar(DataManager(), 3)
loader = torch.utils.data.DataLoader(Dataset(np.array(case["test"], dtype=np.float32), case["test_labels"]),
                                     batch_size=8, shuffle=False)
y_pred, y_true = learner._eval_nme(loader, learner._class_means)
accuracy = learner._evaluate(y_pred, y_true)
vectors, _ = learner._extract_vectors(loader)
vectors = (vectors.T / (np.linalg.norm(vectors.T, axis=0) + 1e-8)).T
distances = np.sort(((learner._class_means[None] - vectors[:, None]) ** 2).sum(2), axis=1)
print(json.dumps({"class_means": learner._class_means.tolist(), "ranking": y_pred.tolist(),
                  "top1": float(accuracy["top1"]), "top5": float(accuracy["top5"]),
                  "smallest_gap": float((distances[:, 1] - distances[:, 0]).min())}))
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pycil", type=Path, required=True, help="an export of PyCIL (its models/base.py)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    document = case()
    ran = subprocess.run([sys.executable, "-c", CHILD, str(args.pycil)], input=json.dumps(document),
                         capture_output=True, text=True, check=True)
    reference = json.loads(ran.stdout.strip().splitlines()[-1])
    if reference["smallest_gap"] < 1e-4:  # a near tie would make the rankings depend on rounding
        raise SystemExit(f"a near tie between two class means ({reference['smallest_gap']}); pick another seed")
    base = (args.pycil / "models" / "base.py").read_bytes()
    document.update(reference, source={"pycil_models_base_py_sha256": hashlib.sha256(base).hexdigest(),
                                       "torch": torch.__version__, "script": "scripts/reference_nme.py"})
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {args.output}: top-1 {reference['top1']}, top-5 {reference['top5']}, "
          f"smallest gap between the two nearest means {reference['smallest_gap']:.4f}")


if __name__ == "__main__":
    main()
