"""Continual-learning methods (``model=``): a ContinualModel wraps the backbone as ``self.net``."""

from mammoth.models.base import ContinualModel, ReplayModel
from mammoth.config.registry import import_modules
from mammoth.models.registry import MODELS, build_model, list_models, register_model

__all__ = ["MODELS", "ContinualModel", "ReplayModel", "build_model", "list_models", "register_model"]

# Every module of this package (one method a file) registers its method on import.
import_modules(__name__, __path__)
