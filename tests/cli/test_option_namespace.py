"""mammoth's options live in their own namespace until an app asks for them (``pkg://mammoth.conf``),
and what composes a config (``--help``, ``--info``, ``--cfg``, ``--version``, completion) does not
import torch, in ``python -m mammoth`` and in an app that opted in."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from conftest import run_python

#: An app that prints its composed config; ``IMPORT`` is replaced by what it imports first.
APP = '''
IMPORT
import hydra
from omegaconf import OmegaConf


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def app(cfg):
    print("RAN", OmegaConf.to_container(cfg, resolve=True))


if __name__ == "__main__":
    app()
'''

OPT_IN = "hydra:\n  searchpath: [pkg://mammoth.conf]\n"

#: Hydra's warning when it merges a config file into a ConfigStore schema of the same name.
SCHEMA_MATCHING = "validated against ConfigStore schema"


def write(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def help_groups(text: str) -> dict[str, str]:
    section = text.split("== Configuration groups ==", 1)[1].split("== Config ==", 1)[0]
    return {line.split(": ", 1)[0]: line.split(": ", 1)[1] for line in section.splitlines() if ": " in line}


def ran(result) -> str:
    assert result.returncode == 0, result.stderr
    assert SCHEMA_MATCHING not in result.stderr and "Traceback" not in result.stderr, result.stderr
    return [line for line in result.stdout.splitlines() if line.startswith("RAN")][0]


def test_an_opted_in_apps_own_options_named_like_mammoths_win_cleanly(workdir: Path):
    write(workdir, {
        "app.py": APP.replace("IMPORT", ""),
        "conf/config.yaml": "defaults:\n  - backbone: resnet\n  - dataset: seq-cifar10\n  - _self_\n" + OPT_IN,
        "conf/backbone/resnet.yaml": "kind: mine\n",
        "conf/dataset/seq-cifar10.yaml": "mine: 1\n",
    })
    assert ran(run_python(["app.py", "hydra.run.dir=run"], workdir)) == \
        "RAN {'backbone': {'kind': 'mine'}, 'dataset': {'mine': 1}}"
    # mammoth's other options are still there, typed and closed
    vit = ran(run_python(["app.py", "backbone=vit", "backbone.depth=2", "hydra.run.dir=run"], workdir))
    assert vit.startswith("RAN {'backbone': {'_target_': 'mammoth.backbones.vit.VisionTransformer'")
    # ... and closed: tests/cli/test_closed_schemas.py
    helped = run_python(["app.py", "--help"], workdir)  # Hydra lists the groups of the app's own config directory
    assert helped.returncode == 0 and not helped.stderr, helped.stderr
    assert help_groups(helped.stdout) == {"backbone": "resnet", "dataset": "seq-cifar10"}
    completed = run_python(["app.py", "-sc", "query=bash"], workdir, extra_env={"COMP_LINE": "python app.py backbone="})
    assert {"backbone=resnet", "backbone=vit", "backbone=mnistmlp"} <= set(completed.stdout.split()), completed.stderr
    # a sweep over its own and mammoth's option: each job gets the same config in either order
    jobs = {}
    for index, values in enumerate(("resnet,vit", "vit,resnet")):
        swept = run_python(["app.py", "-m", f"backbone={values}", f"hydra.sweep.dir=sweep{index}"], workdir)
        assert swept.returncode == 0 and SCHEMA_MATCHING not in swept.stderr, swept.stderr
        jobs[values] = sorted(line for line in swept.stdout.splitlines() if line.startswith("RAN"))
    assert jobs["resnet,vit"] == jobs["vit,resnet"] and len(jobs["resnet,vit"]) == 2


def test_an_app_that_imports_mammoths_api_without_opting_in_sees_only_its_own_options(workdir: Path):
    write(workdir, {
        "app.py": APP.replace("IMPORT", "from mammoth import build_backbone, list_backbones\nlist_backbones()"),
        "conf/config.yaml": "defaults:\n  - backbone: small\n  - _self_\n",
        "conf/backbone/small.yaml": "width: 2\n",
        "conf/backbone/vit.yaml": "width: 3\n",
    })
    helped = run_python(["app.py", "--help"], workdir)
    assert help_groups(helped.stdout) == {"backbone": "small, vit"}, helped.stdout
    unknown = run_python(["app.py", "backbone=resnet", "hydra.run.dir=run"], workdir)
    assert unknown.returncode == 1 and "Could not find 'backbone/resnet'" in unknown.stderr
    for index, values in enumerate(("small,vit", "vit,small")):
        swept = run_python(["app.py", "-m", f"backbone={values}", f"hydra.sweep.dir=sweep{index}"], workdir)
        assert swept.returncode == 0 and SCHEMA_MATCHING not in swept.stderr, swept.stderr
        assert sorted(line for line in swept.stdout.splitlines() if line.startswith("RAN")) == [
            "RAN {'backbone': {'width': 2}}", "RAN {'backbone': {'width': 3}}"]


ZEN_APP = '''
from mammoth import build_backbone
from hydra_zen import make_config, store, zen

store(make_config(width=3), group="backbone", name="resnet")
store(make_config(backbone=None, hydra_defaults=["_self_", {"backbone": "resnet"}]), name="config")


def task(backbone):
    print("RAN", backbone.width)


if __name__ == "__main__":
    store.add_to_hydra_store()
    zen(task).hydra_main(config_name="config", config_path=None, version_base="1.3")
'''


def test_a_hydra_zen_store_named_like_a_mammoth_option_works_unless_the_app_opted_in(workdir: Path):
    write(workdir, {"app.py": ZEN_APP})
    assert ran(run_python(["app.py", "hydra.run.dir=run"], workdir)) == "RAN 3"
    # opted in: Hydra would merge mammoth's file into the app's entry (hydra.searchpath comes first)
    opted_in = run_python(["app.py", "hydra.searchpath=[pkg://mammoth.conf]", "hydra.run.dir=run"], workdir)
    assert opted_in.returncode == 1 and "RAN" not in opted_in.stdout and SCHEMA_MATCHING not in opted_in.stderr
    assert opted_in.stderr.splitlines()[0] == (
        "backbone/resnet is both mammoth's backbone option (pkg://mammoth.conf/backbone/resnet.yaml) and this app's "
        "ConfigStore entry; allowed: another name for the app's entry, or mammoth's options without "
        "opting in to them"), opted_in.stderr


def test_a_config_dir_option_named_like_a_built_in_is_refused_in_one_line(workdir: Path):
    write(workdir, {"myconf/backbone/resnet34.yaml": "depth: 50\n"})
    for extra in ([], ["backbone=mnistmlp"]):  # selected or not
        result = run_python(["-m", "mammoth", "--config-dir", "myconf", *extra, "--cfg", "job"], workdir)
        assert result.returncode == 2 and not result.stdout
        assert result.stderr.strip().splitlines() == [
            f"Error: file://{workdir / 'myconf'}/backbone/resnet34.yaml has the name of mammoth's backbone option "
            "'resnet34', which comes first on the search path, so yours would be ignored; allowed: another name for "
            "yours (it may extend mammoth's with defaults: [resnet34, _self_])"]


#: Runs a command as ``python -m mammoth`` or ``python app.py`` would, then says whether torch was imported.
TORCH_PROBE = '''
import runpy, sys
sys.argv = sys.argv[1:]
try:
    if sys.argv[0] == "mammoth":
        runpy.run_module("mammoth", run_name="__main__")
    else:
        runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exit:
    assert exit.code in (None, 0), exit.code
print("TORCH", "torch" in sys.modules, [name for name in ("mammoth.backbones", "mammoth.models") if name in sys.modules])
'''

OPTED_IN_APP = APP.replace("IMPORT", "")


@pytest.mark.parametrize("program", ["mammoth", "app.py"])
def test_composing_commands_do_not_import_torch(workdir: Path, program: str):
    write(workdir, {"probe.py": TORCH_PROBE, "app.py": OPTED_IN_APP,
                    "conf/config.yaml": "defaults:\n  - backbone: resnet\n  - model: er\n  - _self_\n" + OPT_IN})
    commands = [["--help"], ["--info", "defaults"], ["--cfg", "job"], ["--version"],
                ["backbone=vit", "backbone.depth=3", "model=der", "model.buffer_size=5", "--cfg", "job"]]
    for args in commands:
        result = run_python(["probe.py", program, *args], workdir)
        assert result.returncode == 0, (args, result.stderr)
        assert result.stdout.splitlines()[-1] == "TORCH False []", (args, result.stdout[-500:])
    for line in ("", "backbone=", "model=er model.buffer"):
        result = run_python(["probe.py", program, "-sc", "query=bash"], workdir, extra_env={"COMP_LINE": f"{program} {line}"})
        assert result.stdout.splitlines()[-1] == "TORCH False []", (line, result.stderr)
        offered = result.stdout.splitlines()[0].split()
        expected = {"": "backbone=", "backbone=": "backbone=resnet", "model=er model.buffer": "model.buffer_size="}[line]
        assert expected in offered, (line, offered)
