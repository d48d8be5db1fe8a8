"""The configuration core: the registry and the schemas it builds, value checks, the run
settings, and the options served to Hydra. Backbones, datasets and models build on it; the checks
of a whole composed config (the safety gate, the pre-flight) are in :mod:`mammoth.app`."""
