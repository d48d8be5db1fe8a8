"""Every use of Hydra's private API in mammoth, in one module (Hydra 1.3).

Each function says which public API Hydra lacks. Nothing else in mammoth imports
``hydra._internal``, touches ``ConfigStore.instance().repo`` or reads ``JobReturn._return_value``
(``tests/config/test_hydra_private.py`` holds it). The objects :func:`main_hydra` and
:func:`caching_repository` return (Hydra's main object, its caching config repository) are
private classes too; callers use only their methods that ``hydra.main`` and the public
``ConfigLoader`` interface use the same way: ``compose_config``, ``get_mode``, ``config_loader``,
``group_exists``, ``get_group_options``, ``load_config``, ``get_sources``.

Imports of Hydra stay inside the functions: ``import mammoth`` and ``--help`` compose fast.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from omegaconf import OmegaConf

#: The ``_target_`` of Hydra's basic sweeper in a composed ``hydra.sweeper`` node (a config value
#: that Hydra's own ``hydra/sweeper/basic`` config writes, compared as text, never imported).
BASIC_SWEEPER_TARGET = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def parse_arguments(args: list[str]) -> Any:
    """``args`` parsed by the argument parser ``hydra.main`` uses. Missing public API: Hydra has no
    public parser, and ``-m``, ``-cn``, ``--config-dir``, ``-cp`` and the overrides must be read
    exactly as ``hydra.main`` will read them."""
    from hydra._internal.utils import get_args_parser  # lazy: Hydra, not imported by the Python API (options are stored through here)

    return get_args_parser().parse_args(args)


@contextmanager
def main_hydra(task_function: Callable, config_path: str, config_dir: str | None = None) -> Iterator[Any]:
    """Hydra's main object over the search path ``hydra.main`` builds for ``task_function``
    (``config_path``, then ``config_dir``, an absolute directory, prepended before the
    ConfigStore as ``--config-dir`` does); Hydra's global state is cleared afterwards. Missing
    public API: ``initialize_config_module`` / ``initialize_config_dir`` take one config
    module or directory, while ``hydra.main`` builds its search path from the task function's
    module, ``-cp`` and ``--config-dir``, which the pre-flight must see as the run will."""
    from hydra._internal.hydra import Hydra  # lazy: Hydra, not imported by the Python API (options are stored through here)
    from hydra._internal.utils import create_automatic_config_search_path, detect_calling_file_or_module_from_task_function  # lazy: Hydra, not imported by the Python API (options are stored through here)
    from hydra.core.config_search_path import SearchPathQuery  # lazy: Hydra, not imported by the Python API (options are stored through here)
    from hydra.core.global_hydra import GlobalHydra  # lazy: Hydra, not imported by the Python API (options are stored through here)

    calling_file, calling_module = detect_calling_file_or_module_from_task_function(task_function)
    search_path = create_automatic_config_search_path(calling_file, calling_module, config_path)
    if config_dir is not None:
        search_path.prepend(provider="command-line", path=f"file://{config_dir}", anchor=SearchPathQuery(provider="schema"))
    hydra = Hydra.create_main_hydra2(task_name="mammoth", config_search_path=search_path)
    try:
        yield hydra
    finally:
        GlobalHydra.instance().clear()


def caching_repository(hydra: Any, config_name: str, overrides: list[str]) -> Any:
    """The config repository over the search path that ``overrides`` give (``hydra.searchpath``
    included), as Hydra builds it to compose ``config_name``. Missing public API: the public
    ``ConfigLoader.get_group_options`` builds such a repository at each call and answers only the
    option names, not whether an option is mammoth's registered schema or a user's YAML."""
    return hydra.config_loader._parse_overrides_and_create_caching_repo(config_name, overrides)[1]


def basic_sweep_jobs(overrides: list[Any]) -> list[list[str]]:
    """The overrides of each job Hydra's basic sweeper runs for the parsed ``overrides``, in its
    order (Hydra's ``HydraException`` for a sweep it cannot run, such as ``interval()``).
    Missing public API: the override parser is public, but the basic sweeper's expansion of
    sweeps into jobs is not; a copy could drift from the jobs Hydra really runs."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # lazy: Hydra, not imported by the Python API (options are stored through here)

    return BasicSweeper.split_arguments(overrides, None)[0]


def failed_job_error(job_return: Any) -> Any:
    """The exception a failed job raised. Missing public API: ``JobReturn.return_value`` raises
    it (after writing Hydra's ``Error executing job with overrides`` line to stderr), which a
    callback that records it must not do."""
    return job_return._return_value


def store_lazily(name: str, build: Callable[[], Any]) -> None:
    """Put a top-level entry ``name`` in Hydra's ConfigStore whose config ``build()`` makes on its
    first load. Hydra turns a config into a node when it is stored and deep-copies the whole
    ConfigStore for each config-group query (``--help`` makes about 90): storing the 44 built-ins'
    nodes at once would cost more than all the rest of ``--help``, and composing needs only the
    selected ones. Missing public API: ``ConfigStore.store`` converts the config when it is
    called; there is no public lazy entry."""
    from hydra.core.config_store import ConfigStore  # lazy: Hydra, not imported by the Python API (options are stored through here)

    key = name if name.endswith(".yaml") else f"{name}.yaml"
    node_class = _lazy_config_node_class()
    entry = node_class.__new__(node_class)
    entry.__dict__.update(name=key, group=None, package=None, provider="mammoth", build=build, built={})
    ConfigStore.instance().repo[key] = entry


@functools.cache
def _lazy_config_node_class() -> type:
    """Hydra's ConfigNode whose ``node`` is ``build()``'s config, made on first use (Hydra copies
    entries shallowly before it reads them, so the copies share what was built)."""
    from hydra.core.config_store import ConfigNode  # lazy: Hydra, not imported by the Python API (options are stored through here)

    class LazyConfigNode(ConfigNode):
        @property
        def node(self) -> Any:
            built = self.__dict__["built"]
            if "node" not in built:
                built["node"] = OmegaConf.structured(self.__dict__["build"]())
            return built["node"]

        @node.setter
        def node(self, value: Any) -> None:
            self.__dict__["built"] = {"node": value}

    return LazyConfigNode

