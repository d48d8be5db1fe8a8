"""Every override form Hydra accepts gets Hydra's meaning or one line, and a bad command line exits
with status 2 whether Hydra or mammoth finds it (issue 22): ``~group`` and ``~setting``, ``glob()``
sweeps, ``interval()`` and ``tag()`` with the basic sweeper, overrides Hydra cannot compose."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from conftest import run_warm_python
from mammoth.__main__ import hydra_main, main
from mammoth.app.preflight import prepare_arguments
from mammoth.errors import ConfigError

BACKBONES = "mnistmlp, reduced-resnet18, resnet, resnet18, resnet34, resnet50, timm, torchvision, vit"
TINY = ["dataset.n_epochs=1", "threads=1"]


def refused(args: list[str], workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> list[str]:
    """Run ``python -m mammoth ARGS`` in-process in ``workdir``; assert it exits with status 2 before
    writing anything; return the lines it printed to stderr."""
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(sys, "argv", ["mammoth", *args])
    monkeypatch.setattr(sys, "path", list(sys.path))  # main() takes the working directory off sys.path
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    assert list(workdir.iterdir()) == []  # no run or sweep directory, no outputs/
    lines = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(lines)
    return lines


@pytest.mark.parametrize("multirun", [[], ["-m"]])
@pytest.mark.parametrize("override, group", [("~backbone", "backbone"), ("~model", "model"), ("~dataset", "dataset"),
                                             ("~backbone=resnet", "backbone")])
def test_deleting_a_group_every_run_needs_is_one_line(workdir, monkeypatch, capsys, multirun, override, group):
    # before: IndexError: list index out of range (config/group_arguments.py), exit status 1
    lines = refused([*multirun, override], workdir, monkeypatch, capsys)
    assert lines[0].startswith(f"Error: {override}: every run needs a {group}, so it cannot be deleted; "
                               f"allowed: {group}=NAME to choose another (")
    if group == "backbone":
        assert lines == [f"Error: {override}: every run needs a backbone, so it cannot be deleted; "
                         f"allowed: backbone=NAME to choose another ({BACKBONES})"]


@pytest.mark.parametrize("setting", ["seed", "device", "resume"])
def test_deleting_a_required_setting_is_refused(workdir, monkeypatch, capsys, setting):
    # before: ~seed ran with seed 0 while its config recorded no seed
    assert refused([f"~{setting}"], workdir, monkeypatch, capsys) == [
        f"Error: ~{setting}: {setting} is required, so it cannot be deleted; allowed: {setting}=VALUE to change it"]


def test_deleting_a_setting_that_is_null_is_hydras_own_error(workdir, monkeypatch, capsys):
    assert refused(["~threads"], workdir, monkeypatch, capsys) == [
        "Could not delete from config. 'threads' does not exist."]


def test_deleting_an_argument_of_a_closed_schema_is_hydras_own_error(workdir, monkeypatch, capsys):
    lines = refused(["~model.lr"], workdir, monkeypatch, capsys)
    assert lines[:2] == ["Error merging override ~model.lr", "DictConfig in struct mode does not support deletion"]


def test_deleting_the_logger_runs_without_one(workdir: Path):
    # before: IndexError: list index out of range; the natural way to turn logging off
    checked = prepare_arguments(["~logger", f"hydra.run.dir={workdir / 'run'}"], hydra_main)
    assert checked.args[0] == "~logger" and not checked.multirun
    result = run_warm_python(["-m", "mammoth", "~logger", *TINY, "hydra.run.dir=run"], workdir)
    assert result.returncode == 0, result.stderr
    run = workdir / "run"
    assert json.loads((run / "results.json").read_text())["config"]["logger"] is None
    assert yaml.safe_load((run / ".hydra" / "config.yaml").read_text())["logger"] is None
    assert not (run / "metrics.csv").exists()  # the default csv logger's file


def test_a_glob_sweep_gets_the_plus_plus_rewrite_of_a_list(workdir: Path):
    # before: Hydra composed the sweep's own config with mnistmlp and failed on its missing width
    for glob in ("glob(resnet*)", "glob(resnet18)", "glob([resnet1*,resnet3*],exclude=resnet34)"):
        checked = prepare_arguments(["-m", f"backbone={glob}", "backbone.width=4", f"hydra.sweep.dir={workdir / 's'}"],
                                    hydra_main)
        assert checked.multirun and checked.args == ["-m", f"backbone={glob}", "++backbone.width=4",
                                                     f"hydra.sweep.dir={workdir / 's'}"], glob
    listed = prepare_arguments(["-m", "backbone=resnet,resnet18,resnet34,resnet50", "backbone.width=4"], hydra_main)
    assert listed.args[2] == "++backbone.width=4"


def test_a_glob_sweep_gets_the_typo_checks_of_a_list(workdir: Path):
    with pytest.raises(ConfigError) as error:
        prepare_arguments(["-m", "backbone=glob(*)", "backbone.widht=4"], hydra_main)
    assert str(error.value).startswith("unknown argument 'widht' for backbone 'mnistmlp'")
    with pytest.raises(ConfigError) as error:
        prepare_arguments(["-m", "backbone=glob(*)", "backbone.width=4"], hydra_main)
    assert str(error.value).startswith("backbone.width=4: backbone 'mnistmlp', 'timm', 'torchvision' have no argument "
                                       "'width' (reduced-resnet18, resnet, resnet18, resnet34, resnet50, vit have); "
                                       "to sweep backbones whose arguments differ, use ++backbone.width=4")


@pytest.mark.parametrize("multirun", [[], ["-m"]])
def test_a_glob_that_matches_no_option_is_refused(workdir, monkeypatch, capsys, multirun):
    # before: -m 'backbone=glob(resnt*)' launched 0 jobs and exited with 0
    assert refused([*multirun, "backbone=glob(resnt*)"], workdir, monkeypatch, capsys) == [
        f"Error: backbone=glob(resnt*): matches no backbone option; allowed: a glob of {BACKBONES} "
        "(did you mean 'resnet'?)"]


@pytest.mark.slow
def test_a_glob_sweep_runs_each_match_with_the_argument(workdir: Path):
    result = run_warm_python(["-m", "mammoth", "-m", "backbone=glob(resnet1*)", "backbone.width=4", *TINY,
                         "hydra.sweep.dir=sweep"], workdir)
    assert result.returncode == 0, result.stderr
    (job,) = sorted(path for path in (workdir / "sweep").iterdir() if path.is_dir())
    config = json.loads((job / "results.json").read_text())["config"]
    assert config["backbone"]["_target_"] == "mammoth.backbones.resnet.resnet18" and config["backbone"]["width"] == 4


@pytest.mark.parametrize("sweep", ["model.lr=interval(0.01,0.1)", "model.lr=tag(fast,interval(0.01,0.1))"])
def test_an_interval_with_the_basic_sweeper_is_hydras_line(workdir, monkeypatch, capsys, sweep):
    # before: a traceback from mammoth's pre-flight, ending in Hydra's HydraException, exit status 1
    assert refused(["-m", sweep], workdir, monkeypatch, capsys) == [
        f"Error: {sweep}: BasicSweeper does not support sweep type : INTERVAL_SWEEP; allowed: a list, range(), "
        "choice() or glob() with the basic sweeper, or interval() in a search by another sweeper (hydra/sweeper=optuna)"]


def test_a_tagged_choice_keeps_hydras_meaning(workdir: Path):
    checked = prepare_arguments(["-m", "model.lr=tag(fast,choice(0.01,0.1))", f"hydra.sweep.dir={workdir / 's'}"],
                                hydra_main)
    assert checked.multirun and checked.args[1] == "model.lr=tag(fast,choice(0.01,0.1))"


@pytest.mark.parametrize("args, first", [
    (["seed=abc"], "Error merging override seed=abc"),
    (["+seed=3"], "Could not append to config. An item is already at 'seed'."),
    (["model.lr=0.1,0.2"], "Ambiguous value for argument 'model.lr=0.1,0.2'"),  # a sweep without -m
    (["backbone=resnet", "backbone.depth=abc"], "Error merging override backbone.depth=abc"),
    (["-m", "model.lr=tag(fast,0.1)"], "Error parsing override 'model.lr=tag(fast,0.1)'"),
    (["backbone=resnet", "backbone.depth=19"],
     "Error: backbone.depth: invalid value 19 for argument 'depth': allowed values: 18, 34, 50, 101, 152"),
    (["dataset=seq-digits", "dataset.validation=abc"], "Error merging override dataset.validation=abc"),
])
def test_a_bad_command_line_exits_with_2(workdir, monkeypatch, capsys, args, first):
    # before: exit status 1 for each (docs/security.md says 2 for a bad command line)
    assert refused(args, workdir, monkeypatch, capsys)[0] == first


def test_the_exit_status_of_a_process_given_a_bad_command_line(workdir: Path):
    for args in (["seed=abc"], ["backbone=resnet", "backbone.depth=19"], ["-m", "model.lr=interval(0.01,0.1)"]):
        result = run_warm_python(["-m", "mammoth", *args], workdir)
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr and result.stderr.strip(), args
    assert list(workdir.iterdir()) == []


@pytest.mark.parametrize("args, line", [
    (["-m", "--cfg", "job"], "Error: --multirun --cfg: only one of --run, --multirun, --cfg, --info and --shell_completion "
                             "can be specified (Hydra); allowed: one of them"),
    (["--resolve"], "Error: --resolve: the --resolve flag can only be used in conjunction with --cfg or --help (Hydra); "
                    "allowed: --cfg job --resolve"),
])
def test_flags_hydra_refuses_are_one_line(workdir, monkeypatch, capsys, args, line):
    # before: Hydra's ValueError with a traceback, exit status 1
    assert refused(args, workdir, monkeypatch, capsys) == [line]


@pytest.mark.parametrize("args, line", [
    (["dataset=seq-cifar100", "dataset.base_classes=50", "dataset.increment=10", "dataset.n_tasks=5"],
     "Error: dataset.n_tasks=5 contradicts dataset.base_classes=50 dataset.increment=10, which split seq-cifar100's "
     "100 classes into 6 tasks (50, 10, 10, 10, 10, 10); allowed: dataset.n_tasks=6 or null"),
    (["dataset.base_classes=11", "dataset.increment=2"],
     "Error: dataset.base_classes=11 is not allowed for seq-digits; allowed: 1..10 (its 10 classes)"),
    (["dataset.increment=0"], "Error: dataset.increment=0 is not a positive integer; allowed: increment >= 1"),
    (["dataset=perm-mnist", "dataset.base_classes=5"],
     "Error: dataset.base_classes=5 is not allowed for perm-mnist: a domain-il benchmark has all its classes in every "
     "task; allowed: null (dataset.n_tasks sets the number of tasks)"),
    (["dataset.n_tasks=3"], "Error: dataset.n_tasks=3 is not allowed for seq-digits; allowed: a number of tasks that "
     "divides its 10 classes evenly: 1, 2, 5, 10 (default 5), or dataset.base_classes and dataset.increment for tasks "
     "of unequal size"),
])
def test_tasks_that_cannot_be_made_are_a_bad_command_line(workdir, monkeypatch, capsys, args, line):
    # before: dataset.n_tasks=3 was refused when the run built the dataset, with exit status 1
    assert refused([*args, *TINY], workdir, monkeypatch, capsys) == [line]
