"""The command line of ``python -m mammoth``, checked with Hydra's own parser and config loader.

Before the run, the arguments are parsed by Hydra's argument parser and the config is composed
by Hydra's config loader over the same search path the run will use (``--config-dir``,
``--config-path``, ``-cn``, ``hydra.searchpath``, search-path plugins). So the checks see what
Hydra sees:

- group options are normalised (case-insensitive, ``_`` = ``-``, and ``resnet_18`` finds
  ``resnet18``) against the options Hydra really has, user YAML included; an unknown one fails
  with the choices and the closest one;
- ``hydra.callbacks`` must name Hydra Callback classes, and the logging configs only logging
  Handler, Formatter and Filter classes (Hydra instantiates both before the run);
- every config that will run passes the safety gate (:mod:`mammoth.app.safety`): the single
  run's, or each job's of a sweep;
- a single run's config is resolved and checked by :func:`mammoth.app.run_spec.resolve_run`, so
  an unknown argument fails before anything is written. In a multirun each job resolves its own
  config and only that job fails.

What passed is handed to the run (:attr:`CommandLine.checked`, :mod:`mammoth.app.checked`): the
run in this process neither walks the gate again nor resolves the single run's config again.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, ValueType
from hydra.errors import HydraException, MissingConfigException
from hydra.types import RunMode
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

from mammoth.app.checked import CheckedConfigs
from mammoth.app.directory_checks import check_run_directory, check_sweep_directory, resolved_directory
from mammoth.app.group_arguments import check_argument_overrides
from mammoth.app.run_spec import resolve_run
from mammoth.app.safety import check_config_safety
from mammoth.app.sweep_jobs import sweep_job_configs
from mammoth.config.hydra_private import caching_repository, main_hydra as private_main_hydra, parse_arguments
from mammoth.config.options import check_options_not_hidden, DEFAULT_BACKBONE_GROUP, served_registries
from mammoth.config.registry import canonical_name
from mammoth.errors import ConfigError, MammothError, unknown_name_message

#: The primary config of ``python -m mammoth``.
CONFIG_PATH = "pkg://mammoth.app.conf"
CONFIG_NAME = "config"


def loose_name(name: str) -> str:
    """The name with case, ``-`` and ``_`` ignored: ``ResNet_18`` -> ``resnet18``."""
    return canonical_name(name).replace("-", "")


def normalise_choice(group: str, value: str, options: list[str]) -> str:
    """The option of ``group`` that ``value`` names: itself, else the one equal up to case and
    ``_``/``-``, else the only one equal ignoring separators; otherwise a ConfigError that lists
    ``options`` and the closest one."""
    if value in options:
        return value
    for key in (canonical_name, loose_name):
        matches = [option for option in options if key(option) == key(value)]
        if len(matches) == 1:
            return matches[0]
    raise ConfigError(unknown_name_message(group, value, sorted(options)))


@dataclass(frozen=True)
class CommandLine:
    """The checked arguments, whether they start a multirun (``-m`` or ``hydra.mode``), and the
    run (or sweep) directory they write, pinned by an override so Hydra writes there and nowhere
    else (None when it could not be resolved before the run: the run locks it itself)."""

    args: list[str]
    multirun: bool
    directory: Path | None = None
    #: The ``hydra.sweep.subdir`` pinned for a continued Optuna study's new trials (None: as given).
    subdir: str | None = None

    #: Where the pinning override goes in :attr:`args`: right after the last override (argparse
    #: takes the overrides as one run of positional arguments).
    pin_at: int = 0
    #: The configs that passed the checks, as Hydra will compose them with :meth:`hydra_arguments`.
    checked: CheckedConfigs = CheckedConfigs()

    def pins(self) -> dict[str, str]:
        """The Hydra keys the pinning overrides set (``run.dir``, or ``sweep.dir`` and ``sweep.subdir``) and their values."""
        if self.directory is None:
            return {}
        pins = {f"{'sweep' if self.multirun else 'run'}.dir": str(self.directory)}
        if self.subdir is not None:
            pins["sweep.subdir"] = self.subdir
        return pins

    def hydra_arguments(self) -> list[str]:
        """What ``hydra.main`` gets: :attr:`args` and the overrides that pin :attr:`directory` (and
        :attr:`subdir`)."""
        pins = [f"hydra.{key}={quote_override_value(value)}" for key, value in self.pins().items()]
        return [*self.args[:self.pin_at], *pins, *self.args[self.pin_at:]]


def prepare_arguments(args: list[str], task_function: Callable, config_path: str = CONFIG_PATH,
                      config_name: str = CONFIG_NAME) -> CommandLine:
    """Check ``args`` (``sys.argv[1:]``) as described in the module docstring; return them with
    group options normalised. Raises a MammothError naming the first bad value, or Hydra's own
    error where Hydra cannot parse or compose the command line (``seed=abc``, ``+seed=3``, a sweep
    without ``-m``): every one is a bad command line, found before anything runs."""
    parsed = parse_command_line(args)
    if parsed.experimental_rerun is not None:
        raise ConfigError(
            f"--experimental-rerun {parsed.experimental_rerun!r} is refused: it unpickles a file, which can run "
            "any code; allowed: rerun with the overrides in the run's .hydra/overrides.yaml"
        )
    check_commands(parsed)
    if parsed.help or parsed.hydra_help or parsed.info or parsed.shell_completion:
        return CommandLine(args, multirun=False)  # Hydra's own screens
    with main_hydra(parsed, task_function, config_path) as hydra:
        name = parsed.config_name or config_name
        repository = config_repository(hydra, name, parsed.overrides)  # an override Hydra cannot parse raises here
        check_options_not_hidden(repository)
        overrides = normalise_overrides(repository, parsed.overrides)
        overrides = check_argument_overrides(hydra, name, repository, overrides, multirun=parsed.multirun)
        checked = check_composed(hydra, name, overrides, multirun=parsed.multirun)
    arguments = _replace_overrides(args, parsed.overrides, overrides)
    pin_at = max((index + 1 for index, arg in enumerate(arguments) if overrides and arg == overrides[-1]), default=0)
    directory = None if parsed.cfg or parsed.resolve else checked.directory  # printing a config writes nothing
    command_line = CommandLine(arguments, multirun=checked.multirun, directory=directory, pin_at=pin_at,
                               subdir=checked.subdir if directory is not None else None)
    return dataclasses.replace(command_line, checked=checked.configs.pinned(command_line.pins()))


def parse_command_line(args: list[str]) -> Any:
    """``args`` parsed by Hydra's own argument parser (:func:`mammoth.config.hydra_private.parse_arguments`):
    ``-m``, ``-cn``, ``--config-dir``, ``-cp`` and the overrides read exactly as ``hydra.main`` will read them."""
    return parse_arguments(args)


def check_commands(parsed: Any) -> None:
    """Refuse, in Hydra's words and one line, the flags ``hydra.main`` refuses with a traceback:
    more than one of ``--run``, ``--multirun``, ``--cfg``, ``--info``, ``--shell-completion``, and
    ``--resolve`` without ``--cfg`` or ``--help``."""
    given = [flag for flag, on in (("--run", parsed.run), ("--multirun", parsed.multirun), ("--cfg", parsed.cfg is not None),
                                   ("--info", parsed.info is not None), ("--shell-completion", parsed.shell_completion)) if on]
    if len(given) > 1:
        raise ConfigError(f"{' '.join(given)}: only one of --run, --multirun, --cfg, --info and --shell_completion "
                          "can be specified (Hydra); allowed: one of them")
    if parsed.resolve and parsed.cfg is None and not parsed.help:
        raise ConfigError("--resolve: the --resolve flag can only be used in conjunction with --cfg or --help (Hydra); "
                          "allowed: --cfg job --resolve")


@contextmanager
def main_hydra(parsed: Any, task_function: Callable, config_path: str) -> Iterator[Any]:
    """Hydra's main object over the search path ``hydra.main`` builds for ``task_function``, with
    ``-cp`` and ``--config-dir`` (:func:`mammoth.config.hydra_private.main_hydra`), so the checks
    see the configs the run will."""
    directory = None
    if parsed.config_dir is not None:
        directory = os.path.abspath(parsed.config_dir)
        if not os.path.isdir(directory):
            raise ConfigError(f"--config-dir {parsed.config_dir!r} is not a directory ({directory}); allowed: a directory of YAML configs")
    with private_main_hydra(task_function, parsed.config_path or config_path, directory) as hydra:
        yield hydra


def config_repository(hydra: Any, config_name: str, overrides: list[str]) -> Any:
    """The config repository over the search path that ``overrides`` give (``hydra.searchpath``
    included), as Hydra builds it to compose ``config_name``; built once for every check of the
    command line (:func:`mammoth.config.hydra_private.caching_repository`)."""
    return caching_repository(hydra, config_name, overrides)


def normalise_overrides(repository: Any, overrides: list[str]) -> list[str]:
    """``overrides`` with every config-group choice replaced by the option it names."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    result = []
    for text, override in zip(overrides, parsed):
        options = [] if override.is_delete() or "." in override.key_or_group else \
            repository.get_group_options(override.key_or_group, ObjectType.CONFIG)
        result.append(_normalise_override(override, options) if options else text)
    return result


def _normalise_override(override: Any, options: list[str]) -> str:

    group = override.key_or_group
    if override.value_type == ValueType.SIMPLE_CHOICE_SWEEP:
        values = override.value().list
    elif override.value_type == ValueType.ELEMENT:
        values = override.value()
    else:
        return override.input_line  # range(), glob(), choice(): left to Hydra
    if isinstance(values, list) and all(isinstance(value, str) for value in values):
        fixed = [normalise_choice(group, value, options) for value in values]
        text = ",".join(fixed) if isinstance(override.value(), ChoiceSweep) else f"[{','.join(fixed)}]"
    elif isinstance(values, str):
        text = normalise_choice(group, values, options)
    else:
        return override.input_line
    return f"{override.get_key_element()}={text}"  # the key element keeps its +, ++ prefix


@dataclass(frozen=True)
class CheckedCommand:
    """What :func:`check_composed` found: whether the command is a multirun, the directory it
    writes (the run directory, or the sweep's root), resolved once, and the configs that passed."""

    multirun: bool
    directory: Path | None = None
    subdir: str | None = None
    configs: CheckedConfigs = CheckedConfigs()


def check_composed(hydra: Any, config_name: str, overrides: list[str], multirun: bool) -> CheckedCommand:
    """Compose as the run will; every config that will run passes the safety gate
    (:func:`mammoth.app.safety.check_config_safety`): the single run's, or each job's of a sweep;
    options in defaults lists are checked and a single run's config is validated. Returns whether
    the command is a multirun (``-m``, or ``hydra.mode`` set by a config such as an
    ``hparams_search`` preset) and the directory it writes."""
    try:
        cfg = _compose(hydra, config_name, overrides, RunMode.MULTIRUN if multirun else RunMode.RUN)
    except (HydraException, OmegaConfBaseException):
        if multirun or hydra.get_mode(config_name=config_name, overrides=overrides) != RunMode.MULTIRUN:
            raise  # Hydra's own error, in its words
        multirun, cfg = True, _compose(hydra, config_name, overrides, RunMode.MULTIRUN)  # a config's hydra.mode: MULTIRUN
    multirun = multirun or cfg.hydra.mode == RunMode.MULTIRUN
    check_config_safety(cfg, sweep=multirun)  # a sweep's job paths: in each job's check below
    if not multirun:
        spec = _resolve(cfg)
        directory = resolved_directory(cfg, "hydra.run.dir")
        if directory is not None:
            check_run_directory(directory, cfg)
        return CheckedCommand(False, directory, configs=CheckedConfigs().add(cfg, spec))

    jobs = sweep_job_configs(hydra, cfg)
    configs = CheckedConfigs()
    for job in jobs.configs:
        check_config_safety(job)
        configs = configs.add(job)  # each job resolves its own config when it runs
    directory = resolved_directory(cfg, "hydra.sweep.dir")
    subdir = check_sweep_directory(directory, cfg, jobs) if directory is not None else None
    return CheckedCommand(True, directory, subdir, configs)


def _resolve(cfg: Any) -> Any:
    """:func:`mammoth.app.run_spec.resolve_run` on a single run's config: its RunSpec; None for a
    value that resolves only inside the running job (``${hydra:...}``): the run resolves it then."""
    try:
        return resolve_run(cfg, served_registries())  # the registries' entries without torch
    except InterpolationResolutionError:
        return None


def quote_override_value(text: str) -> str:
    """``text`` (free of quotes, backslashes and ``$``) as a quoted value of Hydra's override grammar."""
    return f"'{text}'"


def _compose(hydra: Any, config_name: str, overrides: list[str], mode: Any) -> Any:
    """The config Hydra composes (Hydra's error where it cannot); an unknown option in a defaults
    list raises a ConfigError with the choices and the closest one."""
    try:
        return hydra.compose_config(config_name, list(overrides), run_mode=mode, with_log_configuration=False)
    except MissingConfigException as error:
        if error.options and error.missing_cfg_file and "/" in error.missing_cfg_file:
            group, value = error.missing_cfg_file.rsplit("/", 1)
            if group == DEFAULT_BACKBONE_GROUP:
                raise ConfigError(
                    f"dataset option {value!r} has no default backbone (no {group}/{value} config); "
                    "allowed: choose one with backbone=NAME, or name a registered dataset"
                ) from None
            raise ConfigError(unknown_name_message(group, value, sorted(error.options))) from None
        raise


def _replace_overrides(args: list[str], originals: list[str], replacements: list[str]) -> list[str]:
    """``args`` with the override tokens (in order) replaced."""
    pending = list(zip(originals, replacements))
    result = []
    for arg in args:
        if pending and arg == pending[0][0]:
            arg = pending.pop(0)[1]
        result.append(arg)
    return result


def exit_with(error: MammothError, status: int = 2) -> None:
    """Print ``Error: <message>`` to stderr and exit (status 2: a usage error; 1: a failed run)."""
    print(f"Error: {error}", file=sys.stderr)
    raise SystemExit(status)
