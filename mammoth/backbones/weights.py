"""Pretrained weight files: found (a local path, or the Hugging Face hub cache as timm uses it),
verified (sha256) and read without running code (safetensors, or torch with ``weights_only=True``).

Nothing here downloads unless asked: :func:`hub_weights_file` fetches a file only when the caller
asked for pretrained weights, the file is not cached, and ``HF_HUB_OFFLINE`` is not set.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mammoth.config.user_paths import launch_path
from mammoth.errors import BackboneError

#: The hub files timm reads weights from, in its order of preference.
HUB_FILENAMES = ("model.safetensors", "pytorch_model.bin")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_GIT_SHA1 = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class WeightsFile:
    """A weights file that was found, verified and loaded: its path and its sha256; ``strict``
    False for a deliberate partial load (``backbone.weights_strict=false``), with the backbone
    keys the file did not hold (``missing``) and the file's keys the backbone has not (``unexpected``)."""

    path: Path
    sha256: str
    strict: bool = True
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()

    def record(self) -> dict[str, Any]:
        """What results.json records of the weights: the file, its sha256, and how strictly it loaded."""
        record: dict[str, Any] = {"file": str(self.path), "sha256": self.sha256, "strict": self.strict}
        if not self.strict:
            record.update(missing=list(self.missing), unexpected=list(self.unexpected))
        return record


def check_sha256_pin(pin: str | None) -> str | None:
    """``pin`` in lower case if it is None or 64 hex digits; otherwise a BackboneError."""
    if pin is None:
        return None
    text = str(pin).strip().lower()
    if not _SHA256.fullmatch(text):
        raise BackboneError(f"backbone.weights_sha256={pin!r} is not a sha256; allowed: 64 hexadecimal digits, or null")
    return text


def read_file_bytes(path: Path, what: str) -> bytes:
    """The content of ``path``, read in one open (what is hashed is what is loaded); an unreadable
    file is a one-line BackboneError naming it (not a run-directory error)."""
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        reason = (error.strerror or str(error)).lower()
        raise BackboneError(f"cannot read the weights file {path} for {what}: {reason}; allowed: a readable file") from None


def verified_bytes(path: Path, data: bytes, pin: str | None, what: str) -> WeightsFile:
    """``path`` with the sha256 of ``data`` (its content, read once), which must equal ``pin`` when
    one is given; a one-line BackboneError names the file, both hashes and ``what`` otherwise."""
    digest = hashlib.sha256(data).hexdigest()
    if pin is not None and digest != pin:
        raise BackboneError(
            f"the weights file {path} for {what} has sha256 {digest}, not the pinned {pin} "
            "(backbone.weights_sha256); refused: use the pinned file, or change the pin"
        )
    return WeightsFile(path, digest)


def local_weights_file(path: str, pin: str | None, what: str) -> tuple[WeightsFile, bytes]:
    """The verified local file ``backbone.weights=PATH`` names (``~`` expanded), with the bytes verified."""
    location = Path(launch_path(path)).expanduser()  # hydra.job.chdir=true: still where you run
    if not location.is_file():
        raise BackboneError(
            f"backbone.weights={path!r} is not a file; allowed: a .safetensors file, or a torch file of tensors"
        )
    data = read_file_bytes(location, what)
    return verified_bytes(location, data, pin, what), data


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` forbids the Hugging Face hub (read now, not at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_cache_directory() -> Path:
    """The Hugging Face hub cache: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def hub_weights_file(repo_id: str, model: str, pin: str | None, filename: str | None = None) -> tuple[WeightsFile, bytes]:
    """The verified weights of ``repo_id`` on the Hugging Face hub, from its cache, with the bytes
    verified; fetched once when not cached and not offline. Offline with nothing cached: a one-line
    BackboneError naming the model, where it looked and how to fetch the file."""
    from huggingface_hub import hf_hub_download  # optional: huggingface_hub (comes with timm)
    from huggingface_hub.errors import LocalEntryNotFoundError  # optional: huggingface_hub (comes with timm)

    cache = hub_cache_directory()
    names = (filename,) if filename else HUB_FILENAMES
    for name in names:  # the cache first, for every file timm would read
        try:
            found = hf_hub_download(repo_id, name, cache_dir=cache, local_files_only=True)
        except (LocalEntryNotFoundError, FileNotFoundError, OSError):
            continue
        return cached_blob(Path(found), repo_id, cache, pin, f"timm model {model!r}")
    if hub_offline():
        raise BackboneError(
            f"no cached weights for timm model {model!r}: looked for {' or '.join(names)} of {repo_id} in {cache} "
            f"and HF_HUB_OFFLINE is set; fetch it once online ({hub_download_command(repo_id, names[0])}), "
            "or pass backbone.weights=PATH"
        )
    return _download(repo_id, names, cache, model, pin)


def hub_download_command(repo_id: str, filename: str) -> str:
    """The command that fetches ``filename`` of ``repo_id`` into the hub cache."""
    return f"hf download {repo_id} {filename}"


def cached_blob(found: Path, repo_id: str, cache: Path, pin: str | None, what: str) -> tuple[WeightsFile, bytes]:
    """The verified content of a hub cache file: ``found`` (a snapshot link) must resolve to a file
    of the repository's ``blobs/`` folder in ``cache`` whose name is the content's own hash (64
    lower-case hex digits: its sha256; 40: its git blob sha1, the hub's name for files stored
    without LFS), read once and hashed; anything else is refused in one line."""
    blobs = Path(os.path.realpath(cache / f"models--{repo_id.replace('/', '--')}" / "blobs"))
    stored = Path(os.path.realpath(found))
    refused = f"the cached weights file {found} for {what}"
    fix = "refused: delete it (it is fetched again)"
    if stored.parent != blobs:
        raise BackboneError(f"{refused} resolves to {stored}, outside the cache's {blobs}; {fix}")
    if not (_SHA256.fullmatch(stored.name) or _GIT_SHA1.fullmatch(stored.name)):
        raise BackboneError(
            f"{refused} is stored as {stored.name!r}, not a blob name; allowed: the content's sha256 or git sha1 in "
            f"lower-case hex; {fix}"
        )
    data = read_file_bytes(stored, what)
    weights = verified_bytes(found, data, pin, what)
    kind, own = ("sha256", weights.sha256) if len(stored.name) == 64 else ("git sha1", git_blob_sha1(data))
    if stored.name != own:
        raise BackboneError(
            f"the cached weights file {stored} for {what} does not match the {kind} in its name (its content has "
            f"{own}); {fix}"
        )
    return weights, data


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob holding ``data`` (the hub's name for a file stored without LFS)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _download(repo_id: str, names: tuple[str, ...], cache: Path, model: str, pin: str | None) -> tuple[WeightsFile, bytes]:
    """Fetch the first of ``names`` the hub has into ``cache``; a one-line BackboneError otherwise."""
    from huggingface_hub import hf_hub_download  # optional: huggingface_hub (comes with timm)

    reason = ""
    for name in names:
        try:
            found = Path(hf_hub_download(repo_id, name, cache_dir=cache))
        except Exception as error:  # noqa: BLE001 - offline, proxy, missing file: one line naming the model
            reason = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
            continue
        return cached_blob(found, repo_id, cache, pin, f"timm model {model!r}")
    raise BackboneError(
        f"the weights of timm model {model!r} could not be fetched from {repo_id} into {cache} ({reason}); "
        f"fetch them with {hub_download_command(repo_id, names[0])}, or pass backbone.weights=PATH"
    )


#: A torch checkpoint begins as a zip archive (``torch.save``) or a pickle (protocol 2 or above, legacy format).
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")


def is_safetensors(data: bytes) -> bool:
    """Whether ``data`` begins as a safetensors file: an 8-byte little-endian header size, then a JSON object."""
    size = int.from_bytes(data[:8], "little") if len(data) >= 8 else 0
    return 0 < size <= len(data) - 8 and data[8:9] == b"{"


def read_state_dict(data: bytes, path: Path, what: str) -> dict[str, Any]:
    """The tensors of a verified weights file's ``data`` (its bytes, already hashed): a safetensors
    file through safetensors, a torch file through ``torch.load(weights_only=True)`` (a pickle of
    anything but tensors is refused unread), anything else refused in one line. A checkpoint that
    wraps its weights (``state_dict``, ``model``) is unwrapped."""
    neither = (f"the weights file {path} for {what} is neither a safetensors file nor a torch weights-only checkpoint; "
               "allowed: a .safetensors file, or a torch file of tensors")
    if is_safetensors(data):
        from safetensors.torch import load  # optional: safetensors (comes with timm)

        try:
            return load(data)
        except Exception as error:  # noqa: BLE001 - a corrupt or foreign file: one line
            first = (str(error).splitlines() or [""])[0]
            raise BackboneError(f"the weights file {path} for {what} is not a valid safetensors file ({first[:160]})") from None
    if not data.startswith(_TORCH_MAGIC):
        raise BackboneError(neither)
    try:
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first = (str(error).splitlines() or [""])[0]
        raise BackboneError(
            f"the weights file {path} for {what} holds objects that weights never hold, or is not a torch file "
            f"({first[:160]}); refused unread: use a .safetensors file or a torch file of tensors"
        ) from None
    except Exception:  # noqa: BLE001 - a truncated or foreign file (KeyError, EOFError, RuntimeError...): one line
        raise BackboneError(neither) from None
    for key in ("state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(isinstance(value, torch.Tensor) for value in loaded.values()):
        raise BackboneError(f"the weights file {path} for {what} is not a dict of tensors; allowed: a state dict")
    return loaded
