"""mammoth.run(cfg): build the dataset, the backbone and the CL method, then train and evaluate."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Iterator

import torch
from omegaconf import DictConfig, OmegaConf

from mammoth.errors import ConfigError

log = logging.getLogger("mammoth")


def output_directory(cfg: DictConfig) -> Path:
    """``output_dir`` if set, else Hydra's run directory, else the working directory; created if
    needed. One that is a file or cannot be written raises a one-line ConfigError naming it."""
    from mammoth.engine.rundir import prepare_directory

    from hydra.core.hydra_config import HydraConfig

    hydra_directory = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None
    if cfg.get("output_dir"):
        if hydra_directory is not None and not Path(cfg.output_dir).is_absolute():
            from mammoth.engine.rundir import path_inside

            return prepare_directory(path_inside(hydra_directory, cfg.output_dir, "output_dir"), "output_dir")
        return prepare_directory(Path(cfg.output_dir), "output_dir")
    if hydra_directory is not None:
        return prepare_directory(hydra_directory, "hydra.run.dir")
    return prepare_directory(Path.cwd(), "the working directory")


def summary_line(name: str, net: Any) -> str:
    """``backbone resnet: 11,173,962 parameters, 512 features, 10 classes``."""
    parameters = sum(p.numel() for p in net.parameters())
    return (
        f"backbone {name}: {parameters:,} parameters, {getattr(net, 'num_features', '?')} features, "
        f"{getattr(net, 'num_classes', '?')} classes"
    )


def check_output_size(net: Any, dataset: Any, backbone_name: str) -> None:
    """The backbone must output at least one logit per class of the dataset."""
    sample = dataset.test_transform(dataset.to_float(dataset.source()[2][:1]))
    was_training = net.training
    net.eval()
    with torch.no_grad():
        logits = net(sample.to(next(net.parameters()).device))
    net.train(was_training)
    if logits.dim() != 2 or logits.shape[1] < dataset.n_classes:
        raise ConfigError(
            f"backbone {backbone_name!r} outputs logits of shape {tuple(logits.shape)}; "
            f"{dataset.name} needs (batch, {dataset.n_classes}) for its {dataset.n_classes} classes"
        )


def run(cfg: DictConfig) -> float:
    """Run one continual-learning experiment from a composed config; return the final average
    accuracy (Class-IL, or Domain-IL). Writes results.json, the plot and checkpoints.

    The run directory is locked for the duration: a second run in it is refused (ConfigError).
    SIGTERM interrupts the run like Ctrl-C (KeyboardInterrupt); either logs one line with the
    command that resumes it, and the checkpoint of the last finished task stays intact.
    """
    from mammoth.config.run_checks import validate_run_config
    from mammoth.engine.rundir import RunLock
    from mammoth.config.safety import check_config_safety

    check_config_safety(cfg, hydra=_hydra_node(), output_dir_in_run_directory=False)  # python -m mammoth checked it
    validate_run_config(cfg)
    run_dir = output_directory(cfg)
    with RunLock(run_dir), _sigterm_interrupts():
        try:
            return _run(cfg, run_dir)
        except KeyboardInterrupt as interruption:
            from mammoth.reporting.callbacks import record_interruption

            log.error("%s", interrupted_line(run_dir, str(interruption) or "SIGINT"))
            record_interruption(run_dir, str(interruption) or "SIGINT")  # Hydra calls no on_job_end here
            raise


def _hydra_node() -> Any:
    """The running job's Hydra config (None outside a Hydra job)."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """While the block runs, SIGTERM raises ``KeyboardInterrupt("SIGTERM")`` (main thread only:
    elsewhere Python cannot set signal handlers, and nothing changes)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signal_number: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signal_number).name)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupted_line(run_dir: Path, reason: str) -> str:
    """One line for an interrupted run: the command that resumes it from its checkpoint, or,
    before the first checkpoint, that there is nothing to resume."""
    from mammoth.engine.checkpoint import CHECKPOINT_NAME

    if (run_dir / CHECKPOINT_NAME).is_file():
        return f"Interrupted ({reason}); the checkpoint of the last finished task is intact. Resume with: {resume_command(run_dir)}"
    return f"Interrupted ({reason}) before the first task finished: nothing to resume; start the run again"


def _run(cfg: DictConfig, run_dir: Path) -> float:
    """:func:`run` in its locked run directory."""
    from mammoth.backbones import BACKBONES, build_backbone
    from mammoth.config.run_checks import is_set
    from mammoth.datasets import build_dataset
    from mammoth.engine.device import resolve_device, set_threads
    from mammoth.models import MODELS, build_model
    from mammoth.reporting.results import RESULTS_NAME

    started = time.perf_counter()
    if not cfg.resume:  # never leave an old, complete-looking file; a refused resume keeps its run's
        (run_dir / RESULTS_NAME).unlink(missing_ok=True)
    device = resolve_device(cfg.device)
    set_threads(cfg.get("threads"))
    torch.manual_seed(_check_seed(cfg.seed))
    dataset = build_dataset(cfg.dataset, seed=cfg.seed)
    backbone = cfg.backbone if is_set(cfg, "backbone") else dataset.default_backbone  # unset: the dataset's
    net = build_backbone(backbone, num_classes=dataset.n_classes, input_shape=dataset.input_shape).to(device)
    backbone_name = BACKBONES.resolve(backbone)[0].name
    model_name = MODELS.resolve(cfg.model)[0].name
    log.info(summary_line(backbone_name, net))
    check_output_size(net, dataset, backbone_name)
    model = build_model(cfg.model, net=net, dataset=dataset).to(device)
    _check_buffer_fits(cfg, dataset)
    return _train_and_report(cfg, model, dataset, device, run_dir, started, model_name, backbone_name)


def job_overrides() -> list[str]:
    """The command-line overrides of this job, without the run-control settings (empty outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    overrides = list(HydraConfig.get().overrides.task)
    return [text for text in overrides if text.split("=", 1)[0].lstrip("+~") not in ("resume", "stop_after_task")]


def is_multirun_job() -> bool:
    """Whether this run is a job of a Hydra multirun (a sweep)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _resumes(cfg: DictConfig, run_dir: Path) -> bool:
    """``resume``, except for a sweep's job that never checkpointed: a resumed sweep starts it afresh."""
    from mammoth.engine.checkpoint import CHECKPOINT_NAME

    if cfg.resume and is_multirun_job() and not (run_dir / CHECKPOINT_NAME).exists():
        log.info("resume=true but %s has no checkpoint: this job of the sweep starts from the first task", run_dir)
        return False
    return bool(cfg.resume)


def run_title(dataset: str, model: str, backbone: str) -> str:
    """``seq-digits · er · mnistmlp``; a sweep's job adds its overrides, so jobs are told apart."""
    title = f"{dataset} · {model} · {backbone}"
    overrides = job_overrides() if is_multirun_job() else []
    return f"{title} [{' '.join(overrides)}]" if overrides else title


def _program() -> str:
    """How this run was started: ``python -m mammoth``, the ``mammoth`` script, or ``python SCRIPT``."""
    import sys

    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is not None and script.name == "mammoth":
        return "mammoth"
    launcher_worker = script is None or any(part in ("site-packages", "dist-packages") for part in script.parts)
    if launcher_worker or script.suffix != ".py" or script.parts[-2:] == ("mammoth", "__main__.py"):
        return "python -m mammoth"  # also a launcher's worker process (joblib, submitit, ray)
    return f"python {sys.argv[0]}"


def resume_command(run_dir: Path) -> str:
    """The command that continues this run (a sweep's job too) in ``run_dir``."""
    words = [_program(), *job_overrides(), "resume=true", f"hydra.run.dir={run_dir}"]
    return " ".join(words)


def _check_seed(seed: int) -> int:
    """``seed`` if torch's generators take it as it is: an integer in 0 .. 2**64 - 1."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ConfigError(f"seed={seed!r} is outside 64 bits; allowed: an integer from 0 to {2**64 - 1}")
    return seed


def record_filled_values(config: dict[str, Any], dataset: Any, model: Any = None) -> dict[str, Any]:
    """``config`` with the values the run filled in: the backbone's ``num_classes`` /
    ``input_shape`` (``???`` in the composed config) and the method's ``lr_milestones`` (null:
    the dataset's default), as the backbone and the method were built with."""
    backbone = config.get("backbone")
    if isinstance(backbone, dict):
        for key, value in (("num_classes", dataset.n_classes), ("input_shape", list(dataset.input_shape))):
            if backbone.get(key) == "???":
                backbone[key] = value
    method = config.get("model")
    if isinstance(method, dict) and method.get("lr_milestones", ...) is None and hasattr(model, "lr_milestones"):
        method["lr_milestones"] = list(model.lr_milestones)
    return config


def _check_buffer_fits(cfg: DictConfig, dataset: Any) -> None:
    buffer_size = cfg.model.get("buffer_size")
    if buffer_size is None:
        return
    train_y = dataset.source()[1]
    total = int((train_y < dataset.n_classes).sum()) if dataset.setting == "class-il" else len(train_y) * dataset.n_tasks
    if buffer_size > total:
        raise ConfigError(
            f"model.buffer_size={buffer_size} is larger than the {total} training examples of {dataset.name}; "
            f"allowed: at most {total} (a buffer that holds everything is joint training: model=joint)"
        )


def _train_and_report(
    cfg: DictConfig, model: Any, dataset: Any, device: torch.device, run_dir: Path, started: float,
    model_name: str, backbone_name: str,
) -> float:
    """Train every task with the selected loggers (``cfg.logger``), write results.json and the
    plot; return the run's ``optimized_metric`` (NaN when ``stop_after_task`` stopped it early)."""
    from mammoth.reporting.loggers import RunInfo, build_loggers, close_loggers

    metric = check_optimized_metric(cfg.get("optimized_metric"), dataset)
    config = record_filled_values(OmegaConf.to_container(cfg, resolve=True), dataset, model)
    title = run_title(dataset.name, model_name, backbone_name)
    run_info = RunInfo(run_dir=run_dir, title=title, config=config, n_tasks=dataset.n_tasks,
                       n_epochs=dataset.config.n_epochs, resume=bool(cfg.resume))
    loggers = build_loggers(config.get("logger"), run_info)
    try:
        results = _train_and_write(cfg, config, model, dataset, device, run_dir, started, title, model_name, loggers)
    except BaseException:
        close_loggers(loggers, failed=True)
        raise
    close_loggers(loggers)
    return float("nan") if results is None else optimized_value(results, metric)


#: What ``optimized_metric`` can name in each results block (``KIND.FIELD``), and the direction
#: a sweeper should optimise it in: accuracy and backward transfer up, forgetting down.
METRIC_DIRECTIONS = {"average": "maximize", "forgetting": "minimize", "bwt": "maximize"}


def optimized_metric_names(setting: str) -> list[str]:
    """The ``optimized_metric`` values of a setting: ``class_il.average`` ... ``task_il.bwt`` for
    class-il, ``domain_il.average``, ``domain_il.forgetting``, ``domain_il.bwt`` for domain-il."""
    from mammoth.engine.evaluation import SETTING_METRICS

    return [f"{kind}.{field}" for kind in SETTING_METRICS[setting] for field in METRIC_DIRECTIONS]


def check_optimized_metric(name: str | None, dataset: Any) -> str:
    """The metric the run returns: ``name``, or for None the setting's first average
    (``class_il.average``, ``domain_il.average``). A name the dataset's setting does not report
    raises a ConfigError listing the allowed ones."""
    allowed = optimized_metric_names(dataset.setting)
    if name is None:
        return allowed[0]
    if name not in allowed:
        raise ConfigError(
            f"optimized_metric={name!r} is not reported for {dataset.name} ({dataset.setting}); "
            f"allowed: {', '.join(allowed)}"
        )
    return name


def optimized_value(results: dict[str, Any], name: str) -> float:
    """The value of ``KIND.FIELD`` in a results document (``class_il.average`` -> results["class_il"]["average"])."""
    kind, field = name.split(".")
    return float(results[kind][field])


def progress_bars_shown() -> bool:
    """Whether the training progress bars show: tqdm's ``disable=None`` hides them when stderr is not a terminal."""
    import sys

    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


def _train_and_write(
    cfg: DictConfig, config: dict[str, Any], model: Any, dataset: Any, device: torch.device, run_dir: Path,
    started: float, title: str, model_name: str, loggers: list[Any],
) -> dict[str, Any] | None:
    """The task loop with its progress reports, then results.json and the plot; None when stopped early."""
    from mammoth.reporting.results import KIND_TITLES, PLOT_NAME, RESULTS_NAME, build_results, environment_versions, format_table, plot_results, write_json_atomic
    from mammoth.engine.loop import run_tasks

    from mammoth.config.run_settings import RUN_CONTROL_KEYS

    comparable = {key: value for key, value in config.items() if key not in RUN_CONTROL_KEYS}
    comparable["device"] = str(device)  # device=auto resumes as device=cpu where auto is the CPU
    log_epochs = not progress_bars_shown()

    def on_epoch_end(task: int, epoch: int, loss: float) -> None:
        if log_epochs:
            log.info("task %d/%d, epoch %d/%d: loss %.4f", task + 1, dataset.n_tasks, epoch + 1, dataset.config.n_epochs, loss)
        for logger in loggers:
            logger.log_epoch(task, epoch, loss)

    def on_task_end(task: int, state: Any) -> None:
        log.info("task %d/%d: %s", task + 1, dataset.n_tasks,
                 ", ".join(f"{KIND_TITLES[kind]} {sum(rows[-1]) / len(rows[-1]):.1f}" for kind, rows in state.accuracies.items()))
        for logger in loggers:
            logger.log_task(task, state.accuracies)

    log.info("%s: %d tasks on %s; writing to %s", title, dataset.n_tasks, device, run_dir)
    state = run_tasks(
        model, dataset, device, run_dir, cfg.seed, comparable, resume=_resumes(cfg, run_dir),
        stop_after_task=cfg.get("stop_after_task"), on_task_end=on_task_end, on_epoch_end=on_epoch_end,
    )
    log.info("\n%s", format_table(state.accuracies, dataset.n_tasks))
    if state.next_task < dataset.n_tasks:
        log.info("Stopped after task %d of %d; continue with: %s", state.next_task, dataset.n_tasks, resume_command(run_dir))
        return None
    results = build_results(
        state.accuracies, dataset.n_tasks,
        config=config, dataset=dataset.describe(), versions=environment_versions(), device=str(device),
        threads=torch.get_num_threads(), title=title,
        timings={"train_seconds": state.train_seconds, "eval_seconds": state.eval_seconds,
                 "total_seconds": time.perf_counter() - started},
    )
    plot_results(results, run_dir / PLOT_NAME)
    write_json_atomic(run_dir / RESULTS_NAME, results)
    for logger in loggers:
        logger.log_results(results)
    return results
