"""Pretrained weight files: found (a local path, or the Hugging Face hub cache as timm uses it),
verified (sha256) and read without running code (safetensors, or torch with ``weights_only=True``).

Nothing here downloads unless asked: :func:`hub_weights_file` fetches a file only when the caller
asked for pretrained weights, the file is not cached, and ``HF_HUB_OFFLINE`` is not set.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mammoth.errors import BackboneError

#: The hub files timm reads weights from, in its order of preference.
HUB_FILENAMES = ("model.safetensors", "pytorch_model.bin")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class WeightsFile:
    """A weights file that was found and verified: its path and its sha256."""

    path: Path
    sha256: str


def file_sha256(path: Path) -> str:
    """The sha256 of the file at ``path`` (hex)."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def check_sha256_pin(pin: str | None) -> str | None:
    """``pin`` in lower case if it is None or 64 hex digits; otherwise a BackboneError."""
    if pin is None:
        return None
    text = str(pin).strip().lower()
    if not _SHA256.fullmatch(text):
        raise BackboneError(f"backbone.weights_sha256={pin!r} is not a sha256; allowed: 64 hexadecimal digits, or null")
    return text


def verified_weights(path: Path, pin: str | None, what: str) -> WeightsFile:
    """``path`` with its sha256, which must equal ``pin`` when one is given (a one-line
    BackboneError names the file, both hashes and ``what`` the file is for otherwise). A file of
    the hub cache, stored as ``blobs/<sha256>``, must also match its own name."""
    digest = file_sha256(path)
    stored = Path(os.path.realpath(path))
    if stored.parent.name == "blobs" and _SHA256.fullmatch(stored.name) and stored.name != digest:
        raise BackboneError(
            f"the cached weights file {stored} for {what} does not match the sha256 in its name (its content has "
            f"{digest}); refused: delete it (it is fetched again)"
        )
    if pin is not None and digest != pin:
        raise BackboneError(
            f"the weights file {path} for {what} has sha256 {digest}, not the pinned {pin} "
            "(backbone.weights_sha256); refused: use the pinned file, or change the pin"
        )
    return WeightsFile(path, digest)


def local_weights_file(path: str, pin: str | None, what: str) -> WeightsFile:
    """The verified local file ``backbone.weights=PATH`` names (``~`` expanded)."""
    location = Path(path).expanduser()
    if not location.is_file():
        raise BackboneError(
            f"backbone.weights={path!r} is not a file; allowed: a .safetensors file, or a torch file of tensors"
        )
    return verified_weights(location, pin, what)


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` forbids the Hugging Face hub (read now, not at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_cache_directory() -> Path:
    """The Hugging Face hub cache: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def hub_weights_file(repo_id: str, model: str, pin: str | None, filename: str | None = None) -> WeightsFile:
    """The verified weights of ``repo_id`` on the Hugging Face hub, from its cache; fetched once
    when not cached and not offline. Offline with nothing cached: a one-line BackboneError naming
    the model, where it looked and how to fetch the file."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache = hub_cache_directory()
    names = (filename,) if filename else HUB_FILENAMES
    for name in names:  # the cache first, for every file timm would read
        try:
            found = hf_hub_download(repo_id, name, cache_dir=cache, local_files_only=True)
        except (LocalEntryNotFoundError, FileNotFoundError, OSError):
            continue
        return verified_weights(Path(found), pin, f"timm model {model!r}")
    if hub_offline():
        raise BackboneError(
            f"no cached weights for timm model {model!r}: looked for {' or '.join(names)} of {repo_id} in {cache} "
            f"and HF_HUB_OFFLINE is set; fetch it once online (hf download {repo_id} {names[0]}), "
            "or pass backbone.weights=PATH"
        )
    return _download(repo_id, names, cache, model, pin)


def _download(repo_id: str, names: tuple[str, ...], cache: Path, model: str, pin: str | None) -> WeightsFile:
    """Fetch the first of ``names`` the hub has into ``cache``; a one-line BackboneError otherwise."""
    from huggingface_hub import hf_hub_download

    reason = ""
    for name in names:
        try:
            return verified_weights(Path(hf_hub_download(repo_id, name, cache_dir=cache)), pin, f"timm model {model!r}")
        except BackboneError:
            raise
        except Exception as error:  # noqa: BLE001 - offline, proxy, missing file: one line naming the model
            reason = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
    raise BackboneError(
        f"the weights of timm model {model!r} could not be fetched from {repo_id} into {cache} ({reason}); "
        f"fetch them with hf download {repo_id} {names[0]}, or pass backbone.weights=PATH"
    )


def read_state_dict(weights: WeightsFile, what: str) -> dict[str, Any]:
    """The tensors of a verified weights file: a ``.safetensors`` file through safetensors, any
    other through ``torch.load(weights_only=True)`` (a pickle of anything but tensors is refused
    unread). A checkpoint that wraps its weights (``state_dict``, ``model``) is unwrapped."""
    import torch

    if weights.path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(weights.path), device="cpu")
        except Exception as error:  # noqa: BLE001 - a corrupt or foreign file: one line
            raise BackboneError(f"the weights file {weights.path} for {what} is not a valid safetensors file ({error})") from None
    try:
        loaded = torch.load(weights.path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        first = (str(error).splitlines() or [""])[0]
        raise BackboneError(
            f"the weights file {weights.path} for {what} holds objects that weights never hold, or is not a torch file "
            f"({first[:160]}); refused unread: use a .safetensors file or a torch file of tensors"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(isinstance(value, torch.Tensor) for value in loaded.values()):
        raise BackboneError(f"the weights file {weights.path} for {what} is not a dict of tensors; allowed: a state dict")
    return loaded
