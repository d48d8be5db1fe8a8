"""Configuration: the registry, the schemas it builds, the run settings, and every check of a
composed config (value checks, the safety gate, the pre-flight of ``python -m mammoth``)."""
