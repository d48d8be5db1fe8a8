"""The configuration core: the registry and the schemas it builds, value checks, the run
settings, mammoth's options as Hydra configs, Hydra's job facts (:mod:`mammoth.config.hydra_job`)
and every use of Hydra's private API (:mod:`mammoth.config.hydra_private`, the one module that
may). Backbones, datasets and models build on it; the checks of a whole composed config (the
safety gate, the pre-flight) are in :mod:`mammoth.app`."""
