"""pedattr: pedestrian attribute recognition with weakly-supervised attribute localization."""

__version__ = "0.1.0"

from pedattr.engine.checkpoint import load_model, save_checkpoint  # noqa: E402
from pedattr.models.model import ModelConfig, ModelOutput, build_model  # noqa: E402

__all__ = [
    "ModelConfig",
    "ModelOutput",
    "__version__",
    "build_model",
    "load_model",
    "save_checkpoint",
]
