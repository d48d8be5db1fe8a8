"""joint and joint-cumulative: training on the data of every task, the upper bound of continual learning.

``joint`` follows the original Mammoth's schedule: no training during tasks 1..T-1 (the evaluation
after each of them sees the untrained network), then, at the last task, one training of
``n_epochs`` over the data of all tasks. ``joint-cumulative`` trains after every task on all the
data seen so far (T trainings in all).
"""

from __future__ import annotations

from mammoth.datasets.source import DataSource, concat_sources, empty_source
from mammoth.models.registry import register_model
from mammoth.models.sgd import SGD


@register_model("joint")
class Joint(SGD):
    """Joint training as the original: trains once, at the last task, on every task's training data.

    The earlier tasks' data is read again through the context (``context.task_data``) when it is
    needed, not kept: no copy in memory or in the checkpoints, and a resumed run sees it all.
    """

    trains_only_at_end = True
    supports_task_free = False  # it trains at the last task, which a task-free stream never announces

    def trains_after(self, task: int) -> bool:
        """Whether the harness trains at ``task``: only at the last task of the run."""
        return task == self.context.n_tasks - 1

    def training_data(self, task: int, data: DataSource) -> DataSource:
        """No data (the harness then trains nothing) unless :meth:`trains_after` ``task``; then the
        training data of tasks 0..task in task order (``data`` for ``task`` itself)."""
        if not self.trains_after(task):
            return empty_source(data)
        return concat_sources([self.context.task_data(t) for t in range(task)] + [data])


@register_model("joint-cumulative")
class JointCumulative(Joint):
    """Cumulative joint training: after every task, ``n_epochs`` over the data of all tasks seen so far."""

    trains_only_at_end = False

    def trains_after(self, task: int) -> bool:
        """Always: every task trains on all the data seen so far."""
        return True
