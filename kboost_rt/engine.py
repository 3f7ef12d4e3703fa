"""The native streaming engine: one 8 ms step in hand-written C++.

Needs only numpy. Build it from a model folder; it packs the weights into its
own layout once and then runs `process` without allocating in the native step
and without the GIL.

    engine = NativeEngine.from_folder("models/separate-boosted-d3")
    out = engine.process(chunk)          # chunk [M, 128] -> [S, M, 128]
    out = engine.process(chunk, hint)    # boosted: the hint that arrived now

Like the reference models, a stream's output lags its input by 64 samples.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import _native
from .config import ModelConfig
from .model_files import ModelFileError, load_model_files
from .signal_path import CHUNK, N_BINS


def native_library() -> Path:
    """The C ABI shared library (libkboost.so), for C/C++ hosts and cffi/ctypes."""
    return Path(__file__).parent / "libkboost.so"


def native_include_dir() -> Path:
    """The folder holding kboost.h."""
    return Path(__file__).parent / "include"


def simd() -> str:
    """The kernel set the native core uses on this CPU ('avx512', 'avx2' or 'generic')."""
    return _native.simd()


def engine_config(config: ModelConfig, hint_channels: int = 0) -> dict[str, int | str]:
    """The native engine's flat config for a model config."""
    net = config.net
    out: dict[str, int | str] = {
        "role": config.role,
        "channels": net.channels,
        "sources": net.sources,
        "dim": net.dim,
        "hidden": net.hidden,
        "blocks": net.blocks,
        "attention_heads": net.attention_heads,
        "attention_e": net.attention_e,
        "attention_frames": net.attention_frames,
        "hint_channels": hint_channels,
    }
    if config.boost is not None:
        b = config.boost
        out.update(
            hint_channels=b.hint_channels,
            delay=b.delay,
            merge_heads=b.heads,
            merge_e=b.e,
            merge_frames=b.frames,
        )
    return out


class NativeEngine:
    """A streaming engine for a small, boosted or large model."""

    def __init__(
        self,
        config: ModelConfig,
        tensors: dict[str, np.ndarray],
        hint_generator: dict[str, np.ndarray] | None = None,
    ):
        """`hint_generator`: for a large model, the `hint_generator.*` tensors of the
        boosted model it serves; the engine then also returns each chunk's hint."""
        config.validate()
        self.config = config
        tensors = dict(tensors)
        hint_channels = 0
        if hint_generator is not None:
            if config.role != "large":
                raise ValueError("only a large model's engine takes a hint generator")
            tensors.update(hint_generator)
            hint_channels = int(hint_generator["hint_generator.weight"].shape[0])
        self._engine = _native.Engine(engine_config(config, hint_channels), tensors)
        net = config.net
        self.channels, self.sources = net.channels, net.sources
        self.hint_channels = (
            config.boost.hint_channels if config.boost is not None else hint_channels
        )
        self._out = np.zeros((net.sources, net.channels, CHUNK), np.float32)
        self._hint_out = np.zeros((self.hint_channels, N_BINS), np.float32)

    @classmethod
    def from_folder(
        cls, path: str | os.PathLike, hints_for: str | os.PathLike | None = None
    ) -> NativeEngine:
        """Load a model folder. For a large model, `hints_for` names the boosted
        model folder whose hint generator it should run."""
        files = load_model_files(path)
        generator = None
        if hints_for is not None:
            boosted = load_model_files(hints_for)
            if boosted.config.role != "boosted":
                raise ModelFileError(f"{hints_for}: not a boosted model (no hint generator)")
            generator = {
                k: v for k, v in boosted.tensors.items() if k.startswith("hint_generator.")
            }
        return cls(files.config, files.tensors, generator)

    @property
    def makes_hints(self) -> bool:
        return self._engine.makes_hints

    @property
    def nonfinite_resets(self) -> int:
        """Chunks where NaN/Inf met the engine: output silenced, state reset."""
        return self._engine.nonfinite_resets

    @property
    def chunks(self) -> int:
        return self._engine.chunks

    def reset(self) -> None:
        self._engine.reset()

    def process(self, chunk: np.ndarray, hint: np.ndarray | None = None) -> np.ndarray:
        """chunk [M, 128] -> a new array [S, M, 128]."""
        self._engine.process_into(chunk, hint, self._out)
        return self._out.copy()

    def process_with_hint(self, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Large model with hint generator: -> (output [S, M, 128], hint [C_h, 97])."""
        if not self.makes_hints:
            raise ValueError("this engine has no hint generator (see hints_for)")
        self._engine.process_into(chunk, None, self._out, self._hint_out)
        return self._out.copy(), self._hint_out.copy()

    def time_chunks(self, chunks: np.ndarray, hints: np.ndarray | None = None) -> np.ndarray:
        """Run chunks [N, M, 128] (hints [N, C_h, 97]) back to back in C++; returns each
        step's wall time in ns, without the Python call around it."""
        return self._engine.time_chunks(chunks, hints)

    def time_stages(
        self, chunks: np.ndarray, hints: np.ndarray | None = None
    ) -> tuple[list[str], list[int], np.ndarray]:
        """Like time_chunks, each stage of each step timed inside the real step:
        (stage names, block indices (-1: none), ns [N, stages])."""
        return self._engine.time_stages(chunks, hints)

    def process_into(
        self,
        chunk: np.ndarray,
        hint: np.ndarray | None,
        out: np.ndarray,
        hint_out: np.ndarray | None = None,
    ) -> None:
        """Allocation-free form for real-time callers: writes into `out` (and `hint_out`)."""
        self._engine.process_into(chunk, hint, out, hint_out)
