"""Parameters and gradients stored as views of one flat buffer (``MammothBackbone``'s flat utilities).

:class:`FlatStorage` re-stores a module's parameters as views of one contiguous buffer per
(dtype, device), in ``parameters()`` order, and their gradients as views of one gradient buffer
of the same layout. Only the storage changes: every ``Parameter`` object stays the same object
(``param.data`` becomes a view), so optimizers, hooks and state dicts built before keep working,
and every value is copied exactly.

Whether a storage is still current is one cheap gate, run by every flat call: the data pointers
of the parameters it holds (catches ``.to()``, ``.half()``, ``channels_last``, ``param.data =
...``) and a process-wide count of module / parameter registrations (catches a head, a prompt or
an adapter added after flattening, or a parameter replaced). The count comes from torch's global
registration hooks, installed the first time a storage is built; a registration costs one integer
increment. When the gate fails, the backbone re-flattens (or falls back to gathering).

Gradients: a post-accumulate-grad hook on each trainable parameter moves a freshly created
``.grad`` (after ``zero_grad(set_to_none=True)``) into its view; a ``.grad`` assigned by hand is
moved in on the next flat call; a ``.grad`` that is a view of another tensor (DDP's
``gradient_as_bucket_view`` buckets) means something else owns the gradient storage: the storage
stops managing gradients (hooks removed) and the gradient calls gather and scatter instead.
"""

from __future__ import annotations

import operator
import weakref
from typing import Callable, Optional

import torch
from torch import Tensor, nn
from torch.nn.modules import module as torch_module

#: Process-wide count of module / parameter registrations (torch's global registration hooks,
#: installed by the first :class:`FlatStorage`); a storage built at another count re-checks its
#: parameter list before use.
_registrations = 0
_registration_hooks: list = []
_GRAD = operator.attrgetter("grad")


def _count_registration(*args: object) -> None:
    global _registrations
    _registrations += 1


def _install_registration_hooks() -> None:
    if _registration_hooks:
        return
    _registration_hooks.append(torch_module.register_module_parameter_registration_hook(_count_registration))
    _registration_hooks.append(torch_module.register_module_module_registration_hook(_count_registration))


def ineligibility(parameters: tuple[nn.Parameter, ...], owned: frozenset = frozenset()) -> Optional[str]:
    """Why ``parameters`` cannot be re-stored as views of flat buffers (None: they can).

    ``owned``: the storages (data pointers) of an earlier flat storage, which its parameters share.
    """
    storages = set()
    for parameter in parameters:
        if type(parameter.data) is not Tensor or parameter.layout != torch.strided or parameter.is_meta:
            return "a parameter is not a plain dense tensor"
        if not parameter.is_contiguous():
            # channels_last conv weights: a flat buffer in parameters() order holds them only in
            # NCHW order; re-storing would undo the memory format the user chose.
            return "a parameter is not contiguous (e.g. channels_last)"
        storage = parameter.untyped_storage().data_ptr()
        if parameter.numel() and storage in storages and storage not in owned:
            return "parameters share storage"
        storages.add(storage)
    return None


class FlatStorage:
    """The flat storage of one module's parameters (see the module docstring).

    ``buffer`` / ``grad_buffer``: the single flat buffers when all parameters have one dtype and
    device (the fast paths), else None; ``reason``: why the parameters are not stored flat
    (None when they are).
    """

    def __init__(self, parameters: tuple[nn.Parameter, ...], enabled: bool = True,
                 previous: Optional["FlatStorage"] = None) -> None:
        _install_registration_hooks()
        self.enabled = enabled
        self.parameters = parameters
        self.generation = _registrations
        self.total = sum(parameter.numel() for parameter in parameters)
        self.dtype = parameters[0].dtype if parameters else None
        self.device = parameters[0].device if parameters else None
        self.reason = None if enabled else "flat storage switched off (flat_storage = False)"
        if self.reason is None and not parameters:
            self.reason = "no parameters"
        if self.reason is None:
            self.reason = ineligibility(parameters, previous.owned if previous is not None else frozenset())
        self.buffer: Optional[Tensor] = None
        self.grad_buffer: Optional[Tensor] = None
        self.buffers: dict[tuple[torch.dtype, torch.device], Tensor] = {}
        self.grad_views: list[Tensor] = []
        self._expected_grads: list[Optional[Tensor]] = []
        self._hooks: list = []
        self.manages_grads = False
        #: The data pointers of the buffers' storages (kept after :meth:`release`: the parameters
        #: of a released storage may still share them, which a rebuild allows).
        self.owned: frozenset = frozenset()
        self.stale = False
        #: Whether a gradient call was made (then, and only then, the gradients are stored flat:
        #: a backbone used only through get/set_params pays nothing in its backward passes).
        self.wants_grads = previous is not None and previous.wants_grads
        if previous is not None:
            previous.release()
        if self.reason is None:
            self._flatten()
        self.pointers = tuple(map(Tensor.data_ptr, parameters))

    # ---- building ----

    def _flatten(self) -> None:
        self._groups: dict[tuple[torch.dtype, torch.device], list[int]] = {}
        for index, parameter in enumerate(self.parameters):
            self._groups.setdefault((parameter.dtype, parameter.device), []).append(index)
        with torch.no_grad():
            for key, indices in self._groups.items():
                members = [self.parameters[i] for i in indices]
                buffer = torch.empty(sum(p.numel() for p in members), dtype=key[0], device=key[1])
                for parameter, view in zip(members, _views_of(buffer, members)):
                    view.copy_(parameter.data)
                    parameter.data = view
                self.buffers[key] = buffer
                self.owned |= {buffer.untyped_storage().data_ptr()}
        if len(self._groups) == 1:
            self.buffer = next(iter(self.buffers.values()))
        if self.wants_grads:
            self._manage_grads()

    def _manage_grads(self) -> None:
        """Store the gradients flat too: a gradient buffer per parameter buffer, the existing
        ``.grad`` copied into its view, and the hooks that move new ones there."""
        self.grad_views = [None] * len(self.parameters)  # type: ignore[list-item]
        self._expected_grads = [None] * len(self.parameters)
        # A .grad that views another tensor (DDP's gradient_as_bucket_view buckets): that tensor
        # owns the gradient storage; the gradients are left where they are, and gathered.
        if any(p.grad is not None and p.grad._base is not None for p in self.parameters):
            return
        with torch.no_grad():
            for key, indices in self._groups.items():
                members = [self.parameters[i] for i in indices]
                grad_buffer = torch.zeros_like(self.buffers[key])
                for index, parameter, view in zip(indices, members, _views_of(grad_buffer, members)):
                    if parameter.grad is not None:
                        view.copy_(parameter.grad)
                        parameter.grad = view
                        self._expected_grads[index] = view
                    self.grad_views[index] = view
                if self.buffer is not None:
                    self.grad_buffer = grad_buffer
        self.manages_grads = True
        reference = weakref.ref(self)
        for index, parameter in enumerate(self.parameters):
            if parameter.requires_grad and hasattr(parameter, "register_post_accumulate_grad_hook"):
                self._hooks.append(parameter.register_post_accumulate_grad_hook(_grad_mover(reference, index)))

    def release(self) -> None:
        """Stop managing gradients (remove the hooks), drop the buffers' references and mark the
        storage stale (the next flat call rebuilds it)."""
        self.stale = True
        self._stop_managing_grads()
        self.buffer = self.grad_buffer = None
        self.buffers = {}
        self.grad_views = []

    def _stop_managing_grads(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        self.manages_grads = False

    # ---- the gate ----

    def is_current(self, module: nn.Module) -> bool:
        """Whether this storage still describes ``module``'s parameters (list, storage)."""
        if self.stale or tuple(map(Tensor.data_ptr, self.parameters)) != self.pointers:
            return False
        if self.generation != _registrations:
            parameters = tuple(module.parameters())
            if len(parameters) != len(self.parameters) or not all(map(operator.is_, parameters, self.parameters)):
                return False
            self.generation = _registrations
        return True

    @property
    def flat(self) -> bool:
        """Whether the parameters are views of a single flat buffer (the one-copy fast paths)."""
        return self.buffer is not None

    # ---- gradients ----

    def claim_grads(self, create_missing: bool) -> bool:
        """Make every ``.grad`` its view of ``grad_buffer`` (True) or say they cannot be (False).

        A missing ``.grad`` is created as its view when ``create_missing``, else its region is
        zeroed (it reads as zeros and the parameter keeps no gradient). A ``.grad`` assigned by
        hand is copied into its view (not when ``create_missing``: the caller overwrites it); one
        that is a view of another tensor (DDP's bucket views) makes the storage stop managing
        gradients.
        """
        if not self.wants_grads:
            self.wants_grads = True
            if self.reason is None:
                self._manage_grads()
        if not self.manages_grads or self.grad_buffer is None:
            return False
        expected = self.grad_views if create_missing else self._expected_grads
        if all(map(operator.is_, map(_GRAD, self.parameters), expected)):
            return True
        grads = [parameter.grad for parameter in self.parameters]
        with torch.no_grad():
            for index, (parameter, grad) in enumerate(zip(self.parameters, grads)):
                view = self.grad_views[index]
                if grad is view:
                    self._expected_grads[index] = view
                    continue
                if grad is None and not create_missing:
                    view.zero_()
                    self._expected_grads[index] = None
                    continue
                if grad is not None and grad.requires_grad:
                    return False  # a backward with create_graph=True: the graph stays on .grad
                if grad is not None and grad._base is not None:
                    self._stop_managing_grads()
                    return False
                if grad is not None and not create_missing:
                    view.copy_(grad)
                parameter.grad = view
                self._expected_grads[index] = view
        return True

    def move_grad(self, index: int) -> None:
        """After accumulation: move a new ``.grad`` of parameter ``index`` into its view."""
        parameter = self.parameters[index]
        grad, view = parameter.grad, self.grad_views[index]
        if grad is None or grad is view or not self.manages_grads:
            return
        unusual = grad.requires_grad or grad.layout != torch.strided or grad.shape != view.shape
        if unusual or grad._base is not None:
            return  # a graph, someone else's view or an unusual gradient: the next flat call decides
        with torch.no_grad():
            view.copy_(grad)
        parameter.grad = view
        self._expected_grads[index] = view


def _grad_mover(reference: "weakref.ref[FlatStorage]", index: int) -> Callable[[Tensor], None]:
    def hook(parameter: Tensor) -> None:
        storage = reference()
        if storage is not None:
            storage.move_grad(index)

    return hook


def _views_of(buffer: Tensor, tensors: list[Tensor]) -> list[Tensor]:
    """Consecutive views of the 1-D ``buffer``, shaped like each of ``tensors``."""
    views, offset = [], 0
    for tensor in tensors:
        views.append(buffer[offset:offset + tensor.numel()].view(tensor.shape))
        offset += tensor.numel()
    return views
