"""mammoth used as a Hydra user would: user config dirs, search paths, -cn, failing sweep jobs,
tab completion, hydra.verbose, and mammoth's configs composed by another app that opted in and
never imports mammoth."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import run_python
from mammoth.__main__ import hydra_main
from mammoth.app.preflight import prepare_arguments
from mammoth.errors import ConfigError


def write(path: Path, text: str) -> Path:
    """Write ``text`` (dedented) to ``path``, creating its folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def config_dir(workdir: Path) -> Path:
    """A user config dir with a backbone option, an experiment and a primary config of its own."""
    root = workdir / "myconf"
    write(root / "backbone" / "wide-resnet.yaml", """\
        defaults:
          - resnet
          - _self_
        depth: 34
        width: 8
    """)
    write(root / "myexp.yaml", """\
        defaults:
          - config
          - override model: er
          - _self_
        model:
          buffer_size: 50
    """)
    return root


def test_backbone_option_from_a_config_dir_is_normalised(workdir: Path, config_dir: Path):
    result = run_python(["-m", "mammoth", "--config-dir", str(config_dir), "backbone=Wide_ResNet",
                         "backbone.stem=imagenet", "--cfg", "job"], workdir)
    assert result.returncode == 0, result.stderr
    assert "_target_: mammoth.backbones.resnet.ResNet" in result.stdout
    assert "depth: 34" in result.stdout and "width: 8" in result.stdout and "stem: imagenet" in result.stdout


def test_backbone_option_from_hydra_searchpath(workdir: Path, config_dir: Path):
    result = run_python(["-m", "mammoth", f"hydra.searchpath=[file://{config_dir}]", "backbone=wide-resnet",
                         "--cfg", "job"], workdir)
    assert result.returncode == 0, result.stderr
    assert "depth: 34" in result.stdout  # a misspelt one: tests/cli/test_compose.py


def test_arguments_are_checked_against_the_model_a_primary_config_selects(workdir: Path, config_dir: Path):
    base = ["-m", "mammoth", "--config-dir", str(config_dir), "-cn", "myexp"]
    good = run_python([*base, "model.minibatch_size=10", "--cfg", "job"], workdir)
    assert good.returncode == 0, good.stderr
    assert "buffer_size: 50" in good.stdout and "minibatch_size: 10" in good.stdout
    # the pre-flight's message, in process (python -m mammoth prints it as one line, exit status 2)
    with pytest.raises(ConfigError) as bad:
        prepare_arguments(["--config-dir", str(config_dir), "-cn", "myexp", "model.alpha=0.3"], hydra_main)
    assert str(bad.value).startswith("unknown argument 'alpha' for model 'er' (model.alpha); its arguments:")
    assert "buffer_size" in str(bad.value)


def test_experiment_in_an_override_word_does_not_turn_checks_off():
    with pytest.raises(ConfigError, match="^unknown argument 'bufer_size' for model 'der'"):
        prepare_arguments(["experiment=der-seq-cifar10", "model.bufer_size=3"], hydra_main)


@pytest.mark.slow
def test_a_failing_job_fails_alone_and_the_sweep_goes_on(workdir: Path):
    # sgd has no buffer_size: with ++ its job composes and fails naming the argument; er's job runs
    result = run_python(["-m", "mammoth", "-m", "model=sgd,er", "++model.buffer_size=100", "dataset.n_epochs=1",
                         "hydra.sweep.dir=sweep"], workdir)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("Error: unknown argument 'buffer_size' for model 'sgd'")
    assert "Traceback" not in result.stderr
    failed, done = workdir / "sweep" / "0", workdir / "sweep" / "1"
    assert not (failed / "results.json").exists()
    assert "Error: unknown argument 'buffer_size' for model 'sgd' (model.buffer_size)" in (failed / "mammoth.log").read_text()
    assert json.loads((done / "results.json").read_text())["status"] == "complete"


def test_a_single_run_error_is_one_line_and_in_the_log(workdir: Path):
    result = run_python(["-m", "mammoth", "model.lr=-1", "hydra.run.dir=run"], workdir)
    assert result.returncode in (1, 2)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "model.lr" in lines[0]
    assert not (workdir / "run" / "results.json").exists()


def test_a_run_error_from_the_task_function_is_logged(workdir: Path):
    # a buffer larger than the data is only known once the dataset is read: the run fails, not the checks
    result = run_python(["-m", "mammoth", "model=er", "model.buffer_size=100000", "hydra.run.dir=run"], workdir)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [line for line in result.stderr.strip().splitlines() if line.startswith("Error: ")]
    assert "model.buffer_size=100000 is larger than" in result.stderr
    assert "model.buffer_size=100000 is larger than" in (workdir / "run" / "mammoth.log").read_text()
    assert not (workdir / "run" / "results.json").exists()


OTHER_APP = '''
import hydra
from hydra.utils import instantiate


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def app(cfg):
    net = instantiate(cfg.backbone, num_classes=10, input_shape=(3, 32, 32))
    print("NET", type(net).__name__, cfg.get("dataset", {}).get("name"))


if __name__ == "__main__":
    app()
'''


@pytest.fixture
def other_app(workdir: Path) -> Path:
    """A Hydra app that opted in and never imports mammoth, choosing a backbone and a dataset in its defaults."""
    write(workdir / "app.py", OTHER_APP)
    write(workdir / "conf" / "config.yaml", """\
        defaults:
          - backbone: vit
          - dataset: seq-cifar10
          - _self_
        hydra:
          searchpath: [pkg://mammoth.conf]
        lr: 0.1
    """)
    return workdir


def test_another_app_composes_without_importing_mammoth(other_app: Path):
    run = run_python(["app.py", "backbone.depth=2", "hydra.run.dir=."], other_app)
    assert run.returncode == 0, run.stderr
    assert "NET VisionTransformer seq-cifar10" in run.stdout  # its own backbone choice wins over the dataset's
    shown = run_python(["app.py", "backbone=resnet", "backbone.depth=50", "--cfg", "job"], other_app)
    assert shown.returncode == 0, shown.stderr
    assert "_target_: mammoth.backbones.resnet.ResNet" in shown.stdout and "depth: 50" in shown.stdout
    helped = run_python(["app.py", "--help"], other_app)
    assert helped.returncode == 0 and "Traceback" not in helped.stderr, helped.stderr
    # Hydra's --help lists the config groups of the app's own search path, not those that
    # hydra.searchpath adds (as for any pkg:// entry there); completion lists mammoth's options
    assert "== Configuration groups ==\nCompose your configuration from those groups (group=option)\n\n\n" in helped.stdout
    completed = run_python(["app.py", "-sc", "query=bash"], other_app, extra_env={"COMP_LINE": "python app.py backbone="})
    assert {"backbone=resnet", "backbone=vit"} <= set(completed.stdout.split()), completed.stderr
    info = run_python(["app.py", "--info", "defaults"], other_app)
    assert info.returncode == 0, info.stderr
    assert "backbone/vit" in info.stdout and "dataset/seq-cifar10" in info.stdout


def test_the_compose_api_finds_mammoth_configs_without_importing_it(other_app: Path):
    code = textwrap.dedent('''
        import sys
        from hydra import compose, initialize
        with initialize(config_path="conf", version_base="1.3"):
            cfg = compose("config", overrides=["backbone=resnet", "backbone.depth=50"])
        print(cfg.backbone._target_, cfg.backbone.depth, cfg.dataset.name)
    ''')
    result = run_python(["-c", code], other_app)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["mammoth.backbones.resnet.ResNet", "50", "seq-cifar10"]


def test_dataset_default_backbone_applies_only_when_nothing_chose_one(workdir: Path):
    chosen = run_python(["-m", "mammoth", "dataset=seq-cifar10", "--cfg", "job"], workdir)
    assert "_target_: mammoth.backbones.resnet.resnet18" in chosen.stdout
    experiment = workdir / "myconf" / "experiment" / "vit-cifar.yaml"
    write(experiment, """\
        # @package _global_
        defaults:
          - override /dataset: seq-cifar10
          - override /backbone: vit
    """)
    result = run_python(["-m", "mammoth", "--config-dir", str(workdir / "myconf"), "experiment=vit-cifar", "--cfg", "job"], workdir)
    assert result.returncode == 0, result.stderr
    assert "_target_: mammoth.backbones.vit.VisionTransformer" in result.stdout and "name: seq-cifar10" in result.stdout


def test_a_dataset_default_backbone_is_an_ordinary_option(workdir: Path):
    from mammoth.datasets import default_backbone_option

    assert default_backbone_option("Seq_CIFAR10") == "resnet18" and default_backbone_option("seq-digits") == "mnistmlp"
    assert default_backbone_option("my-digits") == "dataset-default/my-digits"
    chosen = run_python(["-m", "mammoth", "dataset=seq-cifar10", "--info", "defaults"], workdir)
    assert "| backbone/resnet18 " in chosen.stdout, chosen.stderr
    # a dataset option of your own (not a registered name) has no default: choose a backbone
    write(workdir / "myconf" / "dataset" / "my-digits.yaml", """\
        defaults:
          - seq-digits
          - _self_
        n_epochs: 1
    """)
    base = ["-m", "mammoth", "--config-dir", str(workdir / "myconf"), "dataset=my-digits"]
    missing = run_python(base, workdir)
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        "Error: dataset option 'my-digits' has no default backbone (no backbone/dataset-default/my-digits config); "
        "allowed: choose one with backbone=NAME, or name a registered dataset")
    chosen = run_python([*base, "backbone=mnistmlp", "--cfg", "job"], workdir)
    assert "  _target_: mammoth.backbones.mlp.MNISTMLP" in chosen.stdout.splitlines(), chosen.stderr
    assert "  n_epochs: 1" in chosen.stdout.splitlines()


def test_a_shared_experiment_cannot_make_hydra_call_a_function(workdir: Path):
    marker = workdir / "called"
    write(workdir / "shared" / "experiment" / "evil.yaml", f"""\
        # @package _global_
        hydra:
          callbacks:
            evil:
              _target_: pathlib.Path.touch
              self: {marker}
    """)
    result = run_python(["-m", "mammoth", "--config-dir", str(workdir / "shared"), "experiment=evil"], workdir)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: hydra.callbacks.evil._target_='pathlib.Path.touch' is not a Hydra Callback class (a subclass of "
        "hydra.experimental.callback.Callback); allowed: a Hydra Callback class (a subclass of hydra.experimental.callback.Callback)")
    assert not marker.exists()
    assert sorted(path.name for path in workdir.iterdir()) == ["shared"]  # no run directory was made


def complete(line: str, cwd: Path) -> list[str]:
    """What Hydra's bash completion offers after ``mammoth LINE`` (the console script's ``-sc query=bash``)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("HYDRA_")}
    env["COMP_LINE"] = f"mammoth {line}"
    mammoth = str(Path(sys.executable).parent / "mammoth")
    result = subprocess.run([mammoth, "-sc", "query=bash"], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_tab_completion_lists_options_and_hides_internal_groups(workdir: Path):
    backbones = complete("backbone=", workdir)
    assert {"backbone=resnet", "backbone=resnet18", "backbone=mnistmlp", "backbone=vit"} <= set(backbones)
    assert all(option.startswith("backbone=") and "/" not in option for option in backbones)
    assert complete("backbone/", workdir) == []  # no helper group such as backbone/dataset-default
    top = complete("", workdir)
    # model has options and a group of its own (model/regularizer): Hydra offers it as "model"
    assert {"dataset=", "model", "experiment=", "hparams_search=", "seed="} <= set(top)
    assert {"model=er", "model=er-ace"} <= set(complete("model=e", workdir))
    assert complete("model=derpp +model/regularizer=", workdir) == ["+model/regularizer=lider", "+model/regularizer=star"]
    assert "model.regularizer.alpha_lip_lambda=" in complete("model=derpp +model/regularizer=lider model.regularizer.", workdir)
    assert not [word for word in top if "dataset-default" in word]
    assert complete("model.buffer", workdir) == []  # sgd has no buffer_size
    assert "model.buffer_size=" in complete("model=er model.buffer", workdir)
    installed = subprocess.run([str(Path(sys.executable).parent / "mammoth"), "-sc", "install=bash"], cwd=workdir,
                               capture_output=True, text=True, timeout=900)
    assert installed.stdout.rstrip().endswith("complete -o nospace -o default -F hydra_bash_completion mammoth")


VERBOSE_LOGGING = textwrap.dedent("""
    import logging
    from importlib import resources

    from hydra.core.utils import configure_log
    from omegaconf import OmegaConf

    config = OmegaConf.create(resources.files("mammoth.app.conf").joinpath("hydra/job_logging/mammoth.yaml").read_text())
    config.handlers.file.filename = "mammoth.log"
    if QUIET is not None:
        config.loggers = {name: level for name, level in config.loggers.items() if name in QUIET}
    configure_log(config, True)  # what hydra.verbose=true does with mammoth's job logging
    logging.getLogger("mammoth.app.runner").debug("a mammoth debug line")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots()
    axes.set_title("accuracy")
    figure.savefig("plot.png")
""")


def test_verbose_shows_mammoth_debug_lines_not_matplotlib_font_lookups(workdir: Path):
    quiet = run_python(["-c", "QUIET = None\n" + VERBOSE_LOGGING], workdir)
    assert quiet.returncode == 0, quiet.stderr
    assert "a mammoth debug line" in quiet.stdout.splitlines()
    assert "findfont" not in quiet.stdout + quiet.stderr and "matplotlib" not in quiet.stdout
    assert "a mammoth debug line" in (workdir / "mammoth.log").read_text()
    # the same logging without the matplotlib entry: its font lookups flood the console
    noisy = run_python(["-c", "QUIET = ['mammoth.failure']\n" + VERBOSE_LOGGING], workdir)
    assert noisy.returncode == 0, noisy.stderr
    assert sum("findfont" in line for line in noisy.stdout.splitlines()) > 10
