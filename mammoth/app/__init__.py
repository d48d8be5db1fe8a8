"""The application layer: the command line, the safety gate, the run entry (:func:`mammoth.run`),
Hydra callbacks, the ``python -m mammoth.summary`` command (:mod:`mammoth.app.summary_command`),
and the configs of ``python -m mammoth`` (:mod:`mammoth.app.conf`)."""
