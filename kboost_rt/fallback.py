"""Small-model fallback: when hints stop coming, the small model takes over.

A boosted model trained with hints on most of its clips is a worse small
model than the small model itself once every hint is lost (separate d1:
0.34 dB below it on val, docs/results.md). `SmallModelFallback` runs the
task's small model beside the boosted one on every chunk, so its state is
always warm, and crossfades to its output over one chunk once `after`
chunks in a row have come without a hint; the first hint that arrives
crossfades back. The price is the small model's compute on every chunk.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .model_files import ModelFileError, load_model_files
from .signal_path import CHUNK

if TYPE_CHECKING:  # the native module loads only when an engine is made
    from .engine import NativeEngine

FALLBACK_AFTER = 25  # chunks (200 ms): far longer than any shipped delay (6)


class SmallModelFallback:
    def __init__(self, engine: NativeEngine, after: int = FALLBACK_AFTER):
        if engine.config.role != "small":
            raise ValueError(f"the fallback must be a small model, not a {engine.config.role} one")
        if after < 1:
            raise ValueError(f"fallback after {after} chunks: must be 1 or more")
        self.engine, self.after = engine, after
        self.missing = 0  # chunks in a row without a hint
        self.weight = 0.0  # the small model's share of the output at the end of the last chunk
        self.chunks_on_small = 0
        self._small = np.zeros((engine.sources, engine.channels, CHUNK), np.float32)
        self._ramp = np.arange(1, CHUNK + 1, dtype=np.float32) / CHUNK

    @classmethod
    def beside(cls, boosted: str | os.PathLike, after: int = FALLBACK_AFTER):
        """The fallback for a boosted model folder: `<task>-small` in the same parent
        folder, or None if there is none (then the boosted model runs alone)."""
        from .engine import NativeEngine

        cfg = load_model_files(boosted).config
        small = Path(boosted).parent / f"{cfg.task}-small"
        if cfg.boost is None or not small.is_dir():
            return None
        files = load_model_files(small)
        if (files.config.net.channels, files.config.net.sources) != (
            cfg.net.channels,
            cfg.net.sources,
        ):
            raise ModelFileError(f"{small}: other channels or sources than {boosted}")
        return cls(NativeEngine(files.config, files.tensors), after)

    def reset(self) -> None:
        self.engine.reset()
        self.missing, self.weight, self.chunks_on_small = 0, 0.0, 0

    def apply(self, chunk: np.ndarray, hint_arrived: bool, out: np.ndarray) -> None:
        """Run the small model on `chunk` and blend its output into `out`, the boosted
        model's output [S, M, 128] for the same chunk, in place."""
        self.engine.process_into(chunk, None, self._small)
        self.missing = 0 if hint_arrived else self.missing + 1
        target = 1.0 if self.missing >= self.after else 0.0
        if target == 1.0:
            self.chunks_on_small += 1
        if target == self.weight:
            if target == 1.0:
                out[...] = self._small
            return
        w = self.weight + (target - self.weight) * self._ramp
        out += w * (self._small - out)
        self.weight = target
