"""star: STAR, Stability-inducing parameter-space regularisation (Eskandar et al., ICLR 2025), a regulariser of any rehearsal method.

The original Mammoth's ``models/star_utils/star_perturber.py`` (``Perturber``), which its
``derpp_star``, ``er_star``, ``er_ace_star`` and ``xder_rpc_star`` call; here it composes with any
rehearsal method: ``model=derpp +model/regularizer=star``.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mammoth.config.value_checks import check_non_negative, check_positive, check_positive_int
from mammoth.models.regularizers import register_regularizer
from mammoth.models.regularizers.base import Regularizer

if TYPE_CHECKING:
    from mammoth.models.base import ReplayModel

#: The original's ``EPS``: the scale of the proxy's initial noise, and the guard of the normalisation.
EPS = 1e-20


@register_regularizer("star")
class STAR(Regularizer):
    """STAR: the KL divergence between the network's predictions on memory examples and those of the
    network at the worst nearby weights, on the examples it classifies correctly.

    At every step with a non-empty memory, one replay minibatch is drawn (``minibatch_size``, else
    the run's batch size); a copy of the network (its weights plus noise of relative size 1e-20
    drawn from the run's generator) takes ``p_steps`` SGD steps of rate ``p_gamma / p_steps`` that
    increase that divergence, each gradient scaled to its weight's norm (weights of one dimension,
    biases and norms, are not perturbed); the network is moved by the difference of the weights,
    ``p_lam`` times the divergence is differentiated there, and the network moved back; all before
    the method's ``observe``, as in the original (:meth:`before_observe`). Those gradients are added
    to the step's (:meth:`after_backward`) before the optimizer steps. Fewer than 2 correctly
    classified examples: no term that step, as the original.
    """

    name = "star"
    supports_fp16 = False  # its own backward pass is not scaled

    def __init__(self, p_steps: int = 1, p_lam: float = 0.01, p_gamma: float = 0.05) -> None:
        super().__init__()
        self.p_steps = check_positive_int("model.regularizer.p_steps", p_steps)
        self.p_lam = check_non_negative("model.regularizer.p_lam", p_lam)
        self.p_gamma = check_positive("model.regularizer.p_gamma", p_gamma)
        self._proxy: Optional[nn.Module] = None
        self._gradients: Optional[tuple[Optional[Tensor], ...]] = None

    def proxy(self, model: "ReplayModel") -> nn.Module:
        """The network's copy that is perturbed (made once; its state is the network's at each use)."""
        if self._proxy is None:
            self._proxy = copy.deepcopy(model.net)
        self._proxy.load_state_dict(model.net.state_dict())
        return self._proxy

    def before_observe(self, model: "ReplayModel") -> None:
        """Before the method's step, as the original: the gradients of ``p_lam`` * KL at the perturbed
        weights, kept for :meth:`after_backward`; the network is moved there and back."""
        self._gradients = None
        if model.buffer.is_empty():
            return
        size = model.minibatch_size if model.minibatch_size is not None else model.context.batch_size
        replay = model.replay_batch(size)
        inputs, labels = replay.examples, replay.labels
        net = model.net
        targets = F.softmax(net(inputs), dim=-1).detach()
        proxy = self.proxy(model)
        with torch.no_grad():
            for weight in proxy.parameters():
                if weight.dim() > 1:
                    noise = torch.randn(weight.shape, generator=self.generator).to(weight.device, weight.dtype)
                    weight.add_(noise * torch.norm(weight) * EPS)
        proxy.train()
        mask = torch.where(targets.max(1)[1] == labels, 1.0, 0.0).detach()
        if mask.sum() < 2:
            return
        optimizer = torch.optim.SGD(proxy.parameters(), lr=self.p_gamma / self.p_steps)
        for _ in range(self.p_steps):
            optimizer.zero_grad()
            divergence = F.kl_div(F.log_softmax(proxy(inputs), dim=1), targets, reduction="none").sum(dim=1)
            (-(divergence * mask).sum() / mask.sum()).backward()
            with torch.no_grad():
                for weight, reference in zip(proxy.parameters(), net.parameters()):
                    if weight.grad is None:  # a frozen weight (backbone.freeze): not perturbed
                        continue
                    if weight.dim() <= 1:
                        weight.grad.fill_(0)
                    else:
                        weight.grad.mul_(reference.norm() / (weight.grad.norm() + EPS))
            optimizer.step()
        difference = _weight_difference(net, proxy)
        _add_into_weights(net, difference, 1.0)
        divergence = F.kl_div(F.log_softmax(net(inputs), dim=1), targets, reduction="none").sum(dim=1)
        trainable = [parameter for parameter in net.parameters() if parameter.requires_grad]
        self._gradients = torch.autograd.grad(self.p_lam * (divergence * mask).sum() / mask.sum(), trainable,
                                              allow_unused=True)
        _add_into_weights(net, difference, -1.0)

    def after_backward(self, model: "ReplayModel") -> None:
        """Add the gradients :meth:`before_observe` took to the step's."""
        if self._gradients is None:
            return
        trainable = [parameter for parameter in model.net.parameters() if parameter.requires_grad]
        for parameter, gradient in zip(trainable, self._gradients):
            if gradient is not None:
                parameter.grad = gradient if parameter.grad is None else parameter.grad + gradient
        self._gradients = None


def _weight_difference(net: nn.Module, proxy: nn.Module) -> dict[str, Tensor]:
    """The proxy's weights minus the network's, for every weight of more than one dimension named ``*weight*``."""
    with torch.no_grad():
        proxy_state = proxy.state_dict()
        return {name: proxy_state[name] - value for name, value in net.state_dict().items()
                if value.dim() > 1 and "weight" in name}


def _add_into_weights(net: nn.Module, difference: dict[str, Tensor], coefficient: float) -> None:
    with torch.no_grad():
        for name, parameter in net.named_parameters():
            if name in difference:
                parameter.add_(coefficient * difference[name])
