"""`kboost-rt demo` (what `make demo` runs) until the real-time host lands.

On a generated two-talker binaural mixture, with the paper's sizes:
1. the PyTorch reference models: saved and reloaded through the model-file
   format, streamed chunk by chunk (small, large, and the boosted pipeline
   with a d-chunk hint FIFO and lost hints) and checked against the offline
   pass;
2. the native engines' cost per chunk;
3. the hint link: a `kboost-rt serve` process, a lossy relay, and the file
   streamed through the boosted model at real time, with the hints' fate.
The weights are random (untrained): the output audio means nothing yet.
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
    worst = max(diff for *_, diff in rows)
    if worst > 1e-4:
        print(f"FAILED: streaming differs from offline by {worst:.2e}")
        return 1
    link_ok = _hint_link_demo(out, mixture, delay, models, configs)
    print("\nWeights are untrained: trained models ship with the training issue.")
    return 0 if link_ok else 1


def _hint_link_demo(
    out: Path, mixture: np.ndarray, delay: int, models: dict, configs: dict[str, ModelConfig]
) -> bool:
    """The device side for real: the native engines, a `kboost-rt serve` process and
    a lossy link (the fault relay), on the same models."""
    import re
    import subprocess
    import sys

    import soundfile as sf

    from .engine import NativeEngine
    from .model_files import load_model_files
    from .process import process_file
    from .relay import FaultRelay, Impairment

    boosted_name = f"demo-boosted-d{delay}"
    # The server finds the large model by the name in the boosted config.
    cfg = dataclasses.replace(configs[boosted_name], large_model="demo-large")
    save_model(models[boosted_name], cfg, out / "models" / boosted_name)

    print("\nNative engines (C++, one thread), median time per 8 ms chunk:")
    rng = np.random.default_rng(0)
    for name in ("demo-small", boosted_name, "demo-large"):
        files = load_model_files(out / "models" / name)
        engine = NativeEngine(files.config, files.tensors)
        chunks = (0.1 * rng.standard_normal((500, files.config.net.channels, CHUNK))).astype(
            np.float32
        )
        hints = None
        if files.config.boost is not None:
            hints = rng.standard_normal((500, files.config.boost.hint_channels, 97)).astype(
                np.float32
            )
        us = float(np.median(engine.time_chunks(chunks, hints)[50:])) / 1e3
        print(f"  {name:<22} {us:8.1f} us  ({us / 8000:.1%} of the 8 ms budget)")

    wav = out / "mixture.wav"
    sf.write(wav, mixture.T, SAMPLE_RATE, subtype="FLOAT")
    cli = str(Path(sys.executable).parent / "kboost-rt")
    server = subprocess.Popen(
        [
            cli,
            "serve",
            "--model",
            str(out / "models" / boosted_name),
            "--port",
            "0",
            "--report-every",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        match = re.search(r"on ([\d.]+):(\d+)", server.stdout.readline())
        if not match:
            print("FAILED: the hint server did not start")
            return False
        address = (match.group(1), int(match.group(2)))
        relay = FaultRelay(address, Impairment(delay_ms=4, jitter_ms=2, loss=0.1), seed=1).start()
        print(
            f"\nHint link: `kboost-rt serve` at {address[0]}:{address[1]}, a relay adding "
            f"4 +- 2 ms each way and 10 % loss, delay budget {delay} chunks "
            f"({8 * delay} ms); the file is paced at real time:"
        )
        result = process_file(
            wav, out / "boosted.wav", out / "models" / boosted_name, relay.address, progress=False
        )
        relay.stop()
    finally:
        server.terminate()
        server.communicate(timeout=10)
    s = result.link
    print(
        f"  {result.chunks} chunks in {result.seconds:.2f} s; hints {s.on_time} on time, "
        f"{s.late} late, {s.lost} lost (the relay dropped {relay.up.counts['dropped']} "
        f"chunks up and {relay.down.counts['dropped']} hints down), round trip "
        f"{s.rtt_chunks:g} chunks (max {s.max_rtt_chunks})"
    )
    print(f"  wrote {', '.join(str(p) for p in result.outputs)}")
    return s.on_time > 0
