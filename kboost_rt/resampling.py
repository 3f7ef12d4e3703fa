"""Low-latency resampling between a device's rate and the models' 16 kHz.

soxr, the library `process` uses for files, resamples in blocks: its
streaming resamplers emit output in bursts, which costs 31 ms (minimum
phase) to 39 ms (LQ, linear phase) at 48 kHz with 384-frame buffers
(measured by `tools/resampler_latency.py`), whatever its phase response or
DFT sizes. So the live path resamples sample by sample with a polyphase FIR
(csrc/resampler.h), designed here once when a stream opens: a Kaiser-windowed
sinc lowpass at L x the input rate (passband to 7 kHz, stopband from 8.5 kHz,
80 dB down), by default turned into its minimum-phase twin (same magnitude,
energy first), which puts the round trip's impulse peak under a millisecond.
The same prototype serves both directions: 48 kHz <-> 16 kHz share L x rate
= 48 kHz.

At 44.1 kHz no whole number of frames is one 128-sample chunk at 16 kHz, so
chunks would complete at a drifting point of the device's buffers and the
output would have to be held back by up to a chunk (8 ms). Instead the model
runs at 44100 x 128 / 353 = 15 990.9 Hz (0.06 % slow, a pitch change of
1 cent), where one 353-frame buffer is exactly one chunk. `exact_rate=True`
(`--exact-rate`) keeps 16 000 Hz and pays the 8 ms.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import gcd

import numpy as np

from .signal_path import CHUNK, SAMPLE_RATE

PASSBAND_HZ = 7000.0
STOPBAND_HZ = 8500.0
ATTENUATION_DB = 80.0
PHASES = ("minimum", "linear")


@dataclass(frozen=True)
class Design:
    """A polyphase FIR from `rate_in` to `rate_out`: up by `up`, down by `down`,
    taps [up, per_phase] (phase p holds prototype taps p, p + up, ...)."""

    rate_in: float
    rate_out: float
    up: int
    down: int
    taps: np.ndarray
    phase: str


def prototype(rate: float, phase: str = "minimum") -> np.ndarray:
    """The lowpass at `rate` Hz (DC gain 1): linear or minimum phase."""
    if phase not in PHASES:
        raise ValueError(f"resampler phase must be one of {', '.join(PHASES)}, got {phase!r}")
    width = (STOPBAND_HZ - PASSBAND_HZ) / rate  # transition width, cycles per sample
    beta = 0.1102 * (ATTENUATION_DB - 8.7)
    n = int(np.ceil((ATTENUATION_DB - 8.0) / (2.285 * 2 * np.pi * width))) | 1
    cutoff = (PASSBAND_HZ + STOPBAND_HZ) / 2 / rate
    k = np.arange(n) - (n - 1) / 2
    h = 2 * cutoff * np.sinc(2 * cutoff * k) * np.kaiser(n, beta)
    h /= h.sum()
    if phase == "linear":
        return h
    # Minimum phase with the same magnitude, by folding the real cepstrum.
    size = 1 << int(np.ceil(np.log2(8 * n)))
    magnitude = np.abs(np.fft.rfft(h, size))
    cepstrum = np.fft.irfft(np.log(np.maximum(magnitude, 1e-8)), size)
    fold = np.zeros(size)
    fold[0] = cepstrum[0]
    fold[1 : size // 2] = 2 * cepstrum[1 : size // 2]
    fold[size // 2] = cepstrum[size // 2]
    minimum = np.fft.irfft(np.exp(np.fft.rfft(fold)), size)[:n]
    return minimum / minimum.sum()


def design(rate_in: int, rate_out: int, phase: str = "minimum") -> Design:
    """The polyphase resampler from `rate_in` to `rate_out`."""
    g = gcd(rate_in, rate_out)
    return _design(rate_in, rate_out // g, rate_in // g, phase)


def _design(rate_in: float, up: int, down: int, phase: str) -> Design:
    h = prototype(rate_in * up, phase) * up  # each phase's taps sum to about 1
    per_phase = -(-len(h) // up)
    padded = np.zeros(per_phase * up)
    padded[: len(h)] = h
    taps = padded.reshape(per_phase, up).T.astype(np.float32)
    return Design(rate_in, rate_in * up / down, up, down, np.ascontiguousarray(taps), phase)


def chunk_frames(device_rate: int) -> int:
    """The device buffer closest to one chunk (8 ms)."""
    return round(CHUNK * device_rate / SAMPLE_RATE)


def locks_chunks(device_rate: int, exact_rate: bool = False) -> bool:
    """Whether the model runs off 16 kHz here so that one buffer is one chunk."""
    return not exact_rate and CHUNK * device_rate % SAMPLE_RATE != 0


def pair(
    device_rate: int, phase: str = "minimum", exact_rate: bool = False
) -> tuple[Design, Design]:
    """(device -> the model's rate, the model's rate -> device): 16 kHz, or where a
    chunk is no whole number of device frames (and not `exact_rate`), the rate
    at which `chunk_frames` frames are one chunk."""
    if not locks_chunks(device_rate, exact_rate):
        return design(device_rate, SAMPLE_RATE, phase), design(SAMPLE_RATE, device_rate, phase)
    frames = chunk_frames(device_rate)
    g = gcd(CHUNK, frames)
    up, down = CHUNK // g, frames // g
    return _design(device_rate, up, down, phase), _design(device_rate * up / down, down, up, phase)


def added_latency_s(
    device_rate: int, frames: int, phase: str = "minimum", exact_rate: bool = False
) -> float:
    """What resampling adds at this device rate and buffer size: the peak of the
    impulse response of the whole round trip (resamplers, chunk FIFOs and the
    output's starting silence) around an identity model."""
    from . import _native

    down, up = pair(device_rate, phase, exact_rate)
    adapter = _native.RateAdapter(1, device_rate, frames, down, up)
    n = frames * (device_rate // (2 * frames) + 2)  # about half a second in
    x = np.zeros((2 * n, 1), np.float32)
    x[n, 0] = 1.0
    y = adapter.run_identity(x)[:, 0]
    return (int(np.argmax(np.abs(y))) - n) / device_rate


def best_frames(
    device_rate: int, phase: str = "minimum", exact_rate: bool = False
) -> tuple[int, float]:
    """The device buffer near one 8 ms chunk whose period plus what resampling
    adds is least, and what resampling adds (s): at 48 kHz 384 frames are
    exactly a chunk; at 44.1 kHz no whole number is, and the chunk FIFOs must
    hold up to a chunk more (about 8 ms) whichever is chosen."""
    if locks_chunks(device_rate, exact_rate):
        frames = chunk_frames(device_rate)
        return frames, added_latency_s(device_rate, frames, phase)
    exact = CHUNK * device_rate / SAMPLE_RATE
    candidates = sorted({max(16, int(exact) + k) for k in (-1, 0, 1, 2)})
    if exact == int(exact):
        candidates = [int(exact)]
    added = {n: added_latency_s(device_rate, n, phase, exact_rate) for n in candidates}
    # Within 0.1 ms, the one nearest a chunk (what a device set to 8 ms runs).
    frames = min(added, key=lambda n: (round(1e4 * (added[n] + n / device_rate)), abs(n - exact)))
    return frames, added[frames]
