"""A boosted model's hint codec: hints as a few principal components.

A hint is C_h x 97 values (776 for the paper's 8 channels), but the hints one
hint generator makes lie close to a much smaller subspace. The codec is that
subspace, fitted once per boosted model on hints of training-split audio
(`kboost-rt codec`): a mean and K orthonormal directions. On the
wire (`HintEncoding.PCA`) a hint is its K coordinates in int8 with one float32
scale: 4 + K bytes instead of 780 (int8) or 3104 (float32).

The codec is `hint_codec.safetensors` in the boosted model's folder; the
server and the device read the same folder, as they do for the hint generator
and the merge layers. Pure numpy: the device side needs no torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from .model_files import CHECKSUM_KEY, ModelFileError, checksum, safetensors_metadata, write_atomic
from .signal_path import N_BINS

if TYPE_CHECKING:
    from .protocol import HintEncoding

CODEC_FILE = "hint_codec.safetensors"
MAX_COMPONENTS = 255


@dataclass(frozen=True, eq=False)  # compared by identity: numpy fields have no truth value
class HintCodec:
    mean: np.ndarray  # [C_h * 97] float32
    basis: np.ndarray  # [K, C_h * 97] float32, orthonormal rows

    @property
    def components(self) -> int:
        return int(self.basis.shape[0])

    @property
    def hint_channels(self) -> int:
        return int(self.basis.shape[1]) // N_BINS

    def coordinates(self, hint: np.ndarray) -> np.ndarray:
        """hint [C_h, 97] -> its K coordinates (float32)."""
        return (self.basis @ (hint.reshape(-1).astype(np.float32) - self.mean)).astype(np.float32)

    def reconstruct(self, coordinates: np.ndarray) -> np.ndarray:
        """K coordinates -> the hint [C_h, 97] they stand for (float32)."""
        flat = self.mean + coordinates.astype(np.float32) @ self.basis
        return flat.reshape(self.hint_channels, N_BINS).astype(np.float32)

    def kept_variance(self, hints: np.ndarray) -> float:
        """Share of the variance of hints [N, C_h, 97] (about their codec mean) that
        the components keep, before quantisation."""
        x = hints.reshape(len(hints), -1).astype(np.float64) - self.mean
        total = float((x**2).sum())
        if total == 0.0:
            return 1.0
        return float(((x @ self.basis.T.astype(np.float64)) ** 2).sum()) / total

    def save(self, folder: str | os.PathLike) -> Path:
        tensors = {"mean": self.mean, "basis": self.basis}
        blob = save_safetensors(tensors, metadata={CHECKSUM_KEY: checksum(tensors)})
        file = Path(folder) / CODEC_FILE
        write_atomic(file, blob)
        return file


def fit_codec(hints: np.ndarray, components: int) -> HintCodec:
    """The K principal directions of hints [N, C_h, 97]."""
    n, channels, bins = hints.shape
    if bins != N_BINS or not 1 <= components <= min(MAX_COMPONENTS, channels * bins):
        raise ValueError(f"cannot fit {components} components to hints of shape {hints.shape}")
    if n < components:
        raise ValueError(f"{n} hints cannot fit {components} components")
    x = hints.reshape(n, -1).astype(np.float64)
    mean = x.mean(axis=0)
    # Right singular vectors of the centred hints: the directions of most variance.
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    return HintCodec(mean.astype(np.float32), vt[:components].astype(np.float32))


def load_codec(folder: str | os.PathLike, hint_channels: int) -> HintCodec | None:
    """The codec of a boosted model folder, or None if it has none; a codec that is
    corrupt or does not fit `hint_channels` is a ModelFileError."""
    file = Path(folder) / CODEC_FILE
    if not file.is_file():
        return None
    blob = file.read_bytes()
    try:
        tensors = load_safetensors(blob)
    except (SafetensorError, ValueError, TypeError) as e:
        raise ModelFileError(f"{file}: corrupt or truncated safetensors file ({e})") from None
    if set(tensors) != {"mean", "basis"}:
        raise ModelFileError(f"{file}: expected the tensors 'mean' and 'basis'")
    mean, basis = tensors["mean"], tensors["basis"]
    width = hint_channels * N_BINS
    if (
        mean.dtype != np.float32
        or basis.dtype != np.float32
        or mean.shape != (width,)
        or basis.ndim != 2
        or basis.shape[1] != width
        or not 1 <= basis.shape[0] <= MAX_COMPONENTS
    ):
        raise ModelFileError(
            f"{file}: wants float32 mean [{width}] and basis [K <= {MAX_COMPONENTS}, {width}] "
            f"for {hint_channels} hint channels, got {mean.shape} and {basis.shape}"
        )
    if not (np.isfinite(mean).all() and np.isfinite(basis).all()):
        raise ModelFileError(f"{file}: contains NaN or Inf")
    stored = safetensors_metadata(blob).get(CHECKSUM_KEY)
    if stored is not None and stored != checksum(tensors):
        raise ModelFileError(f"{file}: checksum mismatch, the tensor data is corrupt")
    gram = basis.astype(np.float64) @ basis.T.astype(np.float64)
    if np.abs(gram - np.eye(len(basis))).max() > 1e-3:
        raise ModelFileError(f"{file}: the basis rows are not orthonormal")
    return HintCodec(mean, basis)


def default_encoding(folder: str | os.PathLike) -> HintEncoding:
    """What a device asks for unless told otherwise: pca hints where the boosted
    model has a codec (about 23 kB/s at the paper's 8 hint channels, keyed), int8
    (104 kB/s) where it has none."""
    from .protocol import HintEncoding

    return HintEncoding.PCA if (Path(folder) / CODEC_FILE).is_file() else HintEncoding.INT8
