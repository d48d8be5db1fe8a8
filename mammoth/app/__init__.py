"""The application layer: the command line (:mod:`mammoth.app.cli`, which ``python -m mammoth``
runs; its pre-flight :mod:`mammoth.app.preflight` hands the run what it checked,
:mod:`mammoth.app.checked`), the safety gate, the run entry (:func:`mammoth.run`), Hydra
callbacks, the ``python -m mammoth.summary`` command (:mod:`mammoth.app.summary_command`), and the
configs of ``python -m mammoth`` (:mod:`mammoth.app.conf`)."""
