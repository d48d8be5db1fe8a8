"""The application layer: the command line, the safety gate, the run entry (:func:`mammoth.run`),
Hydra callbacks, and the configs of ``python -m mammoth`` (:mod:`mammoth.app.conf`)."""
