"""The one safety gate over a composed config: what it may make mammoth or Hydra call, and where
it may make them write.

Every config that will run passes :func:`check_config_safety` before anything is instantiated or
written: the single run's, each job's of a sweep and each alternative an Optuna search may try
(:mod:`mammoth.app.preflight`), and again inside :func:`mammoth.run`. The walk covers the whole tree,
``hydra`` included, at any depth:

- a ``_target_`` is allowed only where mammoth or Hydra expects one: the root of ``backbone``,
  ``model`` and ``dataset`` (a registered option), ``model.regularizer`` (a registered
  regulariser), ``hydra.callbacks.NAME`` (a Hydra Callback
  class), ``hydra.launcher`` and ``hydra.sweeper`` (a Hydra Launcher / Sweeper class) and
  ``hydra.sweeper.sampler`` (an Optuna sampler class); nowhere below those (Hydra instantiates
  recursively);
- the logging configs (``hydra.job_logging``, ``hydra.hydra_logging``, which Python's
  ``logging.config.dictConfig`` acts on) name only classes from a short list, set no attributes
  (``.``), reach no object but ``ext://sys.stdout`` / ``ext://sys.stderr``, and write files only
  inside the run directory;
- output paths (``output_dir``, a logger's file or directory, ``hydra.output_subdir``,
  ``hydra.sweep.subdir``) are relative and stay inside the run directory;
- what runs shell commands or sets the environment of a job (``hydra.launcher.setup``,
  ``srun_args``, ``additional_parameters``; ``hydra.job.env_set`` beyond a list of harmless
  variables: none that chooses an endpoint, a credential, an online/offline mode, a path or code to
  load: :func:`is_harmless_environment_variable`), a run or sweep directory outside the working
  directory and an Optuna storage other than a relative SQLite file are accepted only from the
  command line, never from a config file;
  a launcher's folders stay inside the sweep directory.

An interpolation that resolves to a container (``${oc.decode:...}``) is walked as what it becomes.

Every output path above is checked as it will be resolved, before anything is written: it must
resolve from the config itself (its own keys, ``${now:...}``, and ``${hydra:...}``, which the walk
resolves with Hydra's own resolver over the job's Hydra node, as Hydra's ``run_job`` does), and
what it resolves to is checked. A path that reads anything outside the config (``${oc.env:...}``,
which a job's ``env_set`` or another machine's environment could change, or any other resolver),
directly or through the keys it references, or that does not resolve, is refused: a path has to
mean in the job what the walk saw (:mod:`mammoth.config.interpolations`).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import PurePosixPath
from typing import Any, Iterator

from hydra.experimental.callback import Callback
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

from mammoth.config.hydra_job import hydra_resolver_reads
from mammoth.config.interpolations import raw_lookup, resolvers_used, UNKNOWN
from mammoth.config.options import served_registry
from mammoth.config.run_settings import override_key
from mammoth.errors import ConfigError

#: Stands for the run directory while a config's paths are resolved before Hydra has made it.
RUN_DIRECTORY_PLACEHOLDER = "/mammoth-run-directory"

#: The only classes a logging config may name, by the exact path it names them with.
LOGGING_HANDLERS = (
    "logging.StreamHandler",
    "logging.FileHandler",
    "logging.NullHandler",
    "logging.handlers.RotatingFileHandler",
)
LOGGING_FORMATTERS = ("logging.Formatter", "colorlog.ColoredFormatter")
LOGGING_FILTERS = ("logging.Filter",)
#: The only objects a logging config may reach with ``ext://``.
LOGGING_STREAMS = ("ext://sys.stdout", "ext://sys.stderr")
LOGGING_SECTIONS = ("job_logging", "hydra_logging")

#: Launcher options that run shell commands: accepted only from the command line.
LAUNCHER_COMMAND_KEYS = ("setup", "srun_args", "additional_parameters")
#: Environment variables a config file may set for a job (``hydra.job.env_set``), by prefix.
HARMLESS_ENVIRONMENT_PREFIXES = (
    "CUDA_", "CUBLAS_", "NCCL_", "OMP_", "MKL_", "OPENBLAS_", "NUMEXPR_", "TORCH_", "WANDB_", "HF_", "MAMMOTH_",
)
#: Words (``_``-separated parts) of a variable's name that mark one choosing where a client sends
#: data or credentials (an endpoint, a host, a proxy, a header), a credential itself, whether a
#: client is online (a mode, offline), a path (a file, a directory, a cache) or code or weights to
#: load (a plugin, a library, ``weights_only``): refused from a config file even under the prefixes
#: above (``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``WANDB_BASE_URL``, ``WANDB_API_KEY``, ``WANDB_MODE``,
#: ``TORCH_HOME``, ``NCCL_NET_PLUGIN``, ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``, ...).
REFUSED_ENVIRONMENT_WORDS = frozenset((
    "ENDPOINT", "URL", "URI", "HOST", "SERVER", "SERVICE", "PROXY", "SOCKET", "ADDR", "ADDRESS", "PORT", "HEADERS",
    "TOKEN", "KEY", "SECRET", "PASSWORD", "CREDENTIALS", "AUTH", "CERT", "CERTS", "CA", "SSL", "TLS", "INSECURE", "VERIFY",
    "MODE", "OFFLINE", "ONLINE", "DISABLED", "ANONYMOUS", "TELEMETRY",
    "DIR", "DIRECTORY", "HOME", "PATH", "PATHS", "FILE", "FOLDER", "CACHE", "ROOT", "LOCATION", "OUT", "OUTPUT", "DEST",
    "LOGDEST", "TRACE",
    "PLUGIN", "LIB", "LIBRARY", "LIBRARIES", "PRELOAD", "TOOL", "CODE", "TRUST", "REMOTE", "WEIGHTS", "PICKLE",
))
#: Names refused whole from a config file (outside the prefixes above, named for the message).
REFUSED_ENVIRONMENT_NAMES = frozenset((
    "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "PYTHONPATH", "PYTHONHOME",
    "PYTHONSTARTUP", "LD_PRELOAD", "LD_LIBRARY_PATH", "NCCL_COMM_ID",
))
#: Keys under ``logger.LABEL`` whose value is an output path.
PATH_KEY_SUFFIXES = ("dir", "file", "filename", "path")
#: The resolvers an output path may use: both read only what the walk sees (the start time, the
#: job's Hydra node), so the path resolves in the pre-flight as it will in the job.
PATH_RESOLVERS = frozenset(("now", "hydra"))
#: Option groups whose root config is built by a registry (``_target_`` must be registered there).
REGISTERED_GROUPS = ("backbone", "model", "dataset")


def check_config_safety(cfg: DictConfig, hydra: Any = None, output_dir_in_run_directory: bool = True,
                        sweep: bool = False) -> None:
    """Walk the whole of ``cfg`` (and ``hydra``, the Hydra node, when ``cfg`` has none); raise a
    one-line ConfigError naming the first key that could call code mammoth did not expect or write
    outside the run directory, and what is allowed there.

    ``output_dir_in_run_directory``: ``output_dir`` must be a relative path inside Hydra's run
    directory (the command line); False where the caller's own Python code chose it
    (:func:`mammoth.run` outside ``python -m mammoth``), where it is the run directory itself.
    ``sweep``: ``cfg`` is a sweep's own config, whose jobs are each checked after it: a job's output
    path that resolves only with the job's values (``hydra.sweep.subdir=${tag}``, ``tag`` swept) is
    left to their checks.
    """
    tree = OmegaConf.to_container(cfg, resolve=False)
    if hydra is not None and "hydra" not in tree:
        tree["hydra"] = OmegaConf.to_container(hydra, resolve=False) if OmegaConf.is_config(hydra) else hydra
    if not output_dir_in_run_directory:
        tree.pop("output_dir", None)
    resolver = _Resolver(cfg, hydra, tree, sweep=sweep)
    with hydra_resolver_reads(resolver.hydra_config):
        for path, value in _walk(tree, (), resolver):
            try:
                _check_node(path, value, tree, resolver)
            except _ResolvedByEachJob:
                continue


class _ResolvedByEachJob(Exception):
    """A sweep's job path that only the job's own config resolves (checked there)."""


def check_output_path(key: str, value: Any) -> None:
    """``value`` (a config's output path) is relative and stays inside the run directory; else a
    ConfigError naming ``key``."""
    if value is None:
        return
    text = str(value)
    if _leaves_its_directory(text):
        raise ConfigError(
            f"{key}={text!r} leaves the run directory; allowed: a relative path inside it without '..' "
            "(choose where the run directory is with hydra.run.dir / hydra.sweep.dir)"
        )


def _leaves_its_directory(text: str) -> bool:
    """Whether a path is empty, absolute (a drive letter too) or climbs with ``..``."""
    path = PurePosixPath(text.replace("\\", "/"))
    return not text or path.is_absolute() or ".." in path.parts or (len(text) > 1 and text[1] == ":")


def _walk(node: Any, path: tuple[str, ...], resolve: "_Resolver") -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every (path, value) of a container tree, the containers themselves included; an
    interpolation that resolves to a container (``${oc.decode:...}``, ``${oc.create:...}``) is
    walked as what it becomes, since Hydra instantiates what it resolves to."""
    yield path, node
    if isinstance(node, str) and "${" in node:
        resolved = resolve(path, node)
        if OmegaConf.is_config(resolved):
            resolved = OmegaConf.to_container(resolved, resolve=False)
        if isinstance(resolved, (dict, list)):
            yield from _walk(resolved, path, resolve)
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, (*path, str(key)), resolve)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, (*path, str(index)), resolve)


class _Resolver:
    """Resolves one value of the config as Hydra will, with the run directory's placeholder for
    ``hydra.runtime.output_dir`` when Hydra has not made it yet."""

    def __init__(self, cfg: DictConfig, hydra: Any, tree: dict | None = None, sweep: bool = False) -> None:
        self.cfg, self.hydra, self.sweep = cfg, hydra, sweep
        whole = tree if tree is not None else OmegaConf.to_container(cfg, resolve=False)
        task_tree = {key: value for key, value in whole.items() if key != "hydra"}
        self.task_lookup = raw_lookup(task_tree)
        node = cfg.get("hydra") if "hydra" in cfg else hydra
        self.hydra_tree = OmegaConf.to_container(node, resolve=False) if OmegaConf.is_config(node) else dict(node or {})
        runtime = self.hydra_tree.setdefault("runtime", {})
        if not isinstance(runtime.get("output_dir"), str) or runtime.get("output_dir") in ("???", ""):
            runtime["output_dir"] = RUN_DIRECTORY_PLACEHOLDER
        #: The run directory the config's paths must stay in (its placeholder before Hydra made it).
        self.run_directory = runtime["output_dir"]
        job = self.hydra_tree.setdefault("job", {})
        for key, default in (("num", 0), ("id", "0")):  # a single run's, or a sweep's first job's
            if job.get(key) in (None, "???"):
                job[key] = default
        #: The job's whole config as Hydra's ``run_job`` resolves its paths: the task keys and the
        #: Hydra node (``hydra.sweep.subdir=${tag}`` reads the task's ``tag``).
        self.hydra_config = OmegaConf.create({**task_tree, "hydra": self.hydra_tree})
        if "hydra" in cfg:  # the same ${now:...} values as the composed config
            OmegaConf.copy_cache(from_config=cfg, to_config=self.hydra_config)
        #: The sweep's root, as its config resolves it (None when it does not resolve).
        self.sweep_directory = self._resolve_hydra(("hydra", "sweep", "dir"), None)

    def __call__(self, path: tuple[str, ...], raw: Any) -> Any:
        """The value at ``path`` resolved (None when it does not resolve: the caller refuses it)."""
        try:
            return self.resolved(path, raw)
        except Exception:  # noqa: BLE001  an interpolation that does not resolve is refused by the caller
            return None

    def resolved(self, path: tuple[str, ...], raw: Any) -> Any:
        """The value at ``path`` resolved as Hydra will; raises what resolving it raises."""
        if not isinstance(raw, str) or "${" not in raw:
            return raw
        config = self.hydra_config if path and path[0] == "hydra" else self.cfg
        return OmegaConf.select(config, ".".join(path), throw_on_missing=True)

    def _resolve_hydra(self, path: tuple[str, ...], raw: Any) -> Any:
        try:
            return OmegaConf.select(self.hydra_config, ".".join(path), throw_on_missing=True)
        except Exception:  # noqa: BLE001
            return None

    def raw(self, key: tuple[str, ...]) -> Any:
        """The unresolved value at ``key`` (the Hydra node's as the walk sees it), or ABSENT."""
        if key and key[0] == "hydra":
            return raw_lookup({"hydra": self.hydra_tree})(key)
        return self.task_lookup(key)


def path_value(path: tuple[str, ...], value: Any, resolve: _Resolver) -> Any:
    """The output path ``value`` at ``path``, resolved as it will be in the job; a ConfigError
    naming the key when it reads anything outside the config or does not resolve (module docstring)."""
    where = ".".join(path)
    outside = resolvers_used(value, path, resolve.raw) - PATH_RESOLVERS
    if outside:
        names = ", ".join(sorted("a resolver whose name is itself interpolated" if name == UNKNOWN else f"${{{name}:...}}"
                                 for name in outside))
        raise ConfigError(
            f"{where}={value!r} is an output path that reads {names} (itself or through the keys it references), "
            "which the config does not hold; allowed in an output path: text, the config's own keys, ${now:...} and "
            "${hydra:...} (so it resolves in the job as checked)"
        )
    try:
        return resolve.resolved(path, value)
    except Exception as error:  # noqa: BLE001
        if resolve.sweep and path not in (("hydra", "run", "dir"), ("hydra", "sweep", "dir")):
            raise _ResolvedByEachJob() from None
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            f"{where}={value!r} does not resolve before the run ({reason}); allowed: an output path the config "
            "itself resolves"
        ) from None


def _check_node(path: tuple[str, ...], value: Any, tree: dict, resolve: _Resolver) -> None:
    """The rules of the module docstring, for one node."""
    if not path:
        return
    key = path[-1]
    parent = path[:-1]
    if key == "_target_":
        _check_target(parent, resolve(path, value))
    elif path[0] == "hydra" and len(path) > 2 and path[1] in LOGGING_SECTIONS:
        _check_logging_node(path, value, resolve)
    elif path[0] == "hydra":
        _check_hydra_node(path, value, tree, resolve)
    elif path == ("output_dir",):
        check_output_path("output_dir", path_value(path, value, resolve))
    elif len(path) == 3 and path[0] == "logger" and isinstance(value, (str, type(None))) and key.endswith(PATH_KEY_SUFFIXES):
        check_output_path(".".join(path), path_value(path, value, resolve))


def _check_target(parent: tuple[str, ...], target: Any) -> None:
    """A ``_target_`` at ``parent``: allowed only at the nodes the module docstring lists."""
    where = ".".join((*parent, "_target_"))
    if len(parent) == 1 and parent[0] in REGISTERED_GROUPS:
        _check_registered(parent[0], target, where)
        return
    if parent == ("model", "regularizer"):
        _check_registered("model/regularizer", target, where)
        return
    expected = _expected_class(parent)
    if expected is None:
        raise ConfigError(
            f"{where}={target!r}: a _target_ is not allowed here; allowed: a _target_ only at the root of "
            "backbone, model and dataset (a registered option), model.regularizer (a registered regulariser), hydra.callbacks.NAME, hydra.launcher, "
            "hydra.sweeper and hydra.sweeper.sampler"
        )
    description, bases = expected
    problem = _class_problem(target, bases(), description)
    if problem is not None:
        raise ConfigError(f"{where}={target!r} {problem}; allowed: {description}")


def _check_registered(group: str, target: Any, where: str) -> None:

    registry = served_registry(group)  # the registered options, built-ins from their manifest (no torch)
    if not isinstance(target, str) or registry.find_by_target(target) is None:
        local = working_directory_module(target)
        reason = "" if local is None else (
            f" (its module {local} lies in the working directory, which mammoth never imports from, by design; "
            "register it from an installed package's mammoth.plugins entry point)")
        raise ConfigError(
            f"{where}={target!r} is not a registered {registry.kind}{reason}; allowed: the _target_ of one of "
            f"{', '.join(registry.names())} (choose it with {'+' if '/' in group else ''}{group}=NAME)"
        )


def _expected_class(parent: tuple[str, ...]) -> tuple[str, Any] | None:
    """What the ``_target_`` at ``parent`` must name: (a description, a function giving the bases)."""
    def callback() -> tuple[type, ...]:

        return (Callback,)

    def launcher() -> tuple[type, ...]:

        return (Launcher,)

    def sweeper() -> tuple[type, ...]:

        return (Sweeper,)

    def sampler() -> tuple[type, ...]:
        try:
            from optuna.samplers import BaseSampler  # optional: optuna (hydra-optuna-sweeper)
        except ImportError:
            return ()
        return (BaseSampler,)

    if len(parent) == 3 and parent[:2] == ("hydra", "callbacks"):
        return "a Hydra Callback class (a subclass of hydra.experimental.callback.Callback)", callback
    if parent == ("hydra", "launcher"):
        return "a Hydra Launcher class (a subclass of hydra.plugins.launcher.Launcher)", launcher
    if parent == ("hydra", "sweeper"):
        return "a Hydra Sweeper class (a subclass of hydra.plugins.sweeper.Sweeper)", sweeper
    if parent == ("hydra", "sweeper", "sampler"):
        return "an Optuna sampler class (a subclass of optuna.samplers.BaseSampler)", sampler
    return None


def _class_problem(target: Any, bases: tuple[type, ...], description: str) -> str | None:
    """Why the dotted path ``target`` does not name a subclass of ``bases`` (``description``),
    found as Hydra finds a ``_target_``: importing its module, calling nothing; None when it does.
    A module that lies in the working directory is not importable on purpose (``python -m mammoth``
    takes the working directory off ``sys.path``), and the reason says so and how to import it."""
    if not bases or not isinstance(target, str):
        return f"is not {description}"
    try:
        found = _locate(target)
    except Exception as error:  # noqa: BLE001  not importable: say why
        local = working_directory_module(target)
        if local is not None:
            return (f"is not importable: its module {local} lies in the working directory, which mammoth never "
                    "imports from, by design (a file that merely lies where you run is never run); make it "
                    "importable: install it (pip install -e DIR) or put its directory on PYTHONPATH "
                    "(PYTHONPATH=. python -m mammoth ...)")
        return f"is not importable ({type(error).__name__}: {error}; installed packages and PYTHONPATH are searched)"
    return None if isinstance(found, type) and issubclass(found, bases) else f"is not {description}"


def working_directory_module(target: Any) -> str | None:
    """The file or folder of the working directory that the top-level module of the dotted path
    ``target`` names (``mycb.py`` for ``mycb.MyCb``) when Python cannot find that module; None when
    it can, or when there is no such file."""
    top = target.split(".")[0] if isinstance(target, str) else ""
    if not top.isidentifier():
        return None
    local = f"{top}.py" if os.path.isfile(f"{top}.py") else f"{top}/" if os.path.isdir(top) else None
    if local is None or importlib.util.find_spec(top) is not None:
        return None
    return local


def _locate(path: str) -> Any:
    """The object a dotted path names, as Hydra finds a ``_target_``: the longest importable module
    prefix, then attributes (Hydra's own ``_locate`` is private; its public ``get_object`` logs an
    error for a path that does not import)."""
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for part in parts[split:]:
            found = getattr(found, part)
        return found
    raise ModuleNotFoundError(f"No module named {parts[0]!r}")


def _check_logging_node(path: tuple[str, ...], value: Any, resolve: _Resolver) -> None:
    """One node of ``hydra.job_logging`` / ``hydra.hydra_logging``."""
    where = ".".join(path)
    key = path[-1]
    section = path[3] if len(path) > 3 else None
    if key == ".":
        raise ConfigError(f"{where}: a logging config may not set attributes ('.'); allowed: the keys of logging.config.dictConfig without '.'")
    if key in ("class", "()"):
        allowed = {"handlers": LOGGING_HANDLERS, "formatters": LOGGING_FORMATTERS, "filters": LOGGING_FILTERS}.get(path[2], ())
        target = resolve(path, value)
        if len(path) != 5 or target not in allowed:
            raise ConfigError(
                f"{where}={target!r} is not allowed in a logging config; allowed: "
                f"{', '.join(allowed) if allowed else 'class and () only under handlers, formatters and filters'}"
            )
        return
    if isinstance(value, str) and value.strip().startswith("ext://") and value.strip() not in LOGGING_STREAMS:
        raise ConfigError(f"{where}={value!r} reaches an object outside the logging config; allowed: {', '.join(LOGGING_STREAMS)}")
    if path[2] == "handlers" and len(path) == 5 and key == "filename" and section is not None:
        _check_log_file(where, path_value(path, value, resolve), resolve.run_directory)


def _check_log_file(where: str, filename: Any, run_dir: str | None, what: str = "the run directory") -> None:
    """A file (or folder) Hydra or a plugin writes is inside ``run_dir`` (``what``)."""
    example = "${hydra.runtime.output_dir}/NAME.log" if what == "the run directory" else "${hydra.sweep.dir}/NAME"
    if not isinstance(filename, str) or run_dir is None:
        raise ConfigError(f"{where}={filename!r} does not resolve to a path; allowed: a path inside {what}, e.g. {example}")
    normal = os.path.normpath(os.path.abspath(filename))
    base = os.path.normpath(os.path.abspath(run_dir))
    if os.path.commonpath([normal, base]) != base:
        raise ConfigError(f"{where}={filename!r} is outside {what}; allowed: a path inside it, e.g. {example}")


def _check_hydra_node(path: tuple[str, ...], value: Any, tree: dict, resolve: _Resolver) -> None:
    """Paths, shell commands and environment variables under ``hydra``."""
    where = ".".join(path)
    if path in (("hydra", "output_subdir"), ("hydra", "sweep", "subdir")):
        check_output_path(where, path_value(path, value, resolve))
    elif len(path) == 3 and path[:2] == ("hydra", "launcher") and path[2] in LAUNCHER_COMMAND_KEYS and value:
        if not _set_on_command_line(tree, where):
            raise ConfigError(
                f"{where} runs shell commands and was set by a config file; allowed: set it on the command line"
            )
    elif len(path) == 4 and path[:3] == ("hydra", "job", "env_set"):
        if not is_harmless_environment_variable(path[3]) and not _set_on_command_line(tree, where):
            raise ConfigError(
                f"{where} sets an environment variable from a config file; allowed there: names starting "
                f"with {', '.join(HARMLESS_ENVIRONMENT_PREFIXES)} that choose no endpoint, credential, online or "
                "offline mode, path or code to load (no part such as _URL, _ENDPOINT, _TOKEN, _KEY, _MODE, _OFFLINE, "
                "_DIR, _HOME, _PATH, _FILE, _CACHE, _PLUGIN); others only on the command line"
            )
    elif path in (("hydra", "run", "dir"), ("hydra", "sweep", "dir")) and not _set_on_command_line(tree, where):
        _check_relative(where, path_value(path, value, resolve), "the working directory")
    elif len(path) == 3 and path[:2] == ("hydra", "launcher") and path[2].endswith(PATH_KEY_SUFFIXES + ("folder",)) \
            and value is not None:
        _check_log_file(where, path_value(path, value, resolve), resolve.sweep_directory, "the sweep directory")
    elif path == ("hydra", "sweeper", "storage") and isinstance(value, str) and not _set_on_command_line(tree, where):
        text = str(path_value(path, value, resolve))
        if not text.startswith("sqlite:///") or text.startswith("sqlite:////"):
            raise ConfigError(f"{where}={text!r} was set by a config file; allowed there: null or sqlite:///RELATIVE.db; others only on the command line")
        _check_relative(where, text[len("sqlite:///"):], "the working directory")


def is_harmless_environment_variable(name: str) -> bool:
    """Whether a config file may set the environment variable ``name`` for a job: a name under
    :data:`HARMLESS_ENVIRONMENT_PREFIXES` with none of :data:`REFUSED_ENVIRONMENT_WORDS` among
    its ``_``-separated parts, and not one of :data:`REFUSED_ENVIRONMENT_NAMES`."""
    upper = name.upper()
    return (name.startswith(HARMLESS_ENVIRONMENT_PREFIXES) and upper not in REFUSED_ENVIRONMENT_NAMES
            and not REFUSED_ENVIRONMENT_WORDS.intersection(upper.split("_")))


def _check_relative(where: str, value: Any, base: str) -> None:
    """A directory a config file chooses is relative to ``base`` and does not leave it."""
    text = str(value) if value is not None else ""
    if _leaves_its_directory(text):
        raise ConfigError(
            f"{where}={text!r} was set by a config file and leaves {base}; allowed there: a relative path without "
            "'..'; another place only on the command line"
        )


def _set_on_command_line(tree: dict, key: str) -> bool:
    """Whether a command-line override (``hydra.overrides.hydra``) sets ``key`` or a key above it."""
    overrides = tree.get("hydra", {}).get("overrides", {}).get("hydra", []) or []
    for text in overrides:
        name = override_key(text)
        if key == name or key.startswith(name + "."):
            return True
    return False
