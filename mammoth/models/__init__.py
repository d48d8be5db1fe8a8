"""Continual-learning methods (``model=``): a ContinualModel wraps the backbone as ``self.net``."""

from mammoth.models.registry import MODELS, build_model, list_models, register_model

__all__ = ["MODELS", "build_model", "list_models", "register_model"]
