"""The configuration core: the registry, the schemas it builds, the run settings, value checks,
mammoth's options as Hydra configs, and every use of Hydra's private API
(:mod:`mammoth.config.hydra_private`, the one module that may)."""
