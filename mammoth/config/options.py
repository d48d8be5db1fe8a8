"""mammoth's options as Hydra config files, served only to the apps that ask for them.

The registered backbones, datasets and models are the options of Hydra's ``backbone``, ``dataset``
and ``model`` config groups in two packages: :mod:`mammoth.conf` (other apps opt in with
``hydra.searchpath: [pkg://mammoth.conf]``) and :mod:`mammoth.app.conf` (``python -m mammoth``).
Each serves ``GROUP/NAME.yaml`` files that no directory holds: the package's resource reader
(what Hydra's ``pkg://`` source reads through :mod:`importlib.resources`) lists one file per
registered option and, when Hydra reads one, stores the option's typed, closed schema in Hydra's
ConfigStore under a name of mammoth's own at the top level (``mammoth-option-backbone-resnet``)
and answers a file whose defaults list is that schema::

    defaults:
      - /mammoth-option-backbone-resnet
      - _self_

Why files, and not ConfigStore entries under ``backbone/resnet`` as before: the ConfigStore is
one per process and every app composes from it, so an entry there changed what every app in the
process composed (an app that imported mammoth's API saw mammoth's backbones in its ``--help``),
collided with a hydra-zen ``store(group="backbone", name="resnet")``, and made Hydra merge an app's
own ``backbone/resnet.yaml`` into mammoth's closed schema (its deprecated automatic schema
matching). A file in a package on the search path only exists for the apps whose search path has
that package, and an app's own file of the same name comes first on its search path (its config
directory is searched before ``hydra.searchpath``), so it wins cleanly, never merged. The schemas'
names at the top level are mammoth's own: no app's option is matched against them. Files served
from the registries rather than YAML files generated at build time: installed plugins' options
(known only when they are imported) and options registered in the process are served the same
way, and nothing is there to go stale.

Nothing here imports torch: the built-ins' schemas come from their manifest
(:mod:`mammoth.config.manifest`), the plugins' and the process's own registrations from the
registries, which are looked at only if their modules were imported already. Importing this module
changes nothing in Hydra's global state; :func:`serve_options` is called by the two config
packages, which Hydra imports when their ``pkg://`` entry is on an app's search path.
"""

from __future__ import annotations

import dataclasses
import io
import sys
from types import ModuleType
from typing import Any, Iterator

from mammoth.config import manifest
from mammoth.config.hydra_private import store_lazily
from mammoth.config.registry import add_registration_listener, canonical_name, Entry, Registry, schema_node
from mammoth.config.schema import Argument
from mammoth.errors import BackboneError, ConfigError, DatasetError
from mammoth.plugins import load_plugins_once

#: The config groups whose options are mammoth's registered ones.
SERVED_GROUPS = manifest.GROUPS
#: The module and attribute of each served group's registry.
REGISTRY_OF_GROUP = {"backbone": ("mammoth.backbones.registry", "BACKBONES"),
                     "dataset": ("mammoth.datasets", "DATASETS"),
                     "model": ("mammoth.models.registry", "MODELS"),
                     "model/regularizer": ("mammoth.models.regularizers", "REGULARIZERS")}
#: How each served group's registry is made (kind, error type, schema suffix), for :func:`served_registry`.
REGISTRY_SETTINGS = {"backbone": ("backbone", BackboneError, "BackboneConfig"),
                     "dataset": ("dataset", DatasetError, "DatasetConfig"),
                     "model": ("model", ConfigError, "ModelConfig"),
                     "model/regularizer": ("regularizer", ConfigError, "RegularizerConfig")}
#: Where a nested group's options sit in a config, as messages name them (a top group's is its name).
REGISTRY_KEYS = {"model/regularizer": "model.regularizer"}
#: The packages that serve the options (``pkg://`` search path entries).
SERVING_PACKAGES = ("mammoth.conf", "mammoth.app.conf")
#: Where the primary config of ``python -m mammoth`` looks for a dataset's default backbone when
#: the dataset has none that is registered: Hydra then reports the missing
#: ``backbone/dataset-default/NAME`` config (no such group exists, so nothing lists it).
DEFAULT_BACKBONE_GROUP = "backbone/dataset-default"


def _registry(group: str) -> Any:
    """The registry of ``group`` if its module was imported (by the run, a plugin, the user), else None."""
    module_name, attribute = REGISTRY_OF_GROUP[group]
    module = sys.modules.get(module_name)
    return getattr(module, attribute, None)


def _registered(group: str) -> dict[str, Any]:
    """The entries registered in this process (installed plugins imported first)."""
    load_plugins_once()
    registry = _registry(group)
    return {} if registry is None else {name: registry.get(name) for name in registry.names()}


def option_names(group: str) -> list[str]:
    """The options of ``group``: the built-ins and everything registered in this process, sorted."""
    return sorted(set(manifest.load_manifest()[group]) | set(_registered(group)))


@dataclasses.dataclass(frozen=True)
class ManifestEntry(Entry):
    """A built-in's registry entry as the manifest has it: what checking a config needs (its
    arguments' names, defaults and schema types, its ``_target_``, its arguments as messages
    describe them), without importing the module that defines it: ``target`` and ``schema`` are
    None (:func:`option_schema` builds the schema from the manifest)."""

    path: str = ""
    described: str = ""

    @property
    def target_path(self) -> str:
        return self.path

    @property
    def definition(self) -> str:
        return self.path

    def describe_arguments(self) -> str:
        return self.described


def _manifest_entry(group: str, name: str) -> ManifestEntry:
    description = manifest.load_manifest()[group][name]
    arguments = tuple(Argument(name=field, hint=hint, default=default)
                      for field, hint, default in manifest.manifest_arguments(description))
    return ManifestEntry(name=name, target=None, arguments=arguments, schema=None,  # type: ignore[arg-type]
                         path=description["target"], described=description["arguments"])


def served_entries(group: str) -> dict[str, Entry]:
    """The options of ``group`` by name: a built-in's :class:`ManifestEntry` (unless the process
    registered something else under its name), else the entry registered in this process."""
    entries = _registered(group)
    for name, description in manifest.load_manifest()[group].items():
        entry = entries.get(name)
        if entry is None or entry.target_path == description["target"]:
            entries[name] = _manifest_entry(group, name)
    return entries


def served_registry(group: str) -> Registry:
    """The options of ``group`` as a registry to check configs against, without torch
    (:func:`served_entries`). Its checks and messages are the registry's own; it builds nothing."""
    kind, error_type, suffix = REGISTRY_SETTINGS[group]
    return Registry(kind=kind, group=group, error_type=error_type, schema_suffix=suffix, entries=served_entries(group),
                    key=REGISTRY_KEYS.get(group))


def served_registries() -> dict[str, Registry]:
    """:func:`served_registry` of each served group, by group (what :func:`mammoth.app.run_spec.resolve_run` takes)."""
    return {group: served_registry(group) for group in SERVED_GROUPS}


def option_schema(group: str, name: str) -> type:
    """The schema dataclass of option ``group/name``."""
    entry = served_entries(group).get(name)
    if entry is None:
        raise ConfigError(f"unknown {group} {name!r}; allowed: {', '.join(option_names(group))}")
    return manifest.manifest_schema(group, name) if isinstance(entry, ManifestEntry) else entry.schema


def schema_config_name(group: str, name: str) -> str:
    """The top-level ConfigStore name of option ``group/name``'s schema."""
    return f"mammoth-option-{group.replace('/', '-')}-{name}"


def _store_schema(group: str, name: str, replace: bool = False) -> None:
    """Put option ``group/name``'s schema in Hydra's ConfigStore (once, or again when ``replace``),
    built when Hydra first loads it."""
    key = f"{schema_config_name(group, name)}.yaml"
    if replace or not is_stored(key):
        store_lazily(key, lambda: schema_node(option_schema(group, name)))


def is_stored(path: str) -> bool:
    """Whether Hydra's ConfigStore holds a config at ``path`` (``name.yaml``, ``group/name.yaml``)."""
    from hydra.core.config_store import ConfigStore  # lazy: Hydra, not imported by the Python API (import mammoth.backbones)
    from hydra.core.object_type import ObjectType  # lazy: Hydra, not imported by the Python API (import mammoth.backbones)

    return ConfigStore.instance().get_type(path) == ObjectType.CONFIG


def option_file_text(group: str, name: str) -> str:
    """The text of ``GROUP/NAME.yaml``: a defaults list naming the option's schema.

    An app's own ConfigStore entry of the same name (a hydra-zen ``store(group="backbone",
    name="resnet")``) comes after ``hydra.searchpath`` on Hydra's search path, so Hydra would read
    this file and merge it into that entry (its automatic schema matching): that is refused here,
    in one line naming both."""
    from hydra.errors import ConfigCompositionException  # lazy: Hydra, not imported by the Python API (import mammoth.backbones)

    if is_stored(f"{group}/{name}.yaml"):
        raise ConfigCompositionException(
            f"{group}/{name} is both mammoth's {group} option (pkg://mammoth.conf/{group}/{name}.yaml) and this app's "
            f"ConfigStore entry; allowed: another name for the app's entry, "
            f"or mammoth's options without opting in to them")
    _store_schema(group, name)  # an option registered after its package was imported
    return (f"# mammoth's {group} {name!r}: its typed fields (mammoth.config.options)\n"
            f"defaults:\n  - /{schema_config_name(group, name)}\n  - _self_\n")


#: Whether a config package serves the options in this process (:func:`serve_options` was called).
def option_registered(group: str, name: str) -> None:
    """Listens to the registries once options are served (:func:`serve_options`): the new option's
    schema is stored before Hydra next copies the ConfigStore (each composition)."""
    if group in SERVED_GROUPS:
        _store_schema(group, name, replace=True)


def dataset_default_backbone(dataset: str) -> str | None:
    """The default backbone a dataset option names, or None for a name that is not an option."""
    entry = served_entries("dataset").get(dataset)
    if isinstance(entry, ManifestEntry):
        return manifest.load_manifest()["dataset"][dataset]["default_backbone"]
    return None if entry is None else entry.target.default_backbone


def dataset_task_facts(entry: Entry) -> dict[str, Any]:
    """``{"setting", "classes", "default_n_tasks"}`` of a dataset option's entry (the manifest's for
    a built-in, else its benchmark class's): what :func:`mammoth.config.task_split.task_sizes` needs."""
    if isinstance(entry, ManifestEntry):
        return manifest.load_manifest()["dataset"][entry.name]["tasks"]
    return manifest.dataset_task_facts(entry.target)


def default_backbone_option(dataset: str) -> str:
    """The ``backbone`` option that dataset option ``dataset`` uses when nothing else chose one.

    mammoth's primary config selects ``backbone: ${mammoth_default_backbone:${dataset}}`` with
    this function as the resolver (:func:`mammoth.config.run_settings.store_app_configs`), so the default is
    an ordinary backbone option (``hydra.runtime.choices.backbone`` names it) and is looked up when
    Hydra composes, after any plugin registered more datasets. A dataset that is not registered,
    or whose default backbone is not, gives ``dataset-default/DATASET``, which Hydra cannot find.
    """
    name = canonical_name(dataset) if isinstance(dataset, str) else dataset
    missing = f"{DEFAULT_BACKBONE_GROUP.split('/', 1)[1]}/{dataset}"
    backbone = dataset_default_backbone(name) if isinstance(name, str) else None
    if backbone is None:
        return missing
    backbone = canonical_name(backbone)
    return backbone if backbone in option_names("backbone") else missing


def check_options_not_hidden(repository: Any) -> None:
    """Refuse, in one line naming both, a config file of the user's that a served option of the same
    name hides (``--config-dir`` and ``hydra.searchpath`` come after ``python -m mammoth``'s own
    configs on its search path): ``backbone/resnet34.yaml`` would otherwise be silently ignored.
    A user's file found before mammoth's (``-cp``) wins, as in any app."""
    from hydra.core.object_type import ObjectType  # lazy: Hydra, not imported by the Python API (import mammoth.backbones)

    first: dict[str, str] = {}
    for source in repository.get_sources():
        ours = source.path in SERVING_PACKAGES and source.scheme() == "pkg"
        for group in SERVED_GROUPS:
            if not source.is_group(group):
                continue
            for name in source.list(group, ObjectType.CONFIG):
                key = f"{group}/{name}"
                if key in first and first[key] == "mammoth" and not ours:
                    raise ConfigError(
                        f"{source.full_path()}/{key}.yaml has the name of mammoth's {group} option {name!r}, which "
                        f"comes first on the search path, so yours would be ignored; allowed: another name for yours "
                        f"(it may extend mammoth's with defaults: [{name}, _self_])")
                first.setdefault(key, "mammoth" if ours else source.full_path())


class _Missing:
    """A resource that does not exist."""

    def __init__(self, name: str) -> None:
        self.name = name

    def exists(self) -> bool:
        return False

    is_file = is_dir = exists

    def iterdir(self) -> Iterator[Any]:
        raise FileNotFoundError(self.name)

    def joinpath(self, *parts: str) -> "_Missing":
        return _Missing("/".join((self.name, *parts)))

    def open(self, *args: Any, **kwargs: Any) -> Any:
        raise FileNotFoundError(self.name)

    __truediv__ = joinpath


class _OptionFile:
    """``GROUP/NAME.yaml``: the file text of a served option (:func:`option_file_text`)."""

    def __init__(self, group: str, option: str) -> None:
        self.group, self.option, self.name = group, option, f"{option}.yaml"

    def exists(self) -> bool:
        return True

    is_file = exists

    def is_dir(self) -> bool:
        return False

    def iterdir(self) -> Iterator[Any]:
        raise NotADirectoryError(self.name)

    def joinpath(self, *parts: str) -> _Missing:
        return _Missing("/".join((self.name, *parts)))

    __truediv__ = joinpath

    def read_text(self, encoding: str | None = None) -> str:
        return option_file_text(self.group, self.option)

    def read_bytes(self) -> bytes:
        return self.read_text().encode("utf-8")

    def open(self, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        try:
            text = self.read_text()
        except Exception as error:  # raised by the first read: Hydra closes what open() returned
            return _FailingFile(error)
        return io.BytesIO(text.encode("utf-8")) if "b" in mode else io.StringIO(text)


class _FailingFile(io.StringIO):
    """An opened file whose reading raises ``error`` (Hydra reports it as its own)."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def read(self, *args: Any) -> str:
        raise self.error


class _GroupDirectory:
    """``GROUP/``: one file per option of a served group, and a directory per served group nested in it
    (``model/regularizer/``)."""

    def __init__(self, group: str) -> None:
        self.group = group
        self.name = group.rsplit("/", 1)[-1]

    def exists(self) -> bool:
        return True

    is_dir = exists

    def is_file(self) -> bool:
        return False

    def iterdir(self) -> Iterator[Any]:
        nested = [_GroupDirectory(group) for group in SERVED_GROUPS if group.rpartition("/")[0] == self.group]
        return iter([*(_OptionFile(self.group, option) for option in option_names(self.group)), *nested])

    def joinpath(self, *parts: str) -> Any:
        path = "/".join(parts).strip("/")
        if not path:
            return self
        first, _, rest = path.partition("/")
        if f"{self.group}/{first}" in SERVED_GROUPS:
            return _GroupDirectory(f"{self.group}/{first}").joinpath(rest)
        if rest or not first.endswith(".yaml") or first[:-len(".yaml")] not in option_names(self.group):
            return _Missing(f"{self.group}/{path}")
        return _OptionFile(self.group, first[:-len(".yaml")])

    __truediv__ = joinpath

    def open(self, *args: Any, **kwargs: Any) -> Any:
        raise IsADirectoryError(self.name)


class _PackageFiles:
    """A config package's files (``real``) with the served groups' directories beside them."""

    def __init__(self, real: Any) -> None:
        self.real, self.name = real, real.name

    def __repr__(self) -> str:
        return f"{self.real} with mammoth's options"

    def exists(self) -> bool:
        return True

    is_dir = exists

    def is_file(self) -> bool:
        return False

    def iterdir(self) -> Iterator[Any]:
        own = [item for item in self.real.iterdir() if item.name not in SERVED_GROUPS]
        return iter([*own, *(_GroupDirectory(group) for group in SERVED_GROUPS if "/" not in group)])

    def joinpath(self, *parts: str) -> Any:
        path = "/".join(parts).strip("/")
        if not path:
            return self
        first, _, rest = path.partition("/")
        if first in SERVED_GROUPS:
            return _GroupDirectory(first).joinpath(rest)
        return self.real.joinpath(path)

    __truediv__ = joinpath

    def open(self, *args: Any, **kwargs: Any) -> Any:
        raise IsADirectoryError(self.name)


class _OptionsReader:
    """A package's resource reader whose files include the served groups."""

    def __init__(self, reader: Any) -> None:
        self.reader = reader

    def files(self) -> _PackageFiles:
        return _PackageFiles(self.reader.files())


class _OptionsLoader:
    """A package's loader whose resource reader serves the options too; everything else is the loader's."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def get_resource_reader(self, name: str) -> _OptionsReader:
        return _OptionsReader(self.loader.get_resource_reader(name))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)


def serve_options(package: ModuleType) -> None:
    """Make config package ``package`` (its ``pkg://`` search path entry) serve the ``backbone``,
    ``dataset``, ``model`` and ``model/regularizer`` options (idempotent); called by the package itself when Hydra imports it."""
    spec = package.__spec__
    if not isinstance(spec.loader, _OptionsLoader):
        spec.loader = _OptionsLoader(spec.loader)
        package.__loader__ = spec.loader
    add_registration_listener(option_registered)
    for group in SERVED_GROUPS:  # entries to load lazily, there before Hydra copies the ConfigStore
        for name in option_names(group):
            _store_schema(group, name)
