"""``python -m mammoth`` as users run it, in subprocesses from a temporary directory."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from conftest import run_python, run_warm_python


def test_cfg_job_prints_the_typed_backbone_config(workdir: Path):
    result = run_python(["-m", "mammoth", "backbone=resnet", "backbone.depth=34", "--cfg", "job"], workdir)
    assert result.returncode == 0, result.stderr
    assert "_target_: mammoth.backbones.resnet.ResNet" in result.stdout
    assert "depth: 34" in result.stdout and "num_classes: ???" in result.stdout
    assert not (workdir / "outputs").exists()


def test_help_lists_the_backbone_options(workdir: Path):
    result = run_python(["-m", "mammoth", "--help"], workdir)
    assert result.returncode == 0, result.stderr
    backbone_line = next(line for line in result.stdout.splitlines() if line.startswith("backbone:"))
    for name in ("mnistmlp", "resnet", "resnet18", "reduced-resnet18", "vit", "torchvision"):
        assert name in backbone_line
    groups = result.stdout.split("== Config groups", 1)[1].split("== Composed config ==", 1)[0].splitlines()[1:]
    assert [line.split(":")[0] for line in groups if line] == [
        "backbone", "dataset", "experiment", "hparams_search", "logger", "model",
        "model/regularizer"]  # no internal helper group


def test_bad_backbone_value_names_the_key_and_type(workdir: Path):
    # a bad command line, whether Hydra (the type) or mammoth (the allowed values) finds it: status 2
    result = run_python(["-m", "mammoth", "backbone=resnet", "backbone.depth=abc"], workdir)
    assert result.returncode == 2
    assert "backbone.depth" in result.stderr and "Integer" in result.stderr
    depth = run_warm_python(["-m", "mammoth", "backbone=resnet", "backbone.depth=20", "output_dir=out"], workdir)
    assert depth.returncode == 2
    assert depth.stderr.strip().splitlines() == [
        "Error: backbone.depth: invalid value 20 for argument 'depth': allowed values: 18, 34, 50, 101, 152"]
    assert not (workdir / "out").exists() and not (workdir / "outputs").exists()


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "joblib"])  # joblib: jobs in other processes (pickled configs)
def test_multirun_sweeps_the_backbone_depth(workdir: Path, launcher: str):
    result = run_warm_python(
        ["-m", "mammoth", "-m", f"hydra/launcher={launcher}", "backbone=resnet", "backbone.depth=18,34",
         "backbone.width=4", "dataset.fitting_mode=iters", "dataset.n_iters=1", "hydra.sweep.dir=sweep"],  # a step a task
        workdir,
    )
    assert result.returncode == 0, result.stderr
    depths = sorted(
        json.loads((workdir / "sweep" / job / "results.json").read_text())["config"]["backbone"]["depth"]
        for job in ("0", "1")
    )
    assert depths == [18, 34]


def test_backbone_registered_outside_the_package_is_selectable(workdir: Path):
    (workdir / "my_backbones.py").write_text(textwrap.dedent('''
        from torch import nn
        from mammoth import MammothBackbone, register_backbone

        @register_backbone("tiny-net")
        class TinyNet(MammothBackbone):
            """A linear probe."""

            def __init__(self, num_classes: int, input_shape: tuple, scale: float = 1.0):
                super().__init__()
                self.stages = nn.ModuleList([nn.Flatten()])
                self.num_features = 1
                for size in input_shape:
                    self.num_features *= size
                self.num_classes = num_classes
                self.classifier = nn.Linear(self.num_features, num_classes)
    '''))
    (workdir / "run_mine.py").write_text("import my_backbones\nfrom mammoth.__main__ import main\nmain()\n")
    result = run_python(["run_mine.py", "backbone=Tiny_Net", "backbone.scale=2.5", "--cfg", "job"], workdir)
    assert result.returncode == 0, result.stderr
    assert "_target_: my_backbones.TinyNet" in result.stdout and "scale: 2.5" in result.stdout
    bad = run_python(["run_mine.py", "backbone=tiny-net", "backbone.depth=3"], workdir)
    assert bad.returncode == 2 and "its arguments: num_classes" in bad.stderr


def test_composing_imports_neither_torchvision_nor_sklearn(workdir: Path):
    code = (
        "import sys, mammoth\n"
        "from hydra import compose, initialize_config_module\n"
        "with initialize_config_module(config_module='mammoth.app.conf', version_base='1.3'):\n"
        "    cfg = compose(config_name='config', overrides=['dataset=seq-cifar10', 'backbone=torchvision'])\n"
        "print(cfg.backbone.arch, sorted(m for m in ('torchvision', 'sklearn', 'matplotlib') if m in sys.modules))\n"
    )
    result = run_python(["-c", code], workdir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "resnet18 []"


def test_default_run_prints_the_table_and_writes_its_files(workdir: Path):
    # one epoch a task: what is printed and written does not depend on it (the README's test runs the
    # default run itself and holds its table)
    result = run_warm_python(["-m", "mammoth", "dataset.n_epochs=1", "hydra.run.dir=run"], workdir)
    assert result.returncode == 0, result.stderr
    assert "backbone mnistmlp: 17,610 parameters, 100 features, 10 classes" in result.stdout
    assert "after task |     T1     T2     T3     T4     T5 |  Class-IL   Task-IL" in result.stdout
    run = workdir / "run"
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "complete" and results["dataset"]["name"] == "seq-digits"
    assert f"Class-IL: average {results['class_il']['average']:.2f}" in result.stdout
    assert (run / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    log = (run / "mammoth.log").read_text()
    assert "task 5/5: Class-IL" in log and "[INFO]" in log
    assert (run / ".hydra" / "config.yaml").exists()
