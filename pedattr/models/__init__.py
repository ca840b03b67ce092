"""Backbones, the feature pyramid, the ALM and the attribute models."""

from pedattr.models.alm import AttributeLocalization
from pedattr.models.model import ALMNet, BaselineNet, ModelConfig, ModelOutput, build_model

__all__ = [
    "ALMNet",
    "AttributeLocalization",
    "BaselineNet",
    "ModelConfig",
    "ModelOutput",
    "build_model",
]
