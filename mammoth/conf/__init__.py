"""mammoth's configs for other Hydra apps: opt in with one line in the app's primary config,

    hydra:
      searchpath: [pkg://mammoth.conf]

(or ``hydra.searchpath=[pkg://mammoth.conf]`` on the command line). Hydra then imports this
package when it checks the search path, which loads mammoth's registries: the registered ``backbone``,
``model`` and ``dataset`` options (and those of installed ``mammoth.plugins`` entry points) are put
in Hydra's ConfigStore, whatever the app imported, and in whichever order. Nothing else comes with
them: mammoth's own primary config, presets and Hydra overrides are in :mod:`mammoth.app_conf`,
which only ``python -m mammoth`` searches.
"""

from mammoth.plugins import load_registries

load_registries()
