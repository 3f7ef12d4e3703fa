"""kboost-rt: real-time knowledge boosting.

A tiny on-device speech model runs one 8 ms chunk at a time; a large model in
a remote process streams delayed hints back to it. This package is the device
side and needs only numpy; the PyTorch reference models live in
`kboost_rt.reference` (install the `torch` extra).
"""

from .config import BoostConfig, ConfigError, ModelConfig, NetConfig
from .model_files import ModelFileError, ModelFiles, load_model_files, save_model_files
from .signal_path import CHUNK, LOOKAHEAD, N_BINS, SAMPLE_RATE, WINDOW

__version__ = "0.1.0"

__all__ = [
    "CHUNK",
    "LOOKAHEAD",
    "N_BINS",
    "SAMPLE_RATE",
    "WINDOW",
    "BoostConfig",
    "ConfigError",
    "ModelConfig",
    "ModelFileError",
    "ModelFiles",
    "NetConfig",
    "load_model_files",
    "save_model_files",
]
