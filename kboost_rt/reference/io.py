"""Reference models <-> model folders."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..config import ModelConfig
from ..model_files import load_model_files, save_model_files
from .models import BoostedModel, GridNet


def build_model(config: ModelConfig) -> GridNet | BoostedModel:
    """A freshly initialised model of this config."""
    config.validate()
    if config.role == "boosted":
        assert config.boost is not None
        return BoostedModel(config.net, config.boost)
    return GridNet(config.net)


def load_model(path: str | os.PathLike) -> tuple[GridNet | BoostedModel, ModelConfig]:
    """Load and validate a model folder into a float32 reference model in eval mode."""
    files = load_model_files(path)
    model = build_model(files.config)
    state = {name: torch.from_numpy(array.copy()) for name, array in files.tensors.items()}
    model.load_state_dict(state, strict=True)
    return model.eval(), files.config


def save_model(model: GridNet | BoostedModel, config: ModelConfig, path: str | os.PathLike) -> Path:
    tensors = {
        name: t.detach().to("cpu", torch.float32).contiguous().numpy()
        for name, t in model.state_dict().items()
    }
    return save_model_files(path, config, tensors)
