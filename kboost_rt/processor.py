"""The engine loop: one object for live audio, files and tests.

`Processor.process(chunk)` sends the chunk to the hint server (if any), takes
the hint of chunk t - d, runs the native step (and the small-model fallback,
which takes over while hints stay away) and applies the live parameters. It
returns the per-source model output and the monitor mix. The mix is what
`kboost-rt live` plays; `kboost-rt process --mix` writes the same samples.
Parameter changes ramp linearly over one chunk (8 ms), so gain,
wet/dry, source select and bypass change without zipper noise or clicks.
"""

from __future__ import annotations

import numpy as np

from .client import HintClient
from .engine import NativeEngine
from .fallback import SmallModelFallback
from .params import LiveParams, Params
from .signal_path import CHUNK, LOOKAHEAD


class Processor:
    def __init__(
        self,
        engine: NativeEngine,
        client: HintClient | None = None,
        params: LiveParams | None = None,
        fallback: SmallModelFallback | None = None,
    ):
        self.engine = engine
        self.client = client
        self.fallback = fallback
        self.sources, self.channels = engine.sources, engine.channels
        self.params = params or LiveParams(sources=self.sources)
        self.t = 0
        self.hints_used = 0
        self._sources = np.zeros((self.sources, self.channels, CHUNK), np.float32)
        self._mix = np.zeros((self.channels, CHUNK), np.float32)
        # The model's output lags its input by LOOKAHEAD samples; so does the dry path.
        self._dry_line = np.zeros((self.channels, LOOKAHEAD + CHUNK), np.float32)
        self._ramp = (np.arange(1, CHUNK + 1, dtype=np.float32) / CHUNK)[None, :]
        self._last = self._targets(self.params.snapshot())

    def _targets(self, p: Params) -> tuple[float, float, np.ndarray]:
        weights = (
            np.ones(self.sources, np.float32)
            if p.source == 0
            else np.eye(self.sources, dtype=np.float32)[p.source - 1]
        )
        wet = 0.0 if p.bypass else p.wet
        return 10.0 ** (p.gain_db / 20.0), wet, weights

    def process(self, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """chunk [M, 128] float32 -> (sources [S, M, 128], mix [M, 128]); both arrays are
        reused by the next call (copy them to keep them)."""
        p = self.params.snapshot()
        hint = None
        if self.client is not None:
            self.client.send_chunk(self.t, chunk)
            hint = self.client.take_hint(self.t)  # always taken, so accounting stays exact
        arrived = hint is not None  # the fallback watches the link, not the boost switch
        if not p.boost:
            hint = None
        if hint is not None:
            self.hints_used += 1
        self.engine.process_into(chunk, hint, self._sources)
        if self.fallback is not None:
            self.fallback.apply(chunk, arrived, self._sources)

        self._dry_line[:, :LOOKAHEAD] = self._dry_line[:, CHUNK:]
        self._dry_line[:, LOOKAHEAD:] = chunk
        dry = self._dry_line[:, :CHUNK]

        gain, wet, weights = self._targets(p)
        last_gain, last_wet, last_weights = self._last
        r = self._ramp
        mixed = np.zeros((self.channels, CHUNK), np.float32)
        for s in range(self.sources):
            w = last_weights[s] + (weights[s] - last_weights[s]) * r
            mixed += w * self._sources[s]
        wet_ramp = last_wet + (wet - last_wet) * r
        gain_ramp = last_gain + (gain - last_gain) * r
        np.multiply(gain_ramp, wet_ramp * mixed + (1.0 - wet_ramp) * dry, out=self._mix)
        self._last = (gain, wet, weights)
        self.t += 1
        return self._sources, self._mix
