"""`kboost-rt process`: stream a file through the small model, chunk by chunk,
with hints from a running server when one is given.

With a server the file is paced at real time (one 8 ms chunk per 8 ms), as a
live device would send it, so hints arrive exactly as they would live. The
output has the input's length (the 64-sample look-ahead lag is removed) and
is written atomically: one file per source for separation models.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .audio_files import (
    ProcessError,
    check_output,
    read_for_model,
    to_file_rate,
    write_audio_set,
)
from .client import LinkStats
from .fallback import FALLBACK_AFTER
from .model_files import load_model_files
from .params import LiveParams, Params
from .processor import open_stream
from .protocol import HintEncoding
from .signal_path import CHUNK, LOOKAHEAD, SAMPLE_RATE


@dataclass
class ProcessResult:
    outputs: list[Path]
    chunks: int
    hints_used: list[bool] = field(default_factory=list)
    link: LinkStats | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # what was done to fit the input
    chunks_on_small: int = 0  # chunks the small-model fallback played
    hint_ages: list[int] = field(default_factory=list)  # [a]: hints used a chunks late
    hint_schedule: list[int | None] | None = None  # per chunk: its hint's arrival age


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
    encoding: HintEncoding | None = None,
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
    targets = [out] if mix else output_paths(out, cfg.net.sources)
    for target in targets:
        check_output(target, [inp])
    audio = read_for_model(inp, cfg.net.channels)
    x = audio.x
    live = LiveParams(params, sources=cfg.net.sources)  # validates before anything runs
    if server is not None and cfg.boost is None:
        raise ProcessError(f"{model}: --server needs a boosted model")
    stream = open_stream(files, server, key, encoding, live, fallback_after)
    processor, client = stream.processor, stream.client
    samples = x.shape[1]
    chunks = -(-(samples + LOOKAHEAD) // CHUNK)  # flush the look-ahead
    padded = np.zeros((cfg.net.channels, chunks * CHUNK), np.float32)
    padded[:, :samples] = x
    y = np.zeros((cfg.net.sources, cfg.net.channels, chunks * CHUNK), np.float32)
    monitor = np.zeros((cfg.net.channels, chunks * CHUNK), np.float32)
    used = []
    if client is not None:
        client.record_schedule(chunks)
    start = time.monotonic()
    try:
        if client is None:  # nothing to wait for: the whole file in one native call
            sources, mixes = processor.run(
                padded.reshape(cfg.net.channels, chunks, CHUNK).transpose(1, 0, 2)
            )
            y[:] = sources.transpose(1, 2, 0, 3).reshape(y.shape)
            monitor[:] = mixes.transpose(1, 0, 2).reshape(monitor.shape)
            used = [False] * chunks
        for t in range(chunks if client is not None else 0):
            chunk = padded[:, t * CHUNK : (t + 1) * CHUNK]
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
        schedule = client.hint_schedule() if client else None
        stream.close()
    if progress:
        print(file=sys.stderr)
    y = to_file_rate(y[:, :, LOOKAHEAD : LOOKAHEAD + samples], audio)  # align with the input
    if mix:
        monitor = to_file_rate(monitor[:, LOOKAHEAD : LOOKAHEAD + samples], audio)
        write_audio_set([(targets[0], monitor)], audio.rate)
    else:
        write_audio_set(list(zip(targets, y, strict=True)), audio.rate)
    on_small = processor.chunks_on_small
    return ProcessResult(
        targets, chunks, used, link, time.monotonic() - start, audio.notes, on_small,
        processor.hint_ages(), schedule,
    )  # fmt: skip
