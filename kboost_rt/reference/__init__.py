"""PyTorch reference models (needs the `torch` extra).

Every model runs offline (a whole signal, for training) and streaming (one
128-sample chunk per step with an explicit state object); the two agree to
float tolerance. See docs/models.md.
"""

from .io import build_model, load_model, save_model
from .models import (
    BoostedModel,
    BoostedPipeline,
    GridNet,
    HintGenerator,
)

__all__ = [
    "BoostedModel",
    "BoostedPipeline",
    "GridNet",
    "HintGenerator",
    "build_model",
    "load_model",
    "save_model",
]
