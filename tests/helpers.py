"""Test helpers: run a reference model chunk by chunk; a tiny training-data cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kboost_rt.signal_path import CHUNK  # noqa: E402


def stream(model, x, hints=None):
    """Feed x [B, M, samples] chunk by chunk; hints[t] is what arrives at chunk t
    (for an any-delay model a dict of `step`'s keyword arguments)."""
    state = model.initial_state(x.shape[0])
    outs = []
    for t in range(x.shape[-1] // CHUNK):
        chunk = x[..., t * CHUNK : (t + 1) * CHUNK]
        if hints is None:
            out, _, state = model.step(chunk, state)
        elif isinstance(hints[t], dict):
            out, _, state = model.step(chunk, state, **hints[t])
        else:
            out, _, state = model.step(chunk, state, hints[t])
        outs.append(out)
    return torch.cat(outs, dim=-1)


def arriving_hints(hints, delay, chunks, arrived=None):
    """What the network delivers at each chunk: hint t-d (if made and not lost), else None."""
    out = []
    for t in range(chunks):
        j = t - delay
        ok = j >= 0 and (arrived is None or bool(arrived[0, j]))
        out.append(hints[:, :, j] if ok else None)
    return out


def speechlike(
    seconds: float, f0: float, rng: np.random.Generator, rate: int = 16000
) -> np.ndarray:
    """Harmonics of a wandering pitch, syllable-rate on/off: a stand-in talker."""
    t = np.arange(int(seconds * rate)) / rate
    pitch = f0 * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    return (voice * (np.sin(2 * np.pi * 4 * t) > -0.3)).astype(np.float32)


def make_tiny_cache(root: Path) -> Path:
    """A tiny data cache in the real layout: 4 talkers and 2 noises per split, 3 rooms."""
    from kboost_rt.training import rooms

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for i in range(4):
            path = root / "speech" / split / f"talker{i}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            audio = speechlike(4.0, 100 + 40 * i, rng)
            np.save(path, (audio / np.abs(audio).max() * 20000).astype(np.int16))
        for i in range(2):
            path = root / "noise" / split / f"noise{i}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, (rng.standard_normal(16000) * 3000).astype(np.int16))
        bank = np.stack([rooms.simulate_room(np.random.default_rng(s)) for s in range(3)])
        (root / "rooms").mkdir(exist_ok=True)
        np.save(root / "rooms" / f"{split}.npy", bank)
    return root
