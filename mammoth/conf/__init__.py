"""mammoth's configs for other Hydra apps: opt in with one line in the app's primary config,

    hydra:
      searchpath: [pkg://mammoth.conf]

(or ``hydra.searchpath=[pkg://mammoth.conf]`` on the command line). This package then serves the
``backbone``, ``model`` and ``dataset`` options (the registered ones, those of installed
``mammoth.plugins`` entry points included) as config files, to that app only
(:mod:`mammoth.config.options`): importing mammoth's Python API changes nothing in Hydra, and an
app's own option of the same name (its ``backbone/resnet.yaml``, a hydra-zen store) wins, as its
config directory comes first on its search path. Nothing else comes with them: mammoth's own
primary config, presets and Hydra overrides are in :mod:`mammoth.app.conf`, which only
``python -m mammoth`` searches.
"""

import sys

from mammoth.config.options import serve_options

serve_options(sys.modules[__name__])
