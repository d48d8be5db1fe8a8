"""Continual-learning methods (``model=``): a ContinualModel wraps the backbone as ``self.net``."""

from mammoth.models.base import ContinualModel, ReplayModel
from mammoth.models.registry import MODELS, build_model, list_models, register_model

# Importing the method modules registers them.
from mammoth.models import agem, bic, der, derpp, er, er_ace, ewc_on, gdumb, gem, icarl, joint, lwf, mer, sgd, si, xder  # noqa: F401

__all__ = ["MODELS", "ContinualModel", "ReplayModel", "build_model", "list_models", "register_model"]
