"""Any torchvision classification architecture as a MammothBackbone (``backbone=torchvision``)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Optional

from torch import Tensor, nn

from mammoth.backbones.base import MammothBackbone
from mammoth.backbones.registry import register_backbone
from mammoth.errors import BackboneError, unknown_name_message

#: Attributes where torchvision's classification models keep their classifier head.
_HEAD_ATTRIBUTES = ("fc", "classifier", "heads", "head")


def torchvision_architectures() -> list[str]:
    """Names of torchvision's classification architectures (``torchvision.models.list_models``)."""
    import torchvision.models

    return sorted(torchvision.models.list_models(module=torchvision.models))


@register_backbone("torchvision")
class TorchvisionBackbone(MammothBackbone):
    """A torchvision classification model (``arch``) whose last linear layer is the classifier.

    ``weights`` is a torchvision weights name (``DEFAULT``, ``IMAGENET1K_V1``...); off by
    default, so building downloads nothing. Stages (``returnt='full'``): the outputs of the
    model's top-level children in call order, then the features.
    """

    def __init__(
        self,
        num_classes: int,
        input_shape: tuple[int, int, int],
        arch: str = "resnet18",
        weights: Optional[str] = None,
    ) -> None:
        super().__init__()

        allowed = torchvision_architectures()
        if arch not in allowed:
            raise BackboneError(unknown_name_message("torchvision arch", arch, allowed))
        options = {"aux_logits": False, "init_weights": True} if arch in ("googlenet", "inception_v3") else {}
        self.trunk = _build_trunk(arch, weights, options)
        self.arch, self.num_classes = arch, num_classes
        self.num_features = _detach_head(self.trunk, arch)
        self.classifier = nn.Linear(self.num_features, num_classes)
        if input_shape[0] != 3:
            _replace_first_conv(self.trunk, input_shape[0])

    def extract_features(self, x: Tensor) -> Tensor:
        """The trunk's output (its classifier replaced by the identity)."""
        return self.trunk(x)

    def stage_outputs(self, x: Tensor) -> list[Tensor]:
        """Outputs of the trunk's top-level children in call order, then the features."""
        outputs: list[Tensor] = []
        hooks = [
            child.register_forward_hook(lambda _module, _inputs, output: outputs.append(output.clone()))
            for child in self.trunk.children()
            if not isinstance(child, nn.Identity)
        ]
        try:
            features = self.trunk(x)
        finally:
            for hook in hooks:
                hook.remove()
        return [output for output in outputs if isinstance(output, Tensor)] + [features]


def _build_trunk(arch: str, weights: Optional[str], options: dict) -> nn.Module:
    """``torchvision.models.get_model``, with a one-line BackboneError for unknown ``weights`` or
    pretrained weights that can be neither downloaded nor found in torch's hub cache."""
    import torch
    import torchvision.models

    if weights is None:
        return torchvision.models.get_model(arch, **options)
    available = torchvision.models.get_model_weights(arch)
    names = ["DEFAULT", *(member.name for member in available)]
    if weights not in names:
        raise BackboneError(unknown_name_message(f"torchvision weights for {arch}", weights, names))
    url = (available.DEFAULT if weights == "DEFAULT" else available[weights]).url
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    check_cached_weights(cache / Path(url).name, arch)
    try:
        # torchvision has torch.hub load the (cached) file with weights_only=False: load it with
        # weights_only=True first, so a tampered cache file is refused before anything in it runs.
        torch.hub.load_state_dict_from_url(url, progress=False, check_hash=True, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise BackboneError(
            f"the cached torchvision weights {cache / Path(url).name} for {arch} hold objects that weights never "
            "hold; refused unread: delete the file (it is downloaded again)"
        ) from None
    except Exception as error:  # noqa: BLE001 - offline, proxy, corrupt cache...: one line naming the weights
        reason = (str(error).splitlines() or [""])[0]
        raise BackboneError(
            f"torchvision weights {weights!r} for {arch} could not be loaded ({type(error).__name__}: {reason}); "
            f"they need a network connection once, or {Path(url).name} from {url} in {cache}"
        ) from None
    return torchvision.models.get_model(arch, weights=weights, **options)


def check_cached_weights(path: Path, arch: str) -> None:
    """A cached weights file ``name-<hex>.pth`` must have a sha256 that starts with ``<hex>``, as
    ``torch.hub`` checks a download (``check_hash``) but never the cached file; a one-line
    BackboneError names the file otherwise. Nothing to check when there is no such file yet."""
    import hashlib

    import torch.hub

    match = torch.hub.HASH_REGEX.search(path.name)
    if match is None or not match.group(1) or not path.is_file():
        return
    prefix = match.group(1)
    with open(path, "rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()
    if not digest.startswith(prefix):
        raise BackboneError(
            f"the cached torchvision weights {path} for {arch} do not match the sha256 in their name ({prefix}; the "
            f"file's begins {digest[:len(prefix)]}); refused: delete the file (it is downloaded again)"
        )


def _detach_head(model: nn.Module, arch: str) -> int:
    """Replace the model's last linear layer by the identity; return its input size."""
    for attribute in _HEAD_ATTRIBUTES:
        head = getattr(model, attribute, None)
        if isinstance(head, nn.Linear):
            setattr(model, attribute, nn.Identity())
            return head.in_features
        if isinstance(head, nn.Sequential):
            linear_indices = [i for i, layer in enumerate(head) if isinstance(layer, nn.Linear)]
            if linear_indices and linear_indices[-1] == len(head) - 1:
                in_features = head[-1].in_features
                head[-1] = nn.Identity()
                return in_features
    raise BackboneError(f"torchvision arch {arch!r} is not supported: its classifier is not a final linear layer")


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    """Swap the first 3-channel convolution for one with ``in_channels`` inputs."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d) and child.in_channels == 3:
                replacement = nn.Conv2d(
                    in_channels, child.out_channels, child.kernel_size, child.stride,
                    child.padding, child.dilation, child.groups, child.bias is not None,
                )
                setattr(parent, name, replacement)
                return
    raise BackboneError(f"cannot adapt the model to {in_channels} input channels: no 3-channel convolution found")
