"""The engine: the run, the task loop, evaluation, checkpoints and the run directory."""
