"""`kboost-rt demo` (what `make demo` runs) until the real-time host lands.

Runs the PyTorch reference models at the paper's sizes end to end on a
generated two-talker binaural mixture: saves and reloads every model through
the model-file format, streams the signal chunk by chunk (small, large, and
the boosted pipeline with a d-chunk hint FIFO and lost hints), checks each
stream against the offline pass and prints cost and timing. The weights are
random (untrained): the output audio means nothing yet.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import _native
from .config import PAPER_BOOSTED, PAPER_LARGE, PAPER_SMALL, ModelConfig
from .costs import macs_per_chunk
from .reference import BoostedPipeline, load_model, save_model
from .reference.io import build_model
from .signal_path import CHUNK, LOOKAHEAD, SAMPLE_RATE


def synth_mixture(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Two harmonic 'talkers' with gliding pitch and syllable-rate envelopes, at
    two microphones 0.18 m apart (inter-mic delays of a few samples), plus
    faint noise. Returns [2 mics, samples] float32."""
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    mics = np.zeros((2, n))
    for f0, lag in ((120.0, 3), (210.0, -4)):
        pitch = f0 * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
        phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
        voice = sum(np.sin(k * phase) / k for k in range(1, 20))
        envelope = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6)), 0, 1)
        talker = 0.1 * voice * envelope
        mics[0] += talker
        mics[1] += np.roll(talker, lag)
    mics += 0.003 * rng.standard_normal(mics.shape)
    return mics.astype(np.float32)


def _stream(step, x: torch.Tensor, state, arrived=None) -> tuple[torch.Tensor, list[float]]:
    outs, times = [], []
    for i in range(x.shape[-1] // CHUNK):
        chunk = x[..., i * CHUNK : (i + 1) * CHUNK]
        start = time.perf_counter()
        if arrived is None:
            out, _, state = step(chunk, state)
        else:
            out, _, state = step(chunk, state, bool(arrived[0, i]))
        times.append(time.perf_counter() - start)
        outs.append(out)
    return torch.cat(outs, dim=-1), times


def run_demo(out: Path, seconds: float, delay: int, seed: int) -> int:
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    mixture = synth_mixture(seconds, rng)
    samples = mixture.shape[1] // CHUNK * CHUNK
    mixture = mixture[:, :samples]
    print(
        f"Generated a {samples / SAMPLE_RATE:.2f} s two-talker binaural mixture "
        f"({samples // CHUNK} chunks of {CHUNK} samples)."
    )

    spec = _native.stft(mixture)
    rebuilt = _native.istft(spec, samples)
    err = float(np.abs(rebuilt[:, LOOKAHEAD:] - mixture[:, LOOKAHEAD:]).max())
    print(f"Native STFT -> iSTFT round trip: max |error| = {err:.2e}")

    boosted_cfg = dataclasses.replace(
        PAPER_BOOSTED, boost=dataclasses.replace(PAPER_BOOSTED.boost, delay=delay)
    )
    configs: dict[str, ModelConfig] = {
        "demo-small": PAPER_SMALL,
        "demo-large": PAPER_LARGE,
        f"demo-boosted-d{delay}": boosted_cfg,
    }
    models = {}
    for name, cfg in configs.items():
        folder = save_model(build_model(cfg), cfg, out / "models" / name)
        models[name], _ = load_model(folder)  # the loader validates every tensor
    print(f"Saved and reloaded {len(models)} models (random weights) under {out / 'models'}")

    x = torch.from_numpy(mixture)[None]
    x_offline = F.pad(x, (LOOKAHEAD, 0))  # a stream starts with 64 samples of zero history
    rows = []
    with torch.no_grad():
        for name in ("demo-small", "demo-large"):
            model = models[name]
            offline = model(x_offline)[0][..., :samples]
            streamed, times = _stream(model.step, x, model.initial_state())
            rows.append((name, configs[name], times, (streamed - offline).abs().max().item()))

        pipeline = BoostedPipeline(models["demo-large"], models[f"demo-boosted-d{delay}"])
        frames = samples // CHUNK + 1
        for loss in (0.0, 0.1):
            arrived = torch.rand(1, frames) >= loss
            offline = pipeline(x_offline, arrived)[0][..., :samples]
            streamed, times = _stream(pipeline.step, x, pipeline.initial_state(), arrived)
            label = f"pipeline d={delay}, {loss:.0%} hints lost"
            rows.append((label, boosted_cfg, times, (streamed - offline).abs().max().item()))

    print("\nStreaming (one thread, eager PyTorch reference) against the offline pass:\n")
    print(f"{'model':<34}{'MACs/chunk':>12}{'median ms/chunk':>17}{'max |stream-offline|':>22}")
    for name, cfg, times, diff in rows:
        macs = macs_per_chunk(cfg)["device"] / 1e6
        median = statistics.median(times) * 1e3
        print(f"{name:<34}{macs:>10.2f} M{median:>17.2f}{diff:>22.2e}")
    print(
        "\nThe pipeline runs the large model, the hint generator, a "
        f"{delay}-chunk hint FIFO and the boosted small model per chunk; its time is all three."
    )
    print("Weights are untrained: trained models ship with the training issue.")
    worst = max(diff for *_, diff in rows)
    if worst > 1e-4:
        print(f"FAILED: streaming differs from offline by {worst:.2e}")
        return 1
    return 0
