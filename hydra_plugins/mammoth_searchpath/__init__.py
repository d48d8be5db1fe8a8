"""Hydra plugins that let any Hydra app compose mammoth's configs, with no ``import mammoth``.

Hydra imports this module when it scans ``hydra_plugins`` at start-up (in a regular and in an
editable install), so it imports nothing heavy. It adds two entries to every app's search path:

- ``pkg://mammoth.conf``: the YAML groups (``experiment/``, ``logger/``, ``hparams_search/``);
- ``mammoth://mammoth``: :class:`MammothConfigSource`, which imports ``mammoth`` when the app
  builds its config repository. The import stores the structured configs (``backbone/``,
  ``model/``, ``dataset/``, the run schema) in Hydra's ConfigStore and loads the ``mammoth.plugins`` entry
  points, so what an app can compose never depends on what it imported, or in which order.
"""

from __future__ import annotations

import importlib
from typing import List, Optional

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin

MAMMOTH_CONFIG_PATH = "pkg://mammoth.conf"
MAMMOTH_STRUCTURED_PATH = "mammoth://mammoth"


class MammothConfigSource(ConfigSource):
    """Imports ``mammoth`` when Hydra builds an app's config repository, then answers "not here"
    to every lookup: the import stores mammoth's structured configs in Hydra's ConfigStore, and
    Hydra's own ConfigStore source (last in every search path) serves them from there.

    The import happens here, when the repository is built, and not on the first lookup: Hydra
    deep-copies the repository (with a snapshot of the ConfigStore) before it composes.
    """

    def __init__(self, provider: str, path: str) -> None:
        """``path`` is ``mammoth://MODULE``: the module whose import stores the configs."""
        super().__init__(provider=provider, path=path)
        importlib.import_module(self.path)

    @staticmethod
    def scheme() -> str:
        """The search-path scheme: ``mammoth://MODULE``."""
        return "mammoth"

    def available(self) -> bool:
        """Always usable."""
        return True

    def load_config(self, config_path: str) -> ConfigResult:
        """Never called: :meth:`is_config` is always False."""
        raise ConfigLoadError(f"{config_path} is served by Hydra's ConfigStore source, not {self.path}")

    def is_group(self, config_path: str) -> bool:
        """False: the ConfigStore source answers for mammoth's groups."""
        return False

    def is_config(self, config_path: str) -> bool:
        """False: the ConfigStore source answers for mammoth's configs."""
        return False

    def list(self, config_path: str, results_filter: Optional[ObjectType]) -> List[str]:
        """Nothing: the ConfigStore source lists mammoth's configs."""
        return []


class MammothSearchPathPlugin(SearchPathPlugin):
    """Append mammoth's YAML and structured configs to the config search path of every Hydra app."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        """Add mammoth's config sources unless the app already searches them (mammoth itself)."""
        present = {element.path for element in search_path.get_path()}
        for path in (MAMMOTH_CONFIG_PATH, MAMMOTH_STRUCTURED_PATH):
            if path not in present:
                search_path.append(provider="mammoth", path=path)
