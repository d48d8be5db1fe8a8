"""mammoth's configs composed into another Hydra app, and a wheel install used from anywhere."""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

from conftest import REPO, run_python

APP = '''
import hydra
from hydra.utils import instantiate

import mammoth  # puts mammoth's backbone and model configs in Hydra's ConfigStore


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def app(cfg):
    net = instantiate(cfg.backbone, num_classes=10, input_shape=(3, 32, 32))
    built = mammoth.build_backbone(cfg.backbone, num_classes=10, input_shape=(3, 32, 32))
    print("NET", type(net).__name__, net.depth, net.num_params() == built.num_params())
    print("DATASET", cfg.dataset.name if "dataset" in cfg else None)


app()
'''


def test_another_hydra_app_composes_mammoth_backbones(workdir: Path):
    (workdir / "conf").mkdir()
    (workdir / "conf" / "config.yaml").write_text("defaults:\n  - backbone: resnet\n  - _self_\n\nlr: 0.1\n")
    (workdir / "app.py").write_text(APP)
    result = run_python(["app.py", "backbone.depth=50", "backbone.width=8", "hydra.run.dir=."], workdir)
    assert result.returncode == 0, result.stderr
    assert "NET ResNet 50 True" in result.stdout
    # mammoth's YAML groups (dataset/) come through the SearchPathPlugin
    with_dataset = run_python(
        ["app.py", "+dataset=seq-digits", "backbone=resnet", "backbone.depth=18", "backbone.width=8", "hydra.run.dir=."],
        workdir,
    )
    assert with_dataset.returncode == 0, with_dataset.stderr
    assert "NET ResNet 18 True" in with_dataset.stdout and "DATASET seq-digits" in with_dataset.stdout


def build_wheel(tmp_path: Path) -> Path:
    """A wheel of the repository's files as they are now, built in a copy (a ``build/`` folder
    left in the repository by an earlier build would otherwise add files deleted since)."""
    source = tmp_path / "source"
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "outputs", "multirun", "data", "__pycache__", ".pytest_cache"))
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(source)],
                   check=True, capture_output=True, text=True, timeout=300)
    return next(dist.glob("mammoth_cl-*.whl"))


def venv_seeing_current_packages(environment: Path) -> str:
    """A fresh venv at ``environment`` that also sees this interpreter's site-packages (torch,
    hydra, pip...) through a ``.pth`` file, whether the tests run in a venv or not (a venv's
    ``system_site_packages`` would only see the base interpreter's). The plain path lines do
    not run the ``.pth`` files there, so an editable install of mammoth stays invisible."""
    venv.create(environment, with_pip=False)
    python = environment / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             check=True, capture_output=True, text=True).stdout.strip()
    outer = [path for path in site.getsitepackages() if Path(path).is_dir()]
    (Path(purelib) / "outer_site_packages.pth").write_text("".join(f"{path}\n" for path in outer))
    return str(python)


@pytest.mark.slow
def test_wheel_installs_and_runs_from_any_directory(tmp_path: Path):
    wheel = build_wheel(tmp_path)
    environment = tmp_path / "venv"
    python = venv_seeing_current_packages(environment)
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", str(wheel)],
                   check=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run_python(["-c", "import mammoth; print(mammoth.__file__)"], elsewhere, python=python)
    assert str(environment) in where.stdout, where.stdout + where.stderr
    result = run_python(["-m", "mammoth", "--cfg", "job"], elsewhere, python=python)
    assert result.returncode == 0, result.stderr
    assert "name: seq-digits" in result.stdout and "_target_: mammoth.backbones.mlp.MNISTMLP" in result.stdout

NO_IMPORT_APP = '''
import hydra
from hydra.utils import instantiate


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def app(cfg):
    net = instantiate(cfg.backbone, num_classes=10, input_shape=(3, 32, 32))
    print("NET", type(net).__name__, net.depth)


if __name__ == "__main__":
    app()
'''


def check_app_without_import(python: str, root: Path) -> None:
    """An app with ``defaults: [backbone: resnet, _self_]`` that never imports mammoth runs,
    shows its config and help, and composes with the compose API, under ``python``."""
    (root / "conf").mkdir(parents=True)
    (root / "conf" / "config.yaml").write_text("defaults:\n  - backbone: resnet\n  - _self_\n")
    (root / "app.py").write_text(NO_IMPORT_APP)
    ran = run_python(["app.py", "backbone.depth=34", "backbone.width=4", "hydra.run.dir=."], root, python=python)
    assert ran.returncode == 0, ran.stderr
    assert "NET ResNet 34" in ran.stdout
    shown = run_python(["app.py", "--cfg", "job"], root, python=python)
    assert "_target_: mammoth.backbones.resnet.ResNet" in shown.stdout, shown.stderr
    helped = run_python(["app.py", "--help"], root, python=python)
    assert any(line.startswith("backbone:") and "resnet" in line for line in helped.stdout.splitlines()), helped.stderr
    info = run_python(["app.py", "--info", "defaults"], root, python=python)
    assert "backbone/resnet" in info.stdout, info.stderr
    code = ("from hydra import compose, initialize\n"
            "with initialize(config_path='conf', version_base='1.3'):\n"
            "    print(compose('config', overrides=['backbone.depth=50']).backbone.depth)\n")
    composed = run_python(["-c", code], root, python=python)
    assert composed.stdout.strip() == "50", composed.stderr


@pytest.mark.slow
def test_an_app_composes_mammoth_without_importing_it_in_a_wheel_install(tmp_path: Path):
    wheel = build_wheel(tmp_path)
    python = venv_seeing_current_packages(tmp_path / "venv")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", str(wheel)],
                   check=True, timeout=300)
    check_app_without_import(python, tmp_path / "app")


@pytest.mark.slow
def test_an_app_composes_mammoth_without_importing_it_in_an_editable_install(tmp_path: Path):
    python = venv_seeing_current_packages(tmp_path / "venv")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--ignore-installed",
                    "-e", str(REPO)], check=True, timeout=300, capture_output=True)
    where = run_python(["-c", "import hydra_plugins.mammoth_searchpath as p; print(p.__file__)"], tmp_path, python=python)
    assert str(REPO) in where.stdout, where.stderr
    check_app_without_import(python, tmp_path / "app")
