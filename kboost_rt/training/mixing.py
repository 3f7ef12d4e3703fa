"""Mixtures made on the fly from the cached clean clips and rooms.

`separate`: two different talkers plus faint noise; `enhance`: one talker plus
noise. Every source is convolved with its impulse response to the two
microphones of one simulated room; the targets are the talkers' reverberant
images at the microphones, and the mixture is their sum plus the noise image.
`write_set` bakes examples into the evaluation format of `kboost-rt eval`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import fftconvolve

from ..signal_path import SAMPLE_RATE
from .rooms import RIR_LENGTH

TASK_SOURCES = {"separate": 2, "enhance": 1}
# Noise level below the talkers (dB): faint for separate, strong for enhance.
SNR_DB = {"separate": (10.0, 30.0), "enhance": (-5.0, 15.0)}
TALKER_GAP_DB = 5.0  # talkers of `separate` differ by up to this much


@dataclass
class Pool:
    """Every clip of one kind and split, memory-mapped."""

    names: list[str]
    clips: list[np.ndarray]

    @classmethod
    def load(cls, folder: Path) -> Pool:
        files = sorted(folder.glob("*.npy"))
        files = [f for f in files if not f.name.endswith(".tmp.npy")]
        return cls([f.stem for f in files], [np.load(f, mmap_mode="r") for f in files])

    def crop(self, index: int, length: int, rng: np.random.Generator) -> np.ndarray:
        clip = self.clips[index]
        if clip.shape[0] <= length:  # loop short clips (noises)
            reps = -(-length // clip.shape[0]) + 1
            clip = np.tile(np.asarray(clip), reps)
        start = int(rng.integers(0, clip.shape[0] - length + 1))
        return np.asarray(clip[start : start + length], np.float32) / 32768


def colored_noise(length: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with a 1/f^a spectrum, a in [0, 2] (white to brown)."""
    spec = np.fft.rfft(rng.standard_normal(length))
    f = np.maximum(np.fft.rfftfreq(length), 1.0 / length)
    return np.fft.irfft(spec / f ** (rng.uniform(0, 2) / 2), n=length).astype(np.float32)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)) + 1e-9)


class Mixer:
    """Draws (mixture [2, N], sources [S, 2, N]) examples of one task and split."""

    def __init__(self, cache: Path, task: str, split: str):
        if task not in TASK_SOURCES:
            raise ValueError(f"unknown task {task!r} (choose from {', '.join(TASK_SOURCES)})")
        self.task, self.split = task, split
        self.speech = Pool.load(cache / "speech" / split)
        self.noise = Pool.load(cache / "noise" / split)
        rooms = cache / "rooms" / f"{split}.npy"
        if not self.speech.names or not rooms.is_file():
            raise FileNotFoundError(
                f"{cache}: no {split} data; build it with `kboost-rt data build --cache {cache}`"
            )
        self.rooms = np.load(rooms, mmap_mode="r")
        if len(self.speech.names) < TASK_SOURCES[task]:
            raise ValueError(f"{cache}: {split} has too few speakers for {task}")

    def _talker(self, index: int, length: int, rng: np.random.Generator) -> np.ndarray:
        best = self.speech.crop(index, length, rng)
        for _ in range(5):  # avoid a crop that is mostly pause
            if _rms(best[RIR_LENGTH:]) > 0.02:
                break
            best = self.speech.crop(index, length, rng)
        return best

    def example(self, samples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        n_src = TASK_SOURCES[self.task]
        length = samples + RIR_LENGTH  # reverb tails settle before the kept part
        room = np.asarray(self.rooms[int(rng.integers(len(self.rooms)))])
        speakers = rng.choice(len(self.speech.names), size=n_src, replace=False)
        dry = [self._talker(int(s), length, rng) for s in speakers]
        if self.noise.names and rng.random() < 0.75:
            noise = self.noise.crop(int(rng.integers(len(self.noise.names))), length, rng)
        else:
            noise = colored_noise(length, rng)
        images = []
        for i, x in enumerate([*dry, noise]):
            wet = np.stack([fftconvolve(x, room[i, m])[:length] for m in range(2)])
            images.append(wet[:, RIR_LENGTH:].astype(np.float32))
        sources = np.stack(images[:n_src])
        for s in range(n_src):
            gain_db = rng.uniform(-TALKER_GAP_DB, TALKER_GAP_DB) / 2 if n_src > 1 else 0.0
            sources[s] *= 10 ** (gain_db / 20) * 0.1 / _rms(sources[s])
        talkers = sources.sum(axis=0)
        snr = rng.uniform(*SNR_DB[self.task])
        noise_img = images[-1] * _rms(talkers) / _rms(images[-1]) * 10 ** (-snr / 20)
        mixture = talkers + noise_img
        level = 10 ** (rng.uniform(-35, -15) / 20) / _rms(mixture)
        level = min(level, 0.95 / (np.abs(mixture).max() + 1e-9))
        return (mixture * level).astype(np.float32), (sources * level).astype(np.float32)

    def batch(
        self, size: int, samples: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        pairs = [self.example(samples, rng) for _ in range(size)]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def write_set(
    cache: Path, task: str, split: str, out: Path, count: int, seconds: float, seed: int
) -> None:
    """Bake `count` examples in the `kboost-rt eval` format (float WAV)."""
    mixer = Mixer(cache, task, split)
    rng = np.random.default_rng(seed)
    for i in range(count):
        mixture, sources = mixer.example(int(seconds * SAMPLE_RATE), rng)
        folder = out / f"{i:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / "mixture.wav", mixture.T, SAMPLE_RATE, subtype="FLOAT")
        for s, src in enumerate(sources, 1):
            sf.write(folder / f"source{s}.wav", src.T, SAMPLE_RATE, subtype="FLOAT")
