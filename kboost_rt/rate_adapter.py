"""Run the 16 kHz, 128-sample Processor on a device that runs another rate.

Streaming soxr resamplers convert the device's input to 16 kHz and the
output back; FIFOs on both sides turn the device's buffer size into whole
128-sample chunks. soxr emits its output in bursts, so the output FIFO starts
with just enough silence never to run dry, found at start-up by running twin
resamplers on silence. That silence is the whole latency this adds
(`added_latency_s`): it already covers the resamplers' own delays.
"""

from __future__ import annotations

import numpy as np
import soxr

from .signal_path import CHUNK, SAMPLE_RATE

# soxr qualities: "LQ" is anti-aliased but emits in bursts (about 39 ms added at
# 48 kHz); "QQ" is cubic interpolation, no anti-aliasing, about 0-8 ms added.
QUALITIES = ("QQ", "LQ", "MQ", "HQ", "VHQ")


class Fifo:
    """A fixed-size [capacity, channels] float32 ring of frames (sized once)."""

    def __init__(self, capacity: int, channels: int):
        self.buf = np.zeros((capacity, channels), np.float32)
        self.start = 0
        self.size = 0

    def push(self, frames: np.ndarray) -> None:
        n, cap = len(frames), len(self.buf)
        if self.size + n > cap:
            raise OverflowError("rate adapter FIFO overflow")
        at = (self.start + self.size) % cap
        first = min(n, cap - at)
        self.buf[at : at + first] = frames[:first]
        self.buf[: n - first] = frames[first:]
        self.size += n

    def pop_into(self, out: np.ndarray) -> None:
        n, cap = len(out), len(self.buf)
        first = min(n, cap - self.start)
        out[:first] = self.buf[self.start : self.start + first]
        out[first:] = self.buf[: n - first]
        self.start = (self.start + n) % cap
        self.size -= n


class RateAdapter:
    """device frames at `rate` -> process(chunk [M, 128] at 16 kHz) -> device frames."""

    def __init__(
        self, process, rate: int, channels: int, frames_per_buffer: int, quality: str = "LQ"
    ):
        if quality not in QUALITIES:
            raise ValueError(f"resampler quality must be one of {', '.join(QUALITIES)}")
        self.process, self.rate, self.channels = process, rate, channels
        self.quality = quality
        self.frames = frames_per_buffer
        self.down = soxr.ResampleStream(rate, SAMPLE_RATE, channels, "float32", quality=quality)
        self.up = soxr.ResampleStream(SAMPLE_RATE, rate, channels, "float32", quality=quality)
        capacity = 16 * (frames_per_buffer + CHUNK) * max(1, rate // SAMPLE_RATE + 1)
        self.inq = Fifo(capacity, channels)
        self.outq = Fifo(capacity, channels)
        self.chunk = np.zeros((CHUNK, channels), np.float32)
        self.prefill = self._measure_prefill()
        self.outq.push(np.zeros((self.prefill, channels), np.float32))

    def _measure_prefill(self) -> int:
        """Silence to start the output FIFO with: the deepest shortfall of twin
        resamplers fed 2 s of silence the way the device will feed these."""
        down = soxr.ResampleStream(self.rate, SAMPLE_RATE, self.channels, "float32", self.quality)
        up = soxr.ResampleStream(SAMPLE_RATE, self.rate, self.channels, "float32", self.quality)
        pending_in = have_out = 0
        deficit = 0
        silence = np.zeros((self.frames, self.channels), np.float32)
        for _ in range(2 * self.rate // self.frames):
            pending_in += len(down.resample_chunk(silence))
            while pending_in >= CHUNK:
                pending_in -= CHUNK
                have_out += len(up.resample_chunk(self.chunk))
            have_out -= self.frames
            deficit = max(deficit, -have_out)
        return deficit

    @property
    def added_latency_s(self) -> float:
        return self.prefill / self.rate

    def __call__(self, frames: np.ndarray, out: np.ndarray) -> None:
        """frames [n, M] at the device rate -> out [n, M] at the device rate."""
        self.inq.push(self.down.resample_chunk(frames))
        while self.inq.size >= CHUNK:
            self.inq.pop_into(self.chunk)
            mix = self.process(np.ascontiguousarray(self.chunk.T))
            self.outq.push(self.up.resample_chunk(np.ascontiguousarray(mix.T)))
        if self.outq.size >= len(out):
            self.outq.pop_into(out)
        else:  # would only happen if the device changed its buffer size: play silence
            out[:] = 0
