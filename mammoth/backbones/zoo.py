"""Any torchvision classification architecture as a MammothBackbone (``backbone=torchvision``)."""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path
from typing import Any, Optional

import torch
import torch.hub
from torch import Tensor, nn

from mammoth.backbones.base import MammothBackbone
from mammoth.backbones.registry import register_backbone
from mammoth.backbones.weights import read_file_bytes
from mammoth.errors import BackboneError, unknown_name_message

#: Attributes where torchvision's classification models keep their classifier head.
_HEAD_ATTRIBUTES = ("fc", "classifier", "heads", "head")


def torchvision_architectures() -> list[str]:
    """Names of torchvision's classification architectures (``torchvision.models.list_models``)."""
    import torchvision.models  # lazy: torchvision (heavy), kept off import mammoth.backbones

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
    """``torchvision.models.get_model``; pretrained ``weights`` come from torch's hub cache
    (downloaded there once if missing), read once, checked against the sha256 prefix in their
    name and loaded from those very bytes with ``torch.load(weights_only=True)``, never by
    torchvision reopening the file. Unknown ``weights``, weights that can be neither downloaded
    nor found, and a file that does not fit are one-line BackboneErrors."""
    import torchvision.models  # lazy: torchvision (heavy), kept off import mammoth.backbones

    if weights is None:
        return torchvision.models.get_model(arch, **options)
    available = torchvision.models.get_model_weights(arch)
    names = ["DEFAULT", *(member.name for member in available)]
    if weights not in names:
        raise BackboneError(unknown_name_message(f"torchvision weights for {arch}", weights, names))
    member = available.DEFAULT if weights == "DEFAULT" else available[weights]
    state_dict = _verified_state_dict(arch, weights, member.url)
    return _pretrained_model(arch, member, options, state_dict)


def _verified_state_dict(arch: str, weights: str, url: str) -> dict:
    """The state dict of the cached file for ``url`` (downloaded first when missing), from bytes
    read once, hashed (:func:`check_cached_weights`) and loaded with ``weights_only=True``."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if not path.is_file():
        _download(url, path, arch, weights)
    data = read_file_bytes(path, f"torchvision arch {arch!r}")
    check_cached_weights(path, arch, data)
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a pickle of objects, a truncated or foreign file: refused, nothing run
        raise BackboneError(
            f"the cached torchvision weights {path} for {arch} hold objects that weights never hold; "
            "refused unread: delete the file (it is downloaded again)"
        ) from None


def _download(url: str, path: Path, arch: str, weights: str) -> None:
    """Download ``url`` to ``path`` as ``torch.hub`` does (checking the sha256 prefix its name carries)."""
    match = torch.hub.HASH_REGEX.search(path.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), match.group(1) if match else None, progress=False)
    except Exception as error:  # noqa: BLE001 - offline, proxy, full disk...: one line naming the weights
        reason = (str(error).splitlines() or [""])[0]
        raise BackboneError(
            f"torchvision weights {weights!r} for {arch} could not be loaded ({type(error).__name__}: {reason}); "
            f"they need a network connection once, or {path.name} from {url} in {path.parent}"
        ) from None


def _pretrained_model(arch: str, member: Any, options: dict, state_dict: dict) -> nn.Module:
    """The model torchvision's builder makes for weights ``member`` (its class count and input
    size; GoogLeNet's and Inception's auxiliary heads and input transform), with ``state_dict``
    loaded strictly (DenseNet's old key names renamed, as torchvision does)."""
    import torchvision.models  # lazy: torchvision (heavy), kept off import mammoth.backbones

    arguments = {**options, "num_classes": len(member.meta["categories"])}
    auxiliary = arch in ("googlenet", "inception_v3")
    if auxiliary:
        arguments.update(transform_input=True, aux_logits=True, init_weights=False)
    if arch.startswith("vit_"):
        arguments["image_size"] = member.meta["min_size"][0]
    if arch.startswith("maxvit"):
        arguments["input_size"] = member.meta["min_size"]
    if arch.startswith("densenet"):
        pattern = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")
        state_dict = {(match[1] + match[2] if (match := pattern.match(key)) else key): value
                      for key, value in state_dict.items()}
    model = torchvision.models.get_model(arch, **arguments)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        lines = str(error).splitlines() or [""]
        first = next((line.strip() for line in lines[1:] if line.strip()), lines[0])
        raise BackboneError(f"the torchvision weights {member.url} do not fit arch {arch!r}: {first[:300]}") from None
    if auxiliary and not options.get("aux_logits", True):
        model.aux_logits = False
        for name in ("aux1", "aux2", "AuxLogits"):
            if hasattr(model, name):
                setattr(model, name, None)
    return model


def check_cached_weights(path: Path, arch: str, data: bytes) -> None:
    """A cached weights file ``name-<hex>.pth`` must have a sha256 that starts with ``<hex>``, as
    ``torch.hub`` checks a download (``check_hash``) but never the cached file: checked on
    ``data``, the bytes read from ``path`` that are then loaded; a one-line BackboneError names the
    file otherwise."""
    match = torch.hub.HASH_REGEX.search(path.name)
    if match is None or not match.group(1):
        return
    prefix = match.group(1)
    digest = hashlib.sha256(data).hexdigest()
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
