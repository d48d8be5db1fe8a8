"""mammoth-cl next to other Hydra apps: apps that do not opt in behave exactly as without it;
apps that opt in (``hydra.searchpath: [pkg://mammoth.conf]``) compose mammoth's backbones, models
and datasets with no ``import mammoth``. In a wheel and in an editable install, each built once
in a fresh virtual environment."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

from conftest import REPO, run_python
from fake_plugins import PLUG_NET

#: What each app prints when it runs: its own config and whether torch or mammoth were imported.
REPORT = 'print("RAN", {values}, sorted(name for name in ("torch", "mammoth") if name in sys.modules))'

#: Hydra's tutorial pattern: a ConfigStore-only app whose primary config is named ``config``.
STORE_APP = '''
import sys
from dataclasses import dataclass

import hydra
from hydra.core.config_store import ConfigStore


@dataclass
class Config:
    seed: int = 1
    name: str = "store-app"


ConfigStore.instance().store(name="config", node=Config)


@hydra.main(config_path=None, config_name="config", version_base="1.3")
def app(cfg):
    ''' + REPORT.format(values="cfg.seed, cfg.name") + '''


if __name__ == "__main__":
    app()
'''

#: hydra-zen's pattern: ``store(make_config(...), name="config")``.
ZEN_APP = '''
import sys

from hydra_zen import make_config, store, zen


def task(seed: int, lr: float) -> None:
    ''' + REPORT.format(values="seed, lr") + '''


store(make_config(seed=1, lr=0.1), name="config")

if __name__ == "__main__":
    store.add_to_hydra_store()
    zen(task).hydra_main(config_name="config", config_path=None, version_base="1.3")
'''

#: lightning-hydra-template's pattern: YAML groups named like mammoth's (model/, logger/, experiment/).
YAML_APP = '''
import sys

import hydra


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def app(cfg):
    ''' + REPORT.format(values="cfg.seed, cfg.model.width, cfg.logger.kind") + '''


if __name__ == "__main__":
    app()
'''

YAML_APP_FILES = {
    "conf/config.yaml": "defaults:\n  - model: small\n  - logger: console\n  - _self_\n  - experiment: null\n\nseed: 7\n",
    "conf/model/small.yaml": "width: 8\n",
    "conf/model/big.yaml": "width: 64\n",
    "conf/logger/console.yaml": "kind: console\n",
    "conf/experiment/quick.yaml": "# @package _global_\nseed: 1\nmodel:\n  width: 2\n",
}

#: An app that opted in, and never imports mammoth.
OPTED_IN_APP = '''
import sys

import hydra
from hydra.utils import instantiate


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def app(cfg):
    net = instantiate(cfg.backbone, num_classes=10, input_shape=(3, 32, 32))
    print("NET", type(net).__name__, net.num_classes, getattr(net, "depth", None))


if __name__ == "__main__":
    app()
'''

OPT_IN_LINE = "hydra:\n  searchpath: [pkg://mammoth.conf]\n"



def write_files(root: Path, files: dict[str, str]) -> Path:
    """Write ``files`` (relative path -> text) under ``root``; return ``root``."""
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def add_distribution(root: Path, name: str, entry_points: str, module: str | None = None) -> None:
    """A distribution ``name`` in ``root`` (a sys.path entry) declaring ``entry_points``
    (``entry_points.txt`` text), with ``module`` as ``name.py`` when given."""
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    if module is not None:
        (root / f"{name}.py").write_text(module)


def other_apps(root: Path) -> dict[str, tuple[Path, list[str]]]:
    """The three apps that do not opt in, each in its own folder next to a broken ``mammoth.plugins``
    entry point (their folder is on sys.path): name -> (folder, its own option for completion)."""
    apps = {
        "store": (write_files(root / "store", {"app.py": STORE_APP}), "seed="),
        "zen": (write_files(root / "zen", {"app.py": ZEN_APP}), "lr="),
        "yaml": (write_files(root / "yaml", {"app.py": YAML_APP, **YAML_APP_FILES}), "model="),
    }
    for folder, _ in apps.values():
        add_distribution(folder, "broken_mammoth_plugin", "[mammoth.plugins]\nbroken = no_such_module_for_mammoth\n")
    return apps


def completion(python: str, folder: Path, line: str) -> subprocess.CompletedProcess:
    """What Hydra's bash completion offers after ``python app.py LINE`` (its ``-sc query=bash``)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("HYDRA_")}
    env.update(PYTHONPATH=str(folder), COMP_LINE=f"python app.py {line}")
    return subprocess.run([python, "app.py", "-sc", "query=bash"], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=900)


def installed_plugins(text: str) -> str:
    """The list of installed plugins in ``--info plugins`` (without the import times after it,
    which differ from run to run)."""
    return text.split("Total plugins scan time", 1)[0]


def behaviour(python: str, folder: Path, word: str) -> dict[str, tuple[int, str, str]]:
    """What an app does: it runs, shows its config, help and plugins, and completes, under ``python``."""
    commands = {
        "run": ["app.py", "seed=3", "hydra.run.dir=run"],
        "cfg": ["app.py", "--cfg", "job"],
        "help": ["app.py", "--help"],
        "defaults": ["app.py", "--info", "defaults"],
        "plugins": ["app.py", "--info", "plugins"],
    }
    seen = {}
    for name, args in commands.items():
        result = run_python(args, folder, python=python)
        stdout = installed_plugins(result.stdout) if name == "plugins" else result.stdout
        seen[name] = (result.returncode, stdout, result.stderr)
    for line in ("", word):
        result = completion(python, folder, line)
        seen[f"complete {line!r}"] = (result.returncode, result.stdout, result.stderr)
    return seen


def help_groups(text: str) -> dict[str, str]:
    """The ``group: options`` lines of Hydra's default ``--help``, by group."""
    section = text.split("== Configuration groups ==", 1)[1].split("== Config ==", 1)[0]
    return {line.split(": ", 1)[0]: line.split(": ", 1)[1] for line in section.splitlines() if ": " in line}


def check_yaml_app_is_its_own(seen: dict[str, tuple[int, str, str]], python: str, folder: Path) -> None:
    """The YAML app's groups are its own: its help, its completion, and no ``logger/wandb``."""
    assert seen["run"][:2] == (0, "RAN 3 8 console []\n"), seen["run"]
    assert help_groups(seen["help"][1]) == {"experiment": "quick", "logger": "console", "model": "big, small"}
    assert seen["complete 'model='"][1].split() == ["model=big", "model=small"]
    wandb = run_python(["app.py", "logger=wandb"], folder, python=python)
    assert wandb.returncode == 1 and "Could not find 'logger/wandb'" in wandb.stderr, wandb.stderr


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


def check_opted_in_app(python: str, root: Path, everything: bool = True) -> None:
    """An app whose primary config opts in composes mammoth's groups (and an installed plugin's
    backbone) with no ``import mammoth``: run, then (``everything``) ``--cfg job``, ``--help``,
    ``--info``, completion and the compose API; it sees neither mammoth's own primary config nor
    its internal groups."""
    folder = write_files(root, {
        "app.py": OPTED_IN_APP,
        "conf/config.yaml": "defaults:\n  - backbone: resnet\n  - _self_\n\n" + OPT_IN_LINE + "\nlr: 0.1\n",
        "conf/bare.yaml": "lr: 0.1\n",
    })
    add_distribution(folder, "plugin_for_mammoth", "[mammoth.plugins]\nnet = plugin_for_mammoth\n", PLUG_NET)
    ran = run_python(["app.py", "backbone.depth=34", "backbone.width=4", "hydra.run.dir=run"], folder, python=python)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == ["NET ResNet 10 34"]
    plugin = run_python(["app.py", "backbone=plug-net", "backbone.hidden=3", "hydra.run.dir=run"], folder, python=python)
    assert plugin.stdout.splitlines() == ["NET PlugNet 10 None"], plugin.stderr
    if not everything:
        return
    shown = run_python(["app.py", "--cfg", "job"], folder, python=python)
    assert shown.stdout.splitlines()[:2] == ["backbone:", "  _target_: mammoth.backbones.resnet.ResNet"], shown.stderr
    assert shown.stdout.splitlines()[-1] == "lr: 0.1"
    helped = run_python(["app.py", "--help"], folder, python=python)
    # Hydra's --help lists the groups of the app's own search path (it has none), not hydra.searchpath's
    assert helped.returncode == 0 and help_groups(helped.stdout) == {}, helped.stdout + helped.stderr
    assert helped.stdout.startswith("app is powered by Hydra."), helped.stdout  # Hydra's help, not mammoth's
    info = run_python(["app.py", "--info", "all"], folder, python=python)
    assert info.returncode == 0, info.stderr
    assert "| hydra.searchpath in main | pkg://mammoth.conf" in info.stdout and "backbone/resnet" in info.stdout
    assert "mammoth_schema" not in info.stdout and "job_logging/mammoth" not in info.stdout
    completed = completion(python, folder, "backbone=")
    assert {"backbone=resnet", "backbone=vit", "backbone=plug-net"} <= set(completed.stdout.split())
    assert {"model=der", "model=er"} <= set(completion(python, folder, "model=").stdout.split())
    assert completion(python, folder, "backbone/").stdout.split() == []  # no helper group under backbone/
    # the same line on the command line; the compose API, with mammoth imported before or never
    command_line = run_python(["app.py", "-cn", "bare", "hydra.searchpath=[pkg://mammoth.conf]", "+model=er",
                               "--cfg", "job"], folder, python=python)
    assert "  _target_: mammoth.models.er.ER" in command_line.stdout.splitlines(), command_line.stderr
    for first in ("", "import mammoth\n"):
        code = first + textwrap.dedent('''
            from hydra import compose, initialize
            from hydra.core.config_store import ConfigStore
            from hydra.utils import instantiate
            with initialize(config_path="conf", version_base="1.3"):
                cfg = compose("config", overrides=["backbone.depth=50", "backbone.width=4", "+dataset=seq-cifar10"])
            net = instantiate(cfg.backbone, num_classes=7, input_shape=(3, 32, 32))
            stored = sorted(name for name in ConfigStore.instance().repo if not name.startswith("mammoth-option-"))
            print(type(net).__name__, net.depth, net.num_classes, cfg.dataset.name, stored)
        ''')
        composed = run_python(["-c", code], folder, python=python)
        assert composed.stdout.split() == [
            "ResNet", "50", "7", "seq-cifar10", "['_dummy_empty_config_.yaml',", "'hydra']"], composed.stderr


@pytest.fixture(scope="module")
def wheel_install(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, dict, dict]:
    """A venv where the apps that do not opt in first run without mammoth-cl, then mammoth-cl's
    wheel is installed: (its python, a folder, the apps, what each app did without mammoth-cl)."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(tmp_path)
    python = venv_seeing_current_packages(tmp_path / "venv")
    apps = other_apps(tmp_path / "apps")
    missing = run_python(["-c", "import mammoth"], tmp_path, python=python)
    assert "No module named 'mammoth'" in missing.stderr
    before = {name: behaviour(python, folder, word) for name, (folder, word) in apps.items()}
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", str(wheel)],
                   check=True, timeout=300)
    return python, tmp_path, apps, before


@pytest.mark.slow
def test_apps_that_do_not_opt_in_behave_as_without_mammoth(wheel_install: tuple[str, Path, dict, dict]):
    python, _, apps, before = wheel_install
    for name, (folder, word) in apps.items():
        after = behaviour(python, folder, word)
        for command, result in after.items():
            assert result == before[name][command], (name, command)
        assert after["run"][0] == 0 and after["run"][1].endswith(" []\n"), after["run"]  # no torch, no mammoth
        assert all(not stderr for _, _, stderr in after.values()), name  # no warning from the broken plugin
        assert "mammoth" not in after["help"][1] and "mammoth" not in after["plugins"][1]
        if name == "yaml":
            check_yaml_app_is_its_own(after, python, folder)


@pytest.mark.slow
def test_wheel_runs_mammoth_from_any_directory_and_apps_opt_in(wheel_install: tuple[str, Path, dict, dict]):
    python, tmp_path, _, _ = wheel_install
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run_python(["-c", "import mammoth; print(mammoth.__file__)"], elsewhere, python=python)
    assert str(tmp_path / "venv") in where.stdout, where.stdout + where.stderr
    assert Path(where.stdout.strip()).with_name("py.typed").is_file()  # PEP 561: typed for type checkers
    result = run_python(["-m", "mammoth", "--cfg", "job"], elsewhere, python=python)
    assert result.returncode == 0, result.stderr
    assert "name: seq-digits" in result.stdout and "_target_: mammoth.backbones.mlp.MNISTMLP" in result.stdout
    check_opted_in_app(python, tmp_path / "opted-in")


@pytest.mark.slow
def test_editable_install_maps_only_mammoth_and_apps_opt_in(tmp_path: Path):
    python = venv_seeing_current_packages(tmp_path / "venv")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--ignore-installed",
                    "-e", str(REPO)], check=True, timeout=300, capture_output=True)
    code = ("import importlib\n"
            "for name in ('mammoth', 'mammoth.app.conf', 'conf', 'tests', 'scripts', 'hydra_plugins.mammoth_searchpath'):\n"
            "    try:\n"
            "        print(name, importlib.import_module(name).__file__)\n"
            "    except ImportError:\n"
            "        print(name, None)\n")
    found = dict(line.split(" ", 1) for line in run_python(["-c", code], tmp_path, python=python).stdout.splitlines())
    assert found["mammoth"] == str(REPO / "mammoth" / "__init__.py")
    assert found["mammoth.app.conf"] == str(REPO / "mammoth" / "app" / "conf" / "__init__.py")
    assert [found[name] for name in ("conf", "tests", "scripts", "hydra_plugins.mammoth_searchpath")] == ["None"] * 4
    # the editable finder serves pkg://mammoth.conf: an opted-in app runs with mammoth's and a plugin's
    # options (the rest of the opted-in app's behaviour does not depend on the install: the wheel test)
    check_opted_in_app(python, tmp_path / "opted-in", everything=False)
