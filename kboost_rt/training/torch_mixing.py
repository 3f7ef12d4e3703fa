"""Training mixtures made on the training device, a whole batch at once.

The same recipe as `mixing.Mixer` (rooms, two talkers within 5 dB or one
talker, noise at the task's SNR, level -35 to -15 dBFS), as batched tensor
work: crops are gathered from one long tensor per kind, the room responses
are applied by FFT convolution, and gains are computed per example. On a
GPU this keeps the batch growing without processes that mix on the CPU.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .mixing import SNR_DB, TALKER_GAP_DB, TASK_SOURCES
from .rooms import RIR_LENGTH

PAUSE_RMS = 0.02  # a talker crop quieter than this is mostly pause: draw another
CROP_TRIES = 6
NOISE_FROM_POOL = 0.75  # the rest is coloured noise


class _Pool:
    """Clips of one kind concatenated into one tensor; crops wrap around short clips."""

    def __init__(self, clips: list[np.ndarray], device: torch.device):
        lengths = [len(c) for c in clips]
        self.audio = torch.from_numpy(np.concatenate(clips).astype(np.float32)).to(device)
        self.offsets = torch.tensor(np.cumsum([0, *lengths[:-1]]), device=device)
        self.lengths = torch.tensor(lengths, device=device)

    def __len__(self) -> int:
        return len(self.lengths)

    def crop(
        self,
        index: torch.Tensor,
        length: int,
        g: torch.Generator,
        speed: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """index [...] -> crops [..., length] from random starts; `speed` [...] plays
        each crop that much faster (tempo and pitch together, linear interpolation)."""
        n = self.lengths[index]
        device = n.device
        if speed is None:
            span = (n - length).clamp(min=0) + 1
            start = (torch.rand(index.shape, generator=g, device=device) * span).long()
            pos = (start[..., None] + torch.arange(length, device=device)) % n[..., None]
            return self.audio[self.offsets[index][..., None] + pos]
        read = (length * speed).ceil().long() + 1
        span = (n - read).clamp(min=0) + 1
        start = (torch.rand(index.shape, generator=g, device=device) * span).floor()
        at = start[..., None] + torch.arange(length, device=device) * speed[..., None]
        lo = at.floor()
        frac = at - lo
        lo = lo.long()
        base = self.offsets[index][..., None]
        a = self.audio[base + lo % n[..., None]]
        b = self.audio[base + (lo + 1) % n[..., None]]
        return a + (b - a) * frac


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).mean(-1).sqrt() + 1e-9


def colored_noise(shape: tuple, length: int, g: torch.Generator, device) -> torch.Tensor:
    """Gaussian noise with a 1/f^a spectrum, a in [0, 2] per example."""
    spec = torch.fft.rfft(torch.randn(*shape, length, generator=g, device=device))
    f = torch.fft.rfftfreq(length, device=device).clamp(min=1.0 / length)
    a = torch.rand(*shape, 1, generator=g, device=device) * 2
    return torch.fft.irfft(spec / f.pow(a / 2), n=length)


class TorchMixer:
    """(mixture [B, 2, N], sources [B, S, 2, N]) batches of one task, on `device`."""

    def __init__(
        self,
        task: str,
        speech: list[np.ndarray],
        noise: list[np.ndarray],
        rooms: np.ndarray,
        device: torch.device,
        seed: int = 0,
        speed_range: tuple[float, float] | None = None,
    ):
        if task not in TASK_SOURCES:
            raise ValueError(f"unknown task {task!r} (choose from {', '.join(TASK_SOURCES)})")
        if len(speech) < TASK_SOURCES[task]:
            raise ValueError(
                f"{task} needs {TASK_SOURCES[task]} talkers, the data have {len(speech)}"
            )
        self.task, self.device = task, torch.device(device)
        self.speed_range = speed_range  # talkers played 0.9-1.1x, say: more voices
        self.sources = TASK_SOURCES[task]
        self.speech = _Pool(speech, self.device)
        self.noise = _Pool(noise, self.device) if noise else None
        self.rooms = torch.from_numpy(np.ascontiguousarray(rooms, np.float32)).to(self.device)
        self.g = torch.Generator(self.device)
        self.g.manual_seed(seed)

    def _uniform(self, lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=self.g, device=self.device)

    def _talkers(self, batch: int, length: int) -> torch.Tensor:
        """[B, S, length] dry talkers, S different ones per example, pauses avoided."""
        keys = torch.rand(batch, len(self.speech), generator=self.g, device=self.device)
        who = keys.argsort(-1)[:, : self.sources]  # without replacement
        speed = None
        if self.speed_range:
            lo, hi = self.speed_range
            speed = self._uniform(lo, hi, batch, self.sources)[..., None].expand(-1, -1, CROP_TRIES)
        who = who[..., None].expand(-1, -1, CROP_TRIES)
        tries = self.speech.crop(who, length, self.g, speed)
        loud = _rms(tries[..., RIR_LENGTH:]) > PAUSE_RMS  # [B, S, tries]
        loud[..., -1] = True  # the last try is kept whatever it holds
        pick = loud.float().argmax(-1)  # the first loud one
        return tries.gather(2, pick[..., None, None].expand(-1, -1, 1, length))[:, :, 0]

    def _noise(self, batch: int, length: int) -> torch.Tensor:
        coloured = colored_noise((batch,), length, self.g, self.device)
        if self.noise is None:
            return coloured
        which = (torch.rand(batch, generator=self.g, device=self.device) * len(self.noise)).long()
        pooled = self.noise.crop(which, length, self.g)
        use = torch.rand(batch, 1, generator=self.g, device=self.device) < NOISE_FROM_POOL
        return torch.where(use, pooled, coloured)

    def batch(self, size: int, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        length = samples + RIR_LENGTH  # reverb tails settle before the kept part
        dry = torch.cat([self._talkers(size, length), self._noise(size, length)[:, None]], 1)
        room = (torch.rand(size, generator=self.g, device=self.device) * len(self.rooms)).long()
        rirs = self.rooms[room][:, : self.sources + 1]  # [B, S + 1, 2, RIR]
        n = 1 << math.ceil(math.log2(length + RIR_LENGTH - 1))
        wet = torch.fft.irfft(torch.fft.rfft(dry, n)[:, :, None] * torch.fft.rfft(rirs, n), n)[
            ..., RIR_LENGTH:length
        ]  # [B, S + 1, 2, samples]
        sources, noise = wet[:, : self.sources], wet[:, self.sources]
        gap = (
            self._uniform(-TALKER_GAP_DB, TALKER_GAP_DB, size, self.sources) / 2
            if self.sources > 1
            else torch.zeros(size, 1, device=self.device)
        )
        gain = 10 ** (gap / 20) * 0.1 / _rms(sources.flatten(2))
        sources = sources * gain[..., None, None]
        talkers = sources.sum(1)
        snr = self._uniform(*SNR_DB[self.task], size)
        noise = (
            noise
            * (_rms(talkers.flatten(1)) / _rms(noise.flatten(1)) * 10 ** (-snr / 20))[:, None, None]
        )
        mixture = talkers + noise
        level = 10 ** (self._uniform(-35, -15, size) / 20) / _rms(mixture.flatten(1))
        level = torch.minimum(level, 0.95 / (mixture.flatten(1).abs().amax(-1) + 1e-9))
        return mixture * level[:, None, None], sources * level[:, None, None, None]
