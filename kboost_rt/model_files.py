"""Model folders on disk: `config.json` + `weights.safetensors`.

Pure numpy (no torch), so the device side loads models without the training
stack. Loading checks everything it can before anything uses the weights and
fails with a `ModelFileError` that names the file and the first bad tensor.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from .config import ConfigError, ModelConfig
from .costs import MAX_ENGINE_BYTES, engine_bytes, parameter_shapes

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
CHECKSUM_KEY = "kboost_rt_sha256"
MAX_CONFIG_BYTES = 1 << 20


class ModelFileError(Exception):
    """A model folder that is missing, malformed or does not match its config."""


@dataclass
class ModelFiles:
    path: Path
    config: ModelConfig
    tensors: dict[str, np.ndarray]  # float32, names and shapes as `parameter_shapes`

    @property
    def name(self) -> str:
        return self.path.name


def checksum(tensors: dict[str, np.ndarray]) -> str:
    """SHA-256 over names, shapes and bytes in sorted name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        h.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        h.update(array.tobytes())
    return h.hexdigest()


def read_config(path: str | os.PathLike) -> ModelConfig:
    folder = Path(path)
    if not folder.is_dir():
        raise ModelFileError(f"model folder not found: {folder}")
    file = folder / CONFIG_FILE
    if not file.is_file():
        raise ModelFileError(
            f"{file}: missing (a model folder holds {CONFIG_FILE} and {WEIGHTS_FILE})"
        )
    if file.stat().st_size > MAX_CONFIG_BYTES:
        raise ModelFileError(f"{file}: too large for a model config")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ModelFileError(f"{file}: not UTF-8 text ({e.reason})") from None
    except json.JSONDecodeError as e:
        raise ModelFileError(
            f"{file}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})"
        ) from None
    except RecursionError:
        raise ModelFileError(f"{file}: not a model config (nested too deeply)") from None
    try:
        return ModelConfig.from_dict(data)
    except ConfigError as e:
        raise ModelFileError(f"{file}: {e}") from None


def load_model_files(path: str | os.PathLike) -> ModelFiles:
    """Read and validate a model folder."""
    folder = Path(path)
    config = read_config(folder)
    need = engine_bytes(config)
    if need > MAX_ENGINE_BYTES:
        raise ModelFileError(
            f"{folder / CONFIG_FILE}: one stream of this model would hold about "
            f"{need / 2**20:,.0f} MB (its attention rings), over the "
            f"{MAX_ENGINE_BYTES // 2**20} MB a model may ask for"
        )
    file = folder / WEIGHTS_FILE
    if not file.is_file():
        raise ModelFileError(f"{file}: missing")
    blob = file.read_bytes()
    try:
        tensors = load_safetensors(blob)
    except (SafetensorError, ValueError, TypeError) as e:
        raise ModelFileError(f"{file}: corrupt or truncated safetensors file ({e})") from None
    validate_tensors(config, tensors, where=str(file))
    stored = safetensors_metadata(blob).get(CHECKSUM_KEY)
    if stored is not None and stored != checksum(tensors):
        raise ModelFileError(f"{file}: checksum mismatch, the tensor data is corrupt")
    return ModelFiles(folder, config, tensors)


def validate_tensors(config: ModelConfig, tensors: dict[str, np.ndarray], where: str) -> None:
    """Check names, shapes, dtypes and finiteness against the config, in spec order."""
    expected = parameter_shapes(config)
    for name, shape in expected.items():
        if name not in tensors:
            raise ModelFileError(
                f"{where}: missing tensor '{name}' (shape {shape}) for this config"
            )
        array = tensors[name]
        if array.dtype != np.float32:
            raise ModelFileError(
                f"{where}: tensor '{name}' has dtype {array.dtype}, expected float32"
            )
        if tuple(array.shape) != shape:
            raise ModelFileError(
                f"{where}: tensor '{name}' has shape {tuple(array.shape)}, config wants {shape}"
            )
        if not np.isfinite(array).all():
            raise ModelFileError(f"{where}: tensor '{name}' contains NaN or Inf")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise ModelFileError(f"{where}: unexpected tensor '{extra[0]}' (not part of this config)")


def random_weights(config: ModelConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random float32 tensors for every parameter of a config (for
    benchmarks and demos without trained weights or torch)."""
    rng = np.random.default_rng(seed)
    return {
        name: (0.2 * rng.standard_normal(shape)).astype(np.float32)
        for name, shape in parameter_shapes(config).items()
    }


def save_model_files(
    path: str | os.PathLike, config: ModelConfig, tensors: dict[str, np.ndarray]
) -> Path:
    """Write a model folder; each file is replaced atomically."""
    config.validate()
    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    validate_tensors(config, tensors, where=str(path))
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    blob = save_safetensors(tensors, metadata={CHECKSUM_KEY: checksum(tensors)})
    write_atomic(folder / WEIGHTS_FILE, blob)
    text = json.dumps(config.to_dict(), indent=2) + "\n"
    write_atomic(folder / CONFIG_FILE, text.encode())
    return folder


def safetensors_metadata(blob: bytes) -> dict[str, str]:
    # The header was already parsed by safetensors; this only reads its metadata.
    size = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + size])
    return header.get("__metadata__") or {}


def write_atomic(file: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def shipped_models_dir() -> Path:
    """Where the shipped models are: $KBOOST_RT_MODELS, the installed package's
    `models/`, or the source checkout's `models/`."""
    env = os.environ.get("KBOOST_RT_MODELS")
    if env:
        return Path(env)
    installed = Path(__file__).parent / "models"
    if installed.is_dir():
        return installed
    return Path(__file__).parent.parent / "models"


def find_model_folders(root: str | os.PathLike) -> list[Path]:
    """Sub-folders of `root` that hold a model config, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / CONFIG_FILE).is_file())
