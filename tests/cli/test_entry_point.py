"""``python -m mammoth`` as users run it, in subprocesses from a temporary directory."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from conftest import run_python


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


def test_unknown_backbone_fails_with_the_list_and_closest(workdir: Path):
    result = run_python(["-m", "mammoth", "backbone=resnt"], workdir)
    assert result.returncode == 2
    first_line = result.stderr.strip().splitlines()[0]
    assert "unknown backbone 'resnt'" in first_line and "did you mean 'resnet'" in first_line


def test_bad_backbone_value_names_the_key_and_type(workdir: Path):
    result = run_python(["-m", "mammoth", "backbone=resnet", "backbone.depth=abc"], workdir)
    assert result.returncode == 1
    assert "backbone.depth" in result.stderr and "Integer" in result.stderr
    depth = run_python(["-m", "mammoth", "backbone=resnet", "backbone.depth=20", "output_dir=out"], workdir)
    assert depth.returncode == 1
    assert "allowed values: 18, 34, 50, 101, 152" in depth.stderr
    assert not (workdir / "out" / "results.json").exists()


@pytest.mark.slow
def test_multirun_sweeps_the_backbone_depth(workdir: Path):
    result = run_python(
        ["-m", "mammoth", "-m", "backbone=resnet", "backbone.depth=18,34", "backbone.width=4",
         "dataset.n_epochs=1", "hydra.sweep.dir=sweep"],
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
