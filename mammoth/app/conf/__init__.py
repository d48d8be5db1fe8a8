"""The configs of mammoth's own app, ``python -m mammoth`` (``pkg://mammoth.app.conf``).

``config.yaml`` (the primary config), ``experiment/`` (the original Mammoth's best arguments),
``hparams_search/`` (Optuna searches), ``logger/`` and ``hydra/`` (help and job logging), and the
``backbone``, ``model`` and ``dataset`` options, served from the registries
(:mod:`mammoth.config.options`). Other Hydra apps do not see these; they opt in to the reusable
groups with ``pkg://mammoth.conf``.

Hydra imports this package when it first looks at the search path; importing it stores what only
mammoth's app composes: the run schema ``config.yaml`` extends and the resolver that picks a
dataset's default backbone (:func:`mammoth.config.run_settings.store_app_configs`). It imports
neither torch nor the built-ins, so ``--help``, ``--info`` and completion stay Hydra's speed.
"""

import sys

from mammoth.config.options import serve_options
from mammoth.config.run_settings import store_app_configs

serve_options(sys.modules[__name__])
store_app_configs()
