"""Regularizer: the hooks a rehearsal method calls on the regulariser it was configured with."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import torch
from torch import Tensor

if TYPE_CHECKING:
    from mammoth.models.base import ReplayModel


class Regularizer:
    """A term added to a rehearsal method's loss, with hooks at the task's boundaries.

    The method (a :class:`~mammoth.models.base.ReplayModel`) calls :meth:`attach` once per run
    (after its own), :meth:`begin_task` after its own ``begin_task``, and at each step
    :meth:`before_observe` (before the method's ``observe``), :meth:`loss`
    (:meth:`~mammoth.models.base.ReplayModel.step` adds it to the step's loss before the backward
    pass) and :meth:`after_backward` (after the backward pass, before the optimizer's step). Random draws come from :attr:`generator`, seeded
    from the run's generator at :meth:`attach`; :meth:`state_dict` is saved with the method's
    checkpoint (resume is bit-exact).
    """

    #: The registered name (set by the subclass), for messages.
    name: str = "regularizer"
    #: Whether its term on several processes is the same experiment as on one (the method's own
    #: ``supports_distributed`` is then kept); False refuses several processes.
    supports_distributed: bool = False
    #: Whether it works under ``precision=fp16`` (its own backward passes would need the gradient
    #: scaler); False refuses fp16.
    supports_fp16: bool = True

    def __init__(self) -> None:
        self.generator = torch.Generator()
        self.generator.manual_seed(0)  # seeded from the run's generator at attach(): building draws nothing

    def attach(self, model: "ReplayModel") -> None:
        """Receive the method once its context is set: seeds :attr:`generator` from the run's generator."""
        self.generator.manual_seed(int(torch.randint(0, 2**62, (1,), generator=model.context.generator)))

    def begin_task(self, model: "ReplayModel", task: int) -> None:
        """Called after the method's ``begin_task(task)``; nothing by default."""

    def before_observe(self, model: "ReplayModel") -> None:
        """Called before each ``observe`` of the method (the step's first work); nothing by default."""

    def loss(self, model: "ReplayModel") -> Optional[Tensor]:
        """The term added to this step's loss (None: nothing this step)."""
        return None

    def after_backward(self, model: "ReplayModel") -> None:
        """Called by the method's ``step`` after its backward pass, before the optimizer's step: a
        regulariser whose term needs gradients taken elsewhere (at perturbed weights) adds them here."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to continue identically: the generator's state and :meth:`extra_state`."""
        return {"generator": self.generator.get_state(), **self.extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.generator.set_state(state["generator"].cpu())
        self.load_extra_state(state)

    def extra_state(self) -> dict[str, Any]:
        """A subclass's own state (tensors, numbers); empty by default."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore a subclass's own state; nothing by default."""
