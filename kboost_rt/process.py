"""`kboost-rt process`: stream a file through the small model, chunk by chunk,
with hints from a running server when one is given.

With a server the file is paced at real time (one 8 ms chunk per 8 ms), as a
live device would send it, so hints arrive exactly as they would live. The
output has the input's length (the 64-sample look-ahead lag is removed) and
is written atomically: one file per source for separation models.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .client import HintClient, LinkStats
from .engine import NativeEngine
from .fallback import FALLBACK_AFTER, SmallModelFallback
from .model_files import load_model_files
from .params import LiveParams, Params
from .processor import Processor
from .protocol import HintEncoding
from .signal_path import CHUNK, LOOKAHEAD, SAMPLE_RATE


class ProcessError(Exception):
    """Input that cannot be processed as asked: a clear message, nothing written."""


@dataclass
class ProcessResult:
    outputs: list[Path]
    chunks: int
    hints_used: list[bool] = field(default_factory=list)
    link: LinkStats | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # what was done to fit the input
    chunks_on_small: int = 0  # chunks the small-model fallback played


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


def _check_writable(path: Path) -> None:
    """Fail before any work if the output cannot be written there."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}."):
            pass
    except OSError as e:
        raise ProcessError(f"{path}: cannot write there ({e.strerror or e})") from None


def output_paths(out: Path, sources: int) -> list[Path]:
    if sources == 1:
        return [out]
    return [out.with_name(f"{out.stem}_s{s + 1}{out.suffix}") for s in range(sources)]


def process_file(
    inp: Path,
    out: Path,
    model: Path,
    server: tuple[str, int] | None = None,
    key: tuple[int, bytes] | None = None,
    encoding: HintEncoding = HintEncoding.FLOAT32,
    progress: bool = True,
    params: Params | None = None,
    mix: bool = False,
    fallback_after: int = FALLBACK_AFTER,
) -> ProcessResult:
    """Per-source outputs, or with `mix` the monitor mix under `params` (the samples
    `kboost-rt live` would play for this input). A boosted model with a hint server
    hands over to the task's small model (from the same folder) after
    `fallback_after` chunks without a hint; 0: never."""
    files = load_model_files(model)
    cfg = files.config
    if cfg.role == "large":
        raise ProcessError(
            f"{model}: a large model runs on the server; process with the small or boosted model"
        )
    audio = read_for_model(inp, cfg.net.channels)
    x = audio.x
    targets = [out] if mix else output_paths(out, cfg.net.sources)
    for target in targets:
        _check_writable(target)
    engine = NativeEngine(cfg, files.tensors)
    live = LiveParams(params, sources=cfg.net.sources)  # validates before anything runs
    client = None
    if server is not None:
        if cfg.boost is None:
            raise ProcessError(f"{model}: --server needs a boosted model")
        client = HintClient(
            server, files.name, cfg.net.channels, cfg.boost.delay, encoding, key=key
        )
        client.connect()
    samples = x.shape[1]
    chunks = -(-(samples + LOOKAHEAD) // CHUNK)  # flush the look-ahead
    padded = np.zeros((cfg.net.channels, chunks * CHUNK), np.float32)
    padded[:, :samples] = x
    y = np.zeros((cfg.net.sources, cfg.net.channels, chunks * CHUNK), np.float32)
    monitor = np.zeros((cfg.net.channels, chunks * CHUNK), np.float32)
    fallback = SmallModelFallback.beside(model, fallback_after) if client else None
    processor = Processor(engine, client, live, fallback)
    used = []
    start = time.monotonic()
    try:
        for t in range(chunks):
            chunk = padded[:, t * CHUNK : (t + 1) * CHUNK]
            if client is not None:
                # A live device has chunk t at (t + 1) x 8 ms: pace to that.
                wait = start + (t + 1) * CHUNK / SAMPLE_RATE - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            before = processor.hints_used
            sources, mixed = processor.process(chunk)
            used.append(processor.hints_used > before)
            y[:, :, t * CHUNK : (t + 1) * CHUNK] = sources
            monitor[:, t * CHUNK : (t + 1) * CHUNK] = mixed
            if progress and (t % 125 == 0 or t == chunks - 1):
                print(
                    f"\rprocessing {inp.name}: {100 * (t + 1) // chunks:3d}%",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        if client:
            client.wait_for_replies()  # the last hints count as late, not lost
        link = client.stats() if client else None
        if client:
            client.close()
    if progress:
        print(file=sys.stderr)
    y = to_file_rate(y[:, :, LOOKAHEAD : LOOKAHEAD + samples], audio)  # align with the input
    if mix:
        monitor = to_file_rate(monitor[:, LOOKAHEAD : LOOKAHEAD + samples], audio)
        write_audio_atomic(targets[0], monitor, audio.rate)
    else:
        for s, target in enumerate(targets):
            write_audio_atomic(target, y[s], audio.rate)
    on_small = fallback.chunks_on_small if fallback else 0
    return ProcessResult(
        targets, chunks, used, link, time.monotonic() - start, audio.notes, on_small
    )
