"""The configs of mammoth's own app, ``python -m mammoth`` (``pkg://mammoth.app_conf``).

``config.yaml`` (the primary config), ``experiment/`` (the original Mammoth's best arguments),
``hparams_search/`` (Optuna searches), ``logger/`` and ``hydra/`` (help and job logging). Other
Hydra apps do not see these; they opt in to the reusable groups with ``pkg://mammoth.conf``.

Hydra imports this package when it first looks at the search path, so importing it registers
the built-ins and the installed plugins (:func:`mammoth.plugins.load_registries`) and stores what
only mammoth's app composes: the run schema ``config.yaml`` extends and the resolver that picks a
dataset's default backbone (:func:`mammoth.config.run_settings.store_app_configs`).
"""

from mammoth.config.run_settings import store_app_configs
from mammoth.plugins import load_registries

load_registries()
store_app_configs()
