"""Live parameters: set from any thread, read by the audio thread without locks.

The control side replaces an immutable `Params` snapshot and passes it on
to whoever listens: the native processor stores it in atomics, which its
audio thread reads once per chunk (never the interpreter). Smoothing is the
processor's job (ramps over one chunk).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass

GAIN_DB_RANGE = (-60.0, 12.0)


@dataclass(frozen=True)
class Params:
    gain_db: float = 0.0  # output gain
    wet: float = 1.0  # 1: model output only, 0: the (latency-aligned) input only
    boost: bool = True  # use the hints; False runs the small model without them
    source: int = 0  # separation: 0 both (summed), 1 or 2 one of them
    bypass: bool = False  # the input, latency-aligned (crossfaded like wet = 0)

    def validated(self, sources: int = 2) -> Params:
        lo, hi = GAIN_DB_RANGE
        if not lo <= self.gain_db <= hi:
            raise ValueError(f"gain_db must be in [{lo:g}, {hi:g}], got {self.gain_db}")
        if not 0.0 <= self.wet <= 1.0:
            raise ValueError(f"wet must be in [0, 1], got {self.wet}")
        if self.source not in range(sources + 1):
            raise ValueError(f"source must be 0 (both) or 1..{sources}, got {self.source}")
        return self


NAMES = tuple(f.name for f in dataclasses.fields(Params))


class LiveParams:
    def __init__(self, initial: Params | None = None, sources: int = 2):
        self.sources = sources
        self._current = (initial or Params()).validated(sources)
        self._listeners: list[Callable[[Params], None]] = []
        self._lock = threading.Lock()  # one writer at a time (MIDI, the command line)

    def listen(self, listener: Callable[[Params], None]) -> None:
        """Call `listener(params)` now and on every change."""
        with self._lock:
            self._listeners.append(listener)
            listener(self._current)

    def snapshot(self) -> Params:
        """The current values (the audio thread calls this once per chunk)."""
        return self._current

    def set(self, **changes) -> Params:
        """Change some values; raises ValueError for unknown names or bad values."""
        unknown = sorted(set(changes) - set(NAMES))
        if unknown:
            raise ValueError(f"unknown parameter(s): {', '.join(unknown)}")
        with self._lock:
            new = dataclasses.replace(self._current, **changes).validated(self.sources)
            self._current = new
            for listener in self._listeners:
                listener(new)
        return new
