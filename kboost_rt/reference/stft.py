"""STFT and inverse STFT of the signal path, offline and one frame at a time.

Offline, frame k covers samples 128k .. 128k+191 of the input (zero-padded
past the end), so output sample n comes from frames that end no later than
n - n % 128 + 192: the 4 ms look-ahead. A stream keeps the last 64 samples as
history, so its first window starts 64 samples before its first chunk and its
output lags its input by LOOKAHEAD samples.

The inverse normalises by the steady-state window envelope (two overlapping
frames where they overlap) for every frame, the first one included, so that
streaming and offline agree exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..signal_path import CHUNK, LOOKAHEAD, WINDOW, frames_for


def hamming(dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> torch.Tensor:
    return torch.hamming_window(WINDOW, periodic=True, dtype=torch.float64).to(device, dtype)


def inverse_envelope(
    dtype: torch.dtype = torch.float32, device: torch.device | None = None
) -> torch.Tensor:
    w2 = hamming(torch.float64) ** 2
    env = w2[:CHUNK].clone()
    env[:LOOKAHEAD] += w2[CHUNK:]
    return (1.0 / env).to(device, dtype)


def stft(x: torch.Tensor) -> torch.Tensor:
    """[..., samples] -> complex [..., frames, 97]."""
    frames = frames_for(x.shape[-1])
    x = F.pad(x, (0, frames * CHUNK + LOOKAHEAD - x.shape[-1]))
    windows = x.unfold(-1, WINDOW, CHUNK)  # [..., frames, 192]
    return torch.fft.rfft(windows * hamming(x.dtype, x.device), dim=-1)


def istft(spec: torch.Tensor, length: int | None = None) -> torch.Tensor:
    """complex [..., frames, 97] -> [..., length] (default 128 * frames)."""
    frames = torch.fft.irfft(spec, n=WINDOW, dim=-1) * hamming(spec.real.dtype, spec.device)
    head = frames[..., :CHUNK]
    tail = frames[..., CHUNK:]  # overlaps the first 64 samples of the next frame
    tail = F.pad(tail[..., :-1, :], (0, CHUNK - LOOKAHEAD, 0, 0))
    tail = F.pad(tail, (0, 0, 1, 0))
    out = (head + tail) * inverse_envelope(head.dtype, head.device)
    out = out.flatten(-2)
    return out if length is None else out[..., :length]


def stft_step(chunk: torch.Tensor, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """chunk [..., 128], history [..., 64] -> (complex [..., 97], new history)."""
    window = torch.cat([history, chunk], dim=-1)
    return torch.fft.rfft(window * hamming(chunk.dtype, chunk.device), dim=-1), window[..., CHUNK:]


def istft_step(bins: torch.Tensor, tail: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """bins complex [..., 97], tail [..., 64] -> (samples [..., 128], new tail)."""
    frame = torch.fft.irfft(bins, n=WINDOW, dim=-1) * hamming(tail.dtype, tail.device)
    out = frame[..., :CHUNK] + F.pad(tail, (0, CHUNK - LOOKAHEAD))
    return out * inverse_envelope(tail.dtype, tail.device), frame[..., CHUNK:]
