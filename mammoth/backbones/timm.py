"""Any timm model as a MammothBackbone (``backbone=timm backbone.name=...``), and named presets
for the pretrained weights continual-learning papers start from (``backbone=vit-b16-in21k``).

timm is imported when a model is built, never when mammoth is imported. The model is built
without its classifier (``num_classes=0``: it returns the pre-logits features) and a new linear
head with the dataset's classes is put on top. Weights are read only from a safetensors file or
a torch file of tensors (``weights_only=True``), found in timm's Hugging Face hub cache
(``pretrained=true``) or at ``weights=PATH``, read once, checked against ``weights_sha256`` when
set and loaded from the bytes that were checked; every weight of the model must come from the
file (``weights_strict``). ``model_args`` are architecture arguments only: a key that loads
weights or that the model class does not take is refused.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import logging
import math
import sys
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Optional

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor, nn

from mammoth.backbones.base import MammothBackbone
from mammoth.backbones.registry import register_backbone
from mammoth.backbones.tokens import Prefix, check_block_index, check_prefix, timm_attention
from mammoth.backbones.weights import (
    WeightsFile,
    check_sha256_pin,
    hub_weights_file,
    local_weights_file,
    read_state_dict,
)
from mammoth.errors import BackboneError, MammothError, closest_match, unknown_name_message

log = logging.getLogger(__name__)

#: ``freeze`` values besides a list of parameter-name patterns.
FREEZE_CHOICES = ("none", "all-but-head")


def import_timm() -> Any:
    """The timm package, or a one-line BackboneError saying how to install it."""
    try:
        import timm  # optional: timm
    except ImportError:
        raise BackboneError(
            "backbone=timm needs the timm package, which is not installed; install it with: pip install timm"
        ) from None
    return timm


@register_backbone("timm")
class TimmBackbone(MammothBackbone):
    """A timm model: ``name`` is a timm name with its pretrained tag (``vit_base_patch16_224.augreg_in21k``)
    or one of :data:`PRESETS` (``vit-b16-in21k``), the weights papers start from.

    ``pretrained``: load the weights timm publishes for ``name`` (from the Hugging Face hub cache;
    fetched once if missing, unless ``HF_HUB_OFFLINE`` is set). ``weights``: load a local file
    instead. ``weights_sha256``: refuse any other file. ``weights_strict``: every weight of the
    model (all but the new head) must come from the file, and the file may hold no other, or the
    build is refused; ``false`` allows a deliberate partial load (recorded, with the keys left
    out, in ``self.weights``). ``freeze``: ``none``, ``all-but-head``
    (only the new classifier trains), or a list of timm parameter-name patterns (``blocks.0.*``);
    frozen parameters have ``requires_grad=False`` and the modules holding only frozen parameters
    stay in eval mode. ``model_args``: architecture arguments of the model class for
    ``timm.create_model`` (e.g. ``{depth: 2}``), checked against its ``__init__``; never a
    loading argument (weights come only through ``pretrained``/``weights``); ``in_chans`` and
    ``img_size`` (for models that take it: ViTs) are set from the data.
    Stages (``returnt='full'``): the intermediate outputs of timm's ``forward_intermediates``
    (every block of a ViT, every stage of a ResNet), then the features.
    """

    def __init__(
        self,
        num_classes: int,
        input_shape: tuple[int, int, int],
        name: str = "vit_tiny_patch16_224",
        pretrained: bool = False,
        weights: Optional[str] = None,
        weights_sha256: Optional[str] = None,
        weights_strict: bool = True,
        freeze: Any = "none",
        model_args: Any = None,
    ) -> None:
        super().__init__()
        name, published_sha256 = resolve_timm_name(name)
        pin = check_sha256_pin(weights_sha256) or (published_sha256 if pretrained else None)
        if weights is not None and pretrained:
            raise BackboneError(
                f"backbone.weights={weights!r} and backbone.pretrained=true both choose weights; allowed: one of them"
            )
        self.trunk = create_timm_model(name, input_shape, model_args)
        self.weights: WeightsFile | None = None
        if weights is not None or pretrained:
            self.weights = load_timm_weights(self.trunk, name, weights, pin, strict=bool(weights_strict))
        elif weights_sha256 is not None:
            raise BackboneError(
                "backbone.weights_sha256 is set but no weights are loaded; allowed: with backbone.pretrained=true "
                "or backbone.weights=PATH"
            )
        self.name, self.num_classes = name, num_classes
        self.num_features = int(getattr(self.trunk, "head_hidden_size", None) or self.trunk.num_features)
        self.classifier = nn.Linear(self.num_features, num_classes)
        self.frozen_parameters = freeze_parameters(self.trunk, freeze)
        self.train()

    @property
    def weights_sha256(self) -> str | None:
        """The sha256 of the loaded weights file (None when randomly initialised)."""
        return None if self.weights is None else self.weights.sha256

    def extract_features(self, x: Tensor) -> Tensor:
        """The pre-logits features (a ViT's class token after its final norm, a ResNet's pooled map)."""
        return self.trunk(x)

    def stage_outputs(self, x: Tensor) -> list[Tensor]:
        """timm's intermediate outputs, then the features."""
        if not hasattr(self.trunk, "forward_intermediates"):
            return [self.trunk(x)]
        final, intermediates = self.trunk.forward_intermediates(x)
        return [*intermediates, self.trunk.forward_head(final, pre_logits=True)]

    # ---- the token interface (mammoth.backbones.tokens), for timm Vision Transformers ----

    @property
    def supports_tokens(self) -> bool:
        """Whether the model is a timm ``VisionTransformer`` (or a subclass: DeiT, DeiT-3, FlexiViT...),
        whose parts the token interface runs; other ViT-like models (EVA's rotary embeddings,
        relative-position or BEiT blocks) need arguments of their own inside their blocks."""
        from timm.models.vision_transformer import VisionTransformer  # optional: timm

        return isinstance(self.trunk, VisionTransformer)

    @property
    def num_blocks(self) -> int:
        """The number of transformer blocks."""
        return len(self._token_trunk().blocks)

    def embed_tokens(self, x: Tensor) -> Tensor:
        """Prefix (class) tokens and patch tokens with position embeddings, as timm's forward_features makes them."""
        trunk = self._token_trunk()
        return trunk.norm_pre(trunk.patch_drop(trunk._pos_embed(trunk.patch_embed(x))))

    @property
    def num_prefix_tokens(self) -> int:
        """The tokens before the patch tokens (the class token and any register tokens)."""
        return int(getattr(self._token_trunk(), "num_prefix_tokens", 1))

    def class_position(self) -> Tensor:
        """The class token's position embedding, ``(width,)``: zeros for a model without a class
        token, without position embeddings, or whose class token gets none (``no_embed_class``)."""
        trunk = self._token_trunk()
        position, class_token = getattr(trunk, "pos_embed", None), getattr(trunk, "cls_token", None)
        if position is None or class_token is None or getattr(trunk, "no_embed_class", False):
            return self.classifier.weight.new_zeros(self.num_features)
        return position[0, 0]

    def run_block(self, index: int, tokens: Tensor, prefix: Prefix | None = None) -> Tensor:
        """Block ``index``, with ``prefix`` keys and values prepended in its attention (timm ``Block``s)."""
        block = self._token_trunk().blocks[check_block_index(index, self.num_blocks)]
        if prefix is None:
            return block(tokens)
        check_prefix(prefix, tokens)
        if type(block).__name__ != "Block":
            raise BackboneError(f"timm model {self.name!r} has {type(block).__name__} blocks; a prefix needs timm's Block")
        attended = tokens + block.drop_path1(block.ls1(timm_attention(block.attn, block.norm1(tokens), prefix)))
        return attended + block.drop_path2(block.ls2(block.mlp(block.norm2(attended))))

    def final_norm(self, tokens: Tensor) -> Tensor:
        """The norm after the last block."""
        return self._token_trunk().norm(tokens)

    def pool_tokens(self, normed: Tensor) -> Tensor:
        """The model's own pooling of the normed tokens (its class token), then its ``fc_norm``: the features."""
        return self._token_trunk().forward_head(normed, pre_logits=True)

    def _token_trunk(self) -> nn.Module:
        if not self.supports_tokens:
            raise BackboneError(f"timm model {self.name!r} is not a Vision Transformer; the token interface needs one")
        return self.trunk

    def train(self, mode: bool = True) -> "TimmBackbone":
        """Set the training mode; modules whose parameters are all frozen stay in eval mode."""
        super().train(mode)
        if mode:
            for module in frozen_modules(self.trunk):
                module.eval()
        return self


#: ``timm.create_model`` arguments mammoth sets itself: from the data, or never (the device and dtype).
SET_BY_MAMMOTH = ("num_classes", "in_chans", "img_size", "device", "dtype")
#: ``model_args`` keys that choose weights or files (``fnmatch`` patterns), refused: weights reach a
#: backbone only through ``pretrained``/``weights``, which mammoth verifies. Another ``pretrained*``
#: key passes only as a named argument of the model's class (SwinV2's ``pretrained_window_sizes``).
LOADING_PATTERNS = ("pretrained", "pretrained_cfg*", "pretrained_strict", "pretrained_filter_fn",
                    "pretrained_model_args", "checkpoint*", "*cache*", "*url*", "*file*", "hf_hub_*", "custom_load")


def create_timm_model(name: str, input_shape: tuple[int, int, int], model_args: Any = None) -> nn.Module:
    """``timm.create_model(name, num_classes=0, in_chans=..., img_size=..., **model_args)`` with
    randomly initialised weights, ``model_args`` checked first (:func:`check_model_args`); an
    unknown name lists the closest timm models, an unknown pretrained tag the model's tags, and
    anything else the build raises is one line naming the model and ``model_args``."""
    timm = import_timm()
    if not timm.is_model(name):
        raise BackboneError(unknown_timm_model_message(timm, name))
    check_pretrained_tag(timm, name)
    args = check_model_args(timm, name, input_shape, model_args)
    arguments = {"pretrained": False, "num_classes": 0, "in_chans": input_shape[0], **args}
    try:
        try:
            return timm.create_model(name, img_size=tuple(input_shape[1:]), **arguments)
        except TypeError as error:
            if "img_size" not in str(error):
                raise
        return timm.create_model(name, **arguments)  # a model without img_size (a ResNet)
    except MammothError:
        raise
    except Exception as error:  # noqa: BLE001 - a value timm or torch refuses: one line, never a traceback
        first = (str(error).splitlines() or [""])[0]
        raise BackboneError(
            f"timm model {name!r} cannot be built with backbone.model_args={args} ({type(error).__name__}: {first[:200]}); "
            "allowed: values its class accepts"
        ) from None


def check_pretrained_tag(timm: Any, name: str) -> None:
    """A ``name.tag`` whose tag timm does not know: a one-line BackboneError listing the model's tags."""
    architecture, tag = timm.models.split_model_name_tag(name)
    known = sorted(timm.models.get_arch_pretrained_cfgs(architecture))
    if tag and f"{architecture}.{tag}" not in known:
        tags = [full.split(".", 1)[1] for full in known]
        allowed = ", ".join(tags) if tags else "none (use the name without a tag)"
        raise BackboneError(f"unknown pretrained tag {tag!r} of timm model {architecture!r}; allowed: {allowed}")


def check_model_args(timm: Any, name: str, input_shape: tuple[int, int, int], model_args: Any) -> dict[str, Any]:
    """``model_args`` as plain values, if it holds only architecture arguments of the model's class:
    a key that loads weights (:data:`LOADING_PATTERNS`) or that mammoth sets
    (:data:`SET_BY_MAMMOTH`), a key the class's ``__init__`` does not take, and a ``*_rate`` outside
    [0, 1] are one-line BackboneErrors naming the key and what is allowed."""
    if model_args is None:
        return {}
    if not isinstance(model_args, Mapping):
        raise BackboneError(
            f"backbone.model_args={model_args!r} is not a mapping; allowed: null or {{argument: value}} for timm.create_model"
        )
    args = _plain(model_args)
    if not args:
        return {}
    parameters = model_class_parameters(timm, name)
    allowed = sorted(parameter for parameter in parameters if parameter not in SET_BY_MAMMOTH and parameter != "**")
    for key, value in args.items():
        where = f"backbone.model_args.{key}"
        if not isinstance(key, str):
            raise BackboneError(f"backbone.model_args key {key!r} is not a name; allowed: {', '.join(allowed)}")
        if key in SET_BY_MAMMOTH:
            shown = {"in_chans": f" ({input_shape[0]} from the data)", "img_size": f" ({list(input_shape[1:])} from the data)"}
            raise BackboneError(f"{where} is set by mammoth{shown.get(key, '')}; allowed: {', '.join(allowed)}")
        loading = any(fnmatch.fnmatchcase(key, pattern) for pattern in LOADING_PATTERNS)
        if loading or (key.startswith("pretrained") and key not in parameters):
            raise BackboneError(
                f"{where} loads weights or files, which model_args may not; allowed: architecture arguments "
                f"({', '.join(allowed)}); weights come from backbone.pretrained=true or backbone.weights=PATH"
            )
        if key not in parameters and "**" not in parameters:
            raise BackboneError(unknown_argument_message(name, key, allowed))
        if key.endswith("_rate") and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                          and math.isfinite(value) and 0 <= value <= 1):
            raise BackboneError(f"{where}={value!r} is not a rate; allowed: a number from 0 to 1")
    return args


def unknown_argument_message(name: str, key: str, allowed: list[str]) -> str:
    """``unknown argument 'x' for timm model 'm' (backbone.model_args.x); allowed: ...`` with the closest."""
    message = f"unknown argument {key!r} for timm model {name!r} (backbone.model_args.{key}); allowed: {', '.join(allowed)}"
    suggestion = closest_match(key, allowed)
    return message + (f" (did you mean {suggestion!r}?)" if suggestion else "")


def model_class_parameters(timm: Any, name: str) -> set[str]:
    """The named parameters of the ``__init__`` of the class timm builds for ``name`` (``**`` when
    it also takes any keyword), found by building the model on the meta device (no memory, no weights)."""
    try:
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False)
    except Exception:  # noqa: BLE001 - a model whose construction needs real tensors
        model = timm.create_model(name, pretrained=False)
    signature = inspect.signature(type(model).__init__)
    named = {parameter.name for parameter in signature.parameters.values()
             if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)} - {"self"}
    if any(parameter.kind is parameter.VAR_KEYWORD for parameter in signature.parameters.values()):
        named.add("**")
    return named


def _plain(value: Any) -> Any:
    """``value`` with OmegaConf containers turned into dicts and lists."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return dict(value) if isinstance(value, Mapping) else value


def unknown_timm_model_message(timm: Any, name: str) -> str:
    """``unknown timm model 'x'; allowed: ...`` listing the models of the same architecture, or
    the five closest names of ``timm.list_models()`` (it has over a thousand)."""
    pattern = f"{name.split('.')[0]}*"
    same_architecture = set(timm.list_models(pattern)) | set(timm.list_models(pattern, pretrained=True))
    if same_architecture:
        return unknown_name_message("timm model", name, sorted(same_architecture))
    closest = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.5)
    hint = f" (closest: {', '.join(closest)})" if closest else ""
    return f"unknown timm model {name!r}; allowed: a name of timm.list_models() with its pretrained tag{hint}"


def load_timm_weights(model: nn.Module, name: str, path: Optional[str], pin: Optional[str],
                      strict: bool = True) -> WeightsFile:
    """Find, verify and load the weights (``path``, else the hub's for ``name``) into ``model``
    through timm's own loader, which adapts them (position embeddings to the input size, input
    channels, the classifier dropped), from the very bytes that were verified. ``strict``: every
    key of ``model`` must be loaded and every key of the file used, or a one-line BackboneError
    names the missing and unexpected ones; otherwise they are recorded. Returns the file loaded."""
    from timm.models import load_pretrained  # optional: timm

    config = dict(getattr(model, "pretrained_cfg", {}) or {})
    what = f"timm model {name!r}"
    if path is not None:
        weights, data = local_weights_file(path, pin, what)
    elif config.get("hf_hub_id"):
        weights, data = hub_weights_file(config["hf_hub_id"], name, pin, config.get("hf_hub_filename"))
    else:
        raise BackboneError(
            f"timm publishes no Hugging Face hub weights for {name!r}; allowed: backbone.weights=PATH to a local file"
        )
    state_dict = read_state_dict(data, weights.path, what)
    del data
    keys: dict[str, tuple[str, ...]] = {}

    def check_keys(_module: nn.Module, incompatible: Any) -> None:  # after timm's adaptation, as loaded
        keys["missing"] = tuple(key for key in incompatible.missing_keys if not key.endswith("num_batches_tracked"))
        keys["unexpected"] = tuple(incompatible.unexpected_keys)
        if strict and (keys["missing"] or keys["unexpected"]):
            raise BackboneError(
                f"the weights file {weights.path} does not fit {what}: {_keys(keys['missing'])} of the model missing "
                f"from it, {_keys(keys['unexpected'])} in it unknown to the model; allowed: a file holding every "
                "weight of the model but its head, or backbone.weights_strict=false for a deliberate partial load"
            )
        incompatible.missing_keys.clear()  # reported here, once (timm would log every key)
        incompatible.unexpected_keys.clear()

    hook = model.register_load_state_dict_post_hook(check_keys)
    model.pretrained_cfg = {**config, "state_dict": state_dict}
    try:
        load_pretrained(model, num_classes=0, in_chans=_input_channels(model), filter_fn=_filter_function(model))
    except RuntimeError as error:
        lines = str(error).splitlines() or [""]
        first = next((line.strip() for line in lines if "size mismatch" in line), lines[0])
        raise BackboneError(f"the weights file {weights.path} does not fit {what}: {first}") from None
    finally:
        model.pretrained_cfg = config  # never keep a second copy of the weights
        hook.remove()
    if not strict:
        log.warning("backbone.weights_strict=false: %s loaded into %s without %s of the model and with %s unused",
                    weights.path, what, _keys(keys["missing"]), _keys(keys["unexpected"]))
    return replace(weights, strict=strict, missing=keys["missing"], unexpected=keys["unexpected"])


def _keys(keys: tuple[str, ...], shown: int = 3) -> str:
    """``N keys (a, b, c, ...)``: a count and the first few."""
    listed = ", ".join(keys[:shown]) + (", ..." if len(keys) > shown else "")
    return f"{len(keys)} key{'s' if len(keys) != 1 else ''}" + (f" ({listed})" if keys else "")


def _input_channels(model: nn.Module) -> int:
    """The input channels of a timm model (its first convolution's, else 3)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    return 3


def _filter_function(model: nn.Module) -> Any:
    """The ``checkpoint_filter_fn`` of the model's timm module (it maps published checkpoints to
    the model: position embeddings resized, old layouts renamed), or None."""
    return getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)


def freeze_parameters(model: nn.Module, freeze: Any) -> list[str]:
    """Freeze the parameters of ``model`` that ``freeze`` selects; return their names.

    ``none`` freezes nothing, ``all-but-head`` everything (the head is the backbone's own
    classifier, outside ``model``), a list freezes the names matching any of its patterns
    (``fnmatch``); a pattern that matches nothing is an error."""
    names = [name for name, _ in model.named_parameters()]
    if isinstance(freeze, str):
        if freeze not in FREEZE_CHOICES:
            raise BackboneError(
                f"backbone.freeze={freeze!r} is not supported; allowed: {', '.join(FREEZE_CHOICES)}, or a list of "
                "parameter-name patterns (e.g. ['patch_embed.*', 'blocks.0.*'])"
            )
        selected = names if freeze == "all-but-head" else []
    elif isinstance(freeze, (list, tuple)) and all(isinstance(pattern, str) for pattern in freeze):
        selected = []
        for pattern in freeze:
            matches = fnmatch.filter(names, pattern)
            if not matches:
                raise BackboneError(
                    f"backbone.freeze pattern {pattern!r} matches no parameter; allowed: patterns over names such as "
                    f"{', '.join(names[:3])}"
                )
            selected.extend(match for match in matches if match not in selected)
    else:
        raise BackboneError(
            f"backbone.freeze={freeze!r} is not supported; allowed: {', '.join(FREEZE_CHOICES)}, or a list of patterns"
        )
    parameters = dict(model.named_parameters())
    for name in selected:
        parameters[name].requires_grad_(False)
    return selected


def frozen_modules(model: nn.Module) -> list[nn.Module]:
    """The modules of ``model`` that hold parameters, all of them frozen (their dropout and
    normalisation statistics must not change)."""
    result = []
    for module in model.modules():
        own = list(module.parameters())
        if own and not any(parameter.requires_grad for parameter in own):
            result.append(module)
    return result


# ---- the weights continual-learning papers start from ----

#: ``backbone.name`` presets: ``name -> (timm name, sha256 of the published weights file or None)``.
#: The original Mammoth's prompt methods start from the first two (its ``backbone/vit.py``,
#: ``pretrain_type`` in21k and in21k-ft-in1k); ``resnet50-in1k`` is timm's default ResNet-50.
PRESETS: dict[str, tuple[str, Optional[str]]] = {
    "vit-b16-in21k": ("vit_base_patch16_224.augreg_in21k", None),
    "vit-b16-in21k-ft-in1k": ("vit_base_patch16_224.augreg2_in21k_ft_in1k", None),
    "resnet50-in1k": ("resnet50.a1_in1k", None),
}


def resolve_timm_name(name: str) -> tuple[str, Optional[str]]:
    """The timm model a ``backbone.name`` means (itself, or a preset's), with the sha256 its
    published weights must have (None when not pinned)."""
    return PRESETS.get(name, (name, None))
