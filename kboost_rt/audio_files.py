"""Audio files in and out of the models: reading at 16 kHz with the model's
channels (resampled with soxr, mono and stereo mapped), back to the file's
own rate and length, and atomic writes (a file appears whole or not at all)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .signal_path import SAMPLE_RATE


class ProcessError(Exception):
    """Input that cannot be processed as asked: a clear message, nothing written."""


def read_audio(path: Path, channels: int) -> np.ndarray:
    """-> [channels, samples] float32 at 16 kHz, or ProcessError."""
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise ProcessError(f"{path}: cannot read audio ({e})") from None
    if rate != SAMPLE_RATE:
        raise ProcessError(f"{path}: sample rate {rate} Hz; the models run at {SAMPLE_RATE} Hz")
    if data.shape[0] == 0:
        raise ProcessError(f"{path}: no samples")
    if data.shape[1] != channels:
        raise ProcessError(f"{path}: {data.shape[1]} channel(s); the model takes {channels}")
    return np.ascontiguousarray(data.T)


@dataclass
class InputAudio:
    x: np.ndarray  # [model channels, samples] at 16 kHz
    rate: int  # the file's sample rate
    samples: int  # the file's length at its own rate
    notes: list[str]


def read_for_model(path: Path, channels: int) -> InputAudio:
    """Any file soundfile reads -> the model's channels at 16 kHz: resampled with
    soxr, mono duplicated to stereo, stereo averaged to mono; anything else is an error."""
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise ProcessError(f"{path}: cannot read audio ({e})") from None
    if data.shape[0] == 0:
        raise ProcessError(f"{path}: no samples")
    notes = []
    have = data.shape[1]
    if have != channels:
        if (have, channels) == (1, 2):
            data = np.repeat(data, 2, axis=1)
            notes.append("mono input duplicated to both model channels")
        elif (have, channels) == (2, 1):
            data = data.mean(axis=1, keepdims=True)
            notes.append("stereo input averaged to mono")
        else:
            raise ProcessError(
                f"{path}: {have} channels; the model takes {channels} "
                "(mono and stereo input can be mapped)"
            )
    x = data
    if rate != SAMPLE_RATE:
        import soxr

        x = soxr.resample(data, rate, SAMPLE_RATE, quality="VHQ").astype(np.float32)
        notes.append(f"resampled {rate} Hz -> {SAMPLE_RATE} Hz and back")
    return InputAudio(np.ascontiguousarray(x.T), rate, data.shape[0], notes)


def to_file_rate(y: np.ndarray, audio: InputAudio) -> np.ndarray:
    """[..., samples at 16 kHz] -> the input's rate and length."""
    if audio.rate != SAMPLE_RATE:
        import soxr

        flat = y.reshape(-1, y.shape[-1]).T
        back = soxr.resample(flat, SAMPLE_RATE, audio.rate, quality="VHQ").T
        y = back.reshape(*y.shape[:-1], back.shape[-1]).astype(np.float32)
    out = np.zeros((*y.shape[:-1], audio.samples), np.float32)
    n = min(audio.samples, y.shape[-1])
    out[..., :n] = y[..., :n]
    return out


def write_audio_atomic(path: Path, data: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """[channels, samples] -> a WAV file that appears whole or not at all."""
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        sf.write(tmp, data.T, rate, format="WAV", subtype="FLOAT")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(path: Path) -> None:
    """Fail before any work if the output cannot be written there."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}."):
            pass
    except OSError as e:
        raise ProcessError(f"{path}: cannot write there ({e.strerror or e})") from None
