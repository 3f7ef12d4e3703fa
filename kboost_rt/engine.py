"""The native streaming engine: one 8 ms step in hand-written C++.

Needs only numpy. Build it from a model folder; it packs the weights into its
own layout once and then runs `process` without allocating in the native step
and without the GIL.

    engine = NativeEngine.from_folder("models/separate-boosted")
    out = engine.process(chunk)          # chunk [M, 128] -> [S, M, 128]
    out = engine.process_aged(chunk, hints, ages)  # any-delay: the hints that
                                                   # arrived now, each with its age

Like the reference models, a stream's output lags its input by 64 samples.

Many streams of one model (a hint server's, a host's plugin instances) share
its packed weights: build a `NativeModel` once and an engine per stream.

    model = NativeModel.from_folder("models/separate-large",
                                    hints_for="models/separate-boosted")
    engines = [model.engine() for _ in range(16)]   # one set of weights
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
            max_age=b.max_age,
        )
    return out


def _hint_generator_of(path: str | os.PathLike) -> dict[str, np.ndarray]:
    boosted = load_model_files(path)
    if boosted.config.role != "boosted":
        raise ModelFileError(f"{path}: not a boosted model (no hint generator)")
    return {k: v for k, v in boosted.tensors.items() if k.startswith("hint_generator.")}


class NativeModel:
    """A model's weights, packed once into the native layout and then read-only:
    any number of engines, on any threads, share one (each engine holds only its
    stream's state)."""

    def __init__(
        self,
        config: ModelConfig,
        tensors: dict[str, np.ndarray],
        hint_generator: dict[str, np.ndarray] | None = None,
    ):
        """`hint_generator`: for a large model, the `hint_generator.*` tensors of the
        boosted model it serves; its engines then also return each chunk's hint."""
        config.validate()
        self.config = config
        tensors = dict(tensors)
        hint_channels = 0
        if hint_generator is not None:
            if config.role != "large":
                raise ValueError("only a large model's engine takes a hint generator")
            tensors.update(hint_generator)
            hint_channels = int(hint_generator["hint_generator.weight"].shape[0])
        self._model = _native.Model(engine_config(config, hint_channels), tensors)
        self.hint_channels = (
            config.boost.hint_channels if config.boost is not None else hint_channels
        )

    @classmethod
    def from_folder(
        cls, path: str | os.PathLike, hints_for: str | os.PathLike | None = None
    ) -> NativeModel:
        """Load a model folder. For a large model, `hints_for` names the boosted
        model folder whose hint generator it should run."""
        files = load_model_files(path)
        generator = None if hints_for is None else _hint_generator_of(hints_for)
        return cls(files.config, files.tensors, generator)

    @property
    def weight_bytes(self) -> int:
        """Bytes of the packed weights, shared by every engine of this model."""
        return self._model.weight_bytes

    @property
    def makes_hints(self) -> bool:
        return self._model.makes_hints

    def engine(self) -> NativeEngine:
        """A new stream of this model, from zeroed state."""
        return NativeEngine(self)


class NativeEngine:
    """A streaming engine (one stream) of a small, boosted or large model."""

    def __init__(
        self,
        config: ModelConfig | NativeModel,
        tensors: dict[str, np.ndarray] | None = None,
        hint_generator: dict[str, np.ndarray] | None = None,
    ):
        """From a config and its tensors (a model of its own), or from a shared
        `NativeModel` alone. `hint_generator`: see NativeModel."""
        if isinstance(config, NativeModel):
            if tensors is not None or hint_generator is not None:
                raise ValueError("an engine of a NativeModel takes no tensors of its own")
            model = config
        elif tensors is None:
            raise ValueError("NativeEngine needs a config and its tensors, or a NativeModel")
        else:
            model = NativeModel(config, tensors, hint_generator)
        self.model = model
        self.config = model.config
        self._engine = _native.Engine(model._model)
        net = model.config.net
        self.channels, self.sources = net.channels, net.sources
        self.hint_channels = model.hint_channels
        self._out = np.zeros((net.sources, net.channels, CHUNK), np.float32)
        self._hint_out = np.zeros((self.hint_channels, N_BINS), np.float32)

    @classmethod
    def from_folder(
        cls, path: str | os.PathLike, hints_for: str | os.PathLike | None = None
    ) -> NativeEngine:
        """Load a model folder. For a large model, `hints_for` names the boosted
        model folder whose hint generator it should run."""
        return cls(NativeModel.from_folder(path, hints_for))

    @property
    def state_bytes(self) -> int:
        """Bytes of this stream's own state and scratch (the weights not counted)."""
        return self._engine.state_bytes

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

    @property
    def any_delay(self) -> bool:
        """A boosted model that takes each hint with its age (process_aged)."""
        b = self.config.boost
        return b is not None and b.any_delay

    def process_aged(
        self, chunk: np.ndarray, hints: np.ndarray, ages: np.ndarray | list[int]
    ) -> np.ndarray:
        """Any-delay model: chunk [M, 128] and the hints that arrived now, [K, C_h, 97],
        each made from the chunk ages[k] chunks before this one -> a new [S, M, 128]."""
        self._engine.process_aged_into(chunk, hints, np.asarray(ages, np.int32), self._out)
        return self._out.copy()

    def process_aged_into(
        self, chunk: np.ndarray, hints: np.ndarray, ages: np.ndarray, out: np.ndarray
    ) -> None:
        """Allocation-free form of process_aged (ages int32)."""
        self._engine.process_aged_into(chunk, hints, ages, out)

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
