"""Continual-learning methods (``model=``): a ContinualModel wraps the backbone as ``self.net``."""

from mammoth.models.registry import MODELS, build_model, list_models, register_model

# Importing the method modules registers them.
from mammoth.models import der, derpp, er, joint, sgd  # noqa: F401

__all__ = ["MODELS", "build_model", "list_models", "register_model"]
