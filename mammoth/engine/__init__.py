"""The engine: the training context, the task loop, evaluation, checkpoints, device and
precision, distributed training. :func:`mammoth.run` (:mod:`mammoth.app.runner`) drives it."""
