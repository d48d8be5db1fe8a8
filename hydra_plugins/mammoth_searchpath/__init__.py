"""Hydra SearchPathPlugin: any Hydra app sees mammoth's YAML configs (``dataset/``, ``experiment/``).

Imports nothing heavy: Hydra imports every plugin at start-up. The backbone and model configs
are structured configs that ``import mammoth`` puts in Hydra's ConfigStore.
"""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

MAMMOTH_CONFIG_PATH = "pkg://mammoth.conf"


class MammothSearchPathPlugin(SearchPathPlugin):
    """Append ``pkg://mammoth.conf`` to the config search path of every Hydra app."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        """Add mammoth's configs unless the app already searches them (mammoth itself)."""
        if not any(element.path == MAMMOTH_CONFIG_PATH for element in search_path.get_path()):
            search_path.append(provider="mammoth", path=MAMMOTH_CONFIG_PATH)
