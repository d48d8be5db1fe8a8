"""lider: Lipschitz-driven rehearsal (Bonicelli et al., NeurIPS 2022), a regulariser of any rehearsal method.

The original Mammoth's ``models/utils/lider_model.py`` (``LiderOptimizer``), which its
``derpp_lider``, ``er_ace_lider``, ``icarl_lider`` and ``gdumb_lider`` subclass; here it composes
with any rehearsal method: ``model=derpp +model/regularizer=lider``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from mammoth.config.value_checks import check_non_negative
from mammoth.errors import ConfigError
from mammoth.models.regularizers import register_regularizer
from mammoth.models.regularizers.base import Regularizer
from mammoth.models.utils import evaluation_mode

if TYPE_CHECKING:
    from mammoth.models.base import ReplayModel

#: The power iterations of the top-eigenvalue estimate (fixed in the original).
POWER_ITERATIONS = 10
_EPS = torch.finfo(torch.float32).eps


@register_regularizer("lider")
class LiDER(Regularizer):
    """LiDER: keeps the layers' Lipschitz constants on the memory's examples small and near a budget.

    The Lipschitz constant of each pair of consecutive layers (the input, then every stage of the
    backbone's ``returnt="full"`` before its feature vector) is estimated per example as the top
    eigenvalue of their transition matrix (10 power iterations from a random start drawn from the
    run's generator; ``grad_iter_step`` says from which iteration the gradient flows: negative
    counts from the end). At the first task the budget (each layer's mean constant over the task's
    augmented training data, in eval mode) is computed once. At every step with a non-empty memory
    two more replay minibatches are drawn (``minibatch_size``, else the run's batch size), and
    ``alpha_lip_lambda`` times the mean constant on the first plus ``beta_lip_lambda`` times the
    L1 distance of the second's constants from ``headless_init_act(budget)`` are added to the loss.
    A term whose weight is 0 draws nothing, as in the original; both 0 is refused.
    """

    name = "lider"

    def __init__(self, alpha_lip_lambda: float = 0.0, beta_lip_lambda: float = 0.0,
                 headless_init_act: Literal["relu", "lrelu"] = "relu", grad_iter_step: int = -2) -> None:
        super().__init__()
        self.alpha_lip_lambda = check_non_negative("model.regularizer.alpha_lip_lambda", alpha_lip_lambda)
        self.beta_lip_lambda = check_non_negative("model.regularizer.beta_lip_lambda", beta_lip_lambda)
        if self.alpha_lip_lambda == 0 and self.beta_lip_lambda == 0:
            raise ConfigError("model.regularizer: lider with alpha_lip_lambda=0 and beta_lip_lambda=0 adds nothing; "
                              "allowed: a positive model.regularizer.alpha_lip_lambda or beta_lip_lambda (the original "
                              "only logs this)")
        self.headless_init_act = headless_init_act
        start = POWER_ITERATIONS + grad_iter_step + 1 if grad_iter_step < 0 else grad_iter_step
        if not 0 <= start <= POWER_ITERATIONS:
            raise ConfigError(f"model.regularizer.grad_iter_step={grad_iter_step} is outside the {POWER_ITERATIONS} "
                              f"power iterations; allowed: {-POWER_ITERATIONS - 1} to {POWER_ITERATIONS}")
        self.grad_iter_step = grad_iter_step
        self.start_grad_iteration = start
        #: Each layer's target Lipschitz constant (float64), set at the first task; None before.
        self.budget: Optional[Tensor] = None

    # ---- the Lipschitz estimate (the original's LiderOptimizer, step by step) ----

    def lip_features(self, model: "ReplayModel", inputs: Tensor) -> list[Tensor]:
        """The input and every stage output of ``returnt="full"`` before the feature vector."""
        stages = model.net(inputs, returnt="full")[:-2]
        if not stages:
            raise ConfigError(f"lider needs a backbone with a stage before its feature vector; "
                              f"{type(model.net).__name__} has none (allowed: e.g. backbone=resnet)")
        return [inputs, *stages]

    def top_eigenvalue(self, matrix: Tensor) -> Tensor:
        """The top eigenvalue of each of a batch of matrices by power iteration."""
        vector = torch.rand(matrix.shape[0], matrix.shape[1], 1, generator=self.generator).to(matrix.device, matrix.dtype)
        for iteration in range(POWER_ITERATIONS):
            with torch.set_grad_enabled(torch.is_grad_enabled() and iteration >= self.start_grad_iteration):
                product = torch.bmm(matrix, vector)
                norm = torch.norm(product, dim=1).unsqueeze(1) + _EPS
                vector = product / norm
        return torch.sqrt(norm / (torch.norm(vector, dim=1).unsqueeze(1) + _EPS))

    def layer_lipschitz(self, front: Tensor, latter: Tensor) -> Tensor:
        """The Lipschitz constant of a layer from its input ``front`` and output ``latter`` (one per example)."""
        front, latter = front.double(), latter.double()
        front = front / (torch.norm(front, dim=1, keepdim=True) + _EPS)
        latter = latter / (torch.norm(latter, dim=1, keepdim=True) + _EPS)
        transmitting = _transmitting_matrix(front, latter)
        return self.top_eigenvalue(torch.bmm(transmitting, transmitting.transpose(2, 1)))

    def lipschitz(self, features: list[Tensor]) -> Tensor:
        """(batch, layers): the constant of each consecutive pair of ``features``."""
        features = [feature if feature.dim() > 2 else feature.reshape(*feature.shape, 1, 1) for feature in features]
        values = []
        for front, latter in zip(features, features[1:]):
            pooled = F.adaptive_avg_pool1d(latter.reshape(*latter.shape[:2], -1).permute(0, 2, 1), front.shape[1])
            latter = pooled.permute(0, 2, 1).reshape(latter.shape[0], -1, *latter.shape[2:])
            values.append(self.layer_lipschitz(front, latter).reshape(len(front)))
        return torch.stack(values, dim=1)

    # ---- the hooks ----

    def begin_task(self, model: "ReplayModel", task: int) -> None:
        """At the first task (or the first one this run starts with no budget): the budget."""
        if self.budget is None:
            self.budget = self.compute_budget(model, task)

    def compute_budget(self, model: "ReplayModel", task: int) -> Tensor:
        """Each layer's mean Lipschitz constant over ``task``'s augmented training data, in eval mode."""
        context = model.context
        values = []
        with torch.no_grad(), evaluation_mode(model.net):
            for batch in context.batches(context.task_data(task), shuffle=False):
                values.append(self.lipschitz(self.lip_features(model, batch.inputs)))
        return torch.cat(values).mean(0)

    def loss(self, model: "ReplayModel") -> Optional[Tensor]:
        """``alpha_lip_lambda`` * mean constant + ``beta_lip_lambda`` * L1 to the budget, each on its own replay minibatch."""
        if model.buffer.is_empty():
            return None
        size = model.minibatch_size if model.minibatch_size is not None else model.context.batch_size
        total: Optional[Tensor] = None
        if self.alpha_lip_lambda > 0:
            replay = model.replay_batch(size)
            term = self.alpha_lip_lambda * self.lipschitz(self.lip_features(model, replay.examples)).mean()
            total = term
        if self.beta_lip_lambda > 0:
            replay = model.replay_batch(size)
            values = self.lipschitz(self.lip_features(model, replay.examples))
            activation = F.relu if self.headless_init_act == "relu" else F.leaky_relu
            target = activation(self.budget[: values.shape[1]].to(values.device)).unsqueeze(0).expand(values.shape)
            term = self.beta_lip_lambda * F.l1_loss(values, target)
            total = term if total is None else total + term
        return total

    def extra_state(self) -> dict[str, Any]:
        """The budget (None before the first task)."""
        return {"budget": self.budget}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the budget."""
        self.budget = state["budget"]


def _transmitting_matrix(front: Tensor, latter: Tensor) -> Tensor:
    """The flow-of-solution-procedure matrix of two feature maps (``front`` pooled to ``latter``'s size)."""
    if front.size(2) > latter.size(2):
        front = F.adaptive_avg_pool2d(front, (latter.size(-2), latter.size(-1)))
    front = front.reshape(front.size(0), front.size(1), -1)
    latter = latter.reshape(latter.size(0), latter.size(1), -1).transpose(1, 2)
    return torch.bmm(front, latter) / front.size(2)
