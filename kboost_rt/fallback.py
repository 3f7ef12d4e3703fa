"""Small-model fallback: when hints stop coming, the small model takes over.

A boosted model trained with hints on most of its clips is a worse small
model than the small model itself once every hint is lost (separate d1:
0.42 dB below it on val, docs/results.md). `SmallModelFallback` runs the
task's small model beside the boosted one on every chunk, so its state is
always warm, and crossfades to its output over one chunk once `after`
chunks in a row have come without a hint; the first hint that arrives
crossfades back. The price is the small model's compute on every chunk.
`beside` sets one up only where it helps: where the two folders' validation
scores (made on the same clips) put the small model above the boosted model
without hints. The enhance boosted models, for one, beat the small model
even without hints, and keep running alone.

Both models were trained with a scale-invariant loss and, for `separate`, a
permutation-invariant one: each picks its own output level and talker order.
Spliced as they are, the output would jump in level and could swap talkers
between its channels. `OutputAligner` tracks, over about a second of
boosted output, the gain and the order that map the small model's outputs
onto the boosted model's, and the fallback plays the small model through
it, with the mapping held while it plays.
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
ALIGN_CHUNKS = 125  # time constant of the alignment statistics: 1 s


def helps(boosted_notes: dict, small_notes: dict) -> bool:
    """Whether the small model scored above the boosted model without hints in
    the validation their training recorded (`kboost-rt train` scores every
    model of a task on the same clips). Without those scores: yes."""
    try:
        alone = boosted_notes["validation"]["si_sdr_i_no_hints"]
        small = small_notes["validation"]["si_sdr_i"]
    except (KeyError, TypeError):
        return True
    return small > alone


class OutputAligner:
    """Maps one model's outputs [S, M, 128] onto a reference model's: output i
    becomes gain_i x other[order_i], the least-squares fit over the recent past."""

    def __init__(self, sources: int, chunks: float = ALIGN_CHUNKS):
        self.decay = float(np.exp(-1.0 / chunks))
        self.cross = np.zeros((sources, sources))  # [i, j]: decayed sum of reference_i * other_j
        self.energy = np.zeros(sources)  # [j]: decayed sum of other_j ** 2
        self.orders = [(0,)] if sources == 1 else [(0, 1), (1, 0)]
        self._mapping = None  # fitted from the sums on first use after they change

    def reset(self) -> None:
        self.cross[:] = 0.0
        self.energy[:] = 0.0
        self._mapping = None

    def update(self, reference: np.ndarray, other: np.ndarray) -> None:
        n = len(self.energy)
        r, o = reference.reshape(n, -1), other.reshape(n, -1)
        self.cross *= self.decay
        self.cross += r @ o.T
        self.energy *= self.decay
        self.energy += np.einsum("jn,jn->j", o, o)
        self._mapping = None

    def mapping(self) -> tuple[tuple[int, ...], np.ndarray]:
        """(order, gains); the identity before the other model has made any sound."""
        if self._mapping is None:
            self._mapping = self._fit()
        return self._mapping

    def _fit(self) -> tuple[tuple[int, ...], np.ndarray]:
        if not np.all(self.energy > 1e-12):
            return self.orders[0], np.ones(len(self.energy))

        def explained(order):  # reference energy the fitted gains account for
            return sum(self.cross[i, j] ** 2 / self.energy[j] for i, j in enumerate(order))

        order = max(self.orders, key=explained)
        return order, np.array([self.cross[i, j] / self.energy[j] for i, j in enumerate(order)])

    def apply(self, other: np.ndarray, out: np.ndarray) -> None:
        order, gains = self.mapping()
        for i, j in enumerate(order):
            np.multiply(other[j], gains[i], out=out[i])


class SmallModelFallback:
    def __init__(self, engine: NativeEngine, after: int = FALLBACK_AFTER):
        if engine.config.role != "small":
            raise ValueError(f"the fallback must be a small model, not a {engine.config.role} one")
        if after < 1:
            raise ValueError(f"fallback after {after} chunks: must be 1 or more")
        self.engine, self.after = engine, after
        self.aligner = OutputAligner(engine.sources)
        self.missing = 0  # chunks in a row without a hint
        self.weight = 0.0  # the small model's share of the output at the end of the last chunk
        self.chunks_on_small = 0
        self._small = np.zeros((engine.sources, engine.channels, CHUNK), np.float32)
        self._aligned = np.zeros_like(self._small)
        self._ramp = np.arange(1, CHUNK + 1, dtype=np.float32) / CHUNK

    @classmethod
    def beside(cls, boosted: str | os.PathLike, after: int = FALLBACK_AFTER):
        """The fallback for a boosted model folder: `<task>-small` in the same parent
        folder; None if `after` is 0 (never), if there is none, or if it would not
        help (`helps`)."""
        from .engine import NativeEngine

        if after == 0:
            return None
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
        if not helps(cfg.notes, files.config.notes):
            return None
        return cls(NativeEngine(files.config, files.tensors), after)

    def reset(self) -> None:
        self.engine.reset()
        self.aligner.reset()
        self.missing, self.weight, self.chunks_on_small = 0, 0.0, 0

    def apply(self, chunk: np.ndarray, hint_arrived: bool, out: np.ndarray) -> None:
        """Run the small model on `chunk` and blend its output into `out`, the boosted
        model's output [S, M, 128] for the same chunk, in place."""
        self.engine.process_into(chunk, None, self._small)
        self.missing = 0 if hint_arrived else self.missing + 1
        target = 1.0 if self.missing >= self.after else 0.0
        if target == 0.0:
            self.aligner.update(out, self._small)  # learn the mapping while boosted plays
        else:
            self.chunks_on_small += 1
        if target == self.weight == 0.0:
            return
        self.aligner.apply(self._small, self._aligned)
        if target == self.weight:
            out[...] = self._aligned
        else:
            w = self.weight + (target - self.weight) * self._ramp
            out += w * (self._aligned - out)
        self.weight = target
