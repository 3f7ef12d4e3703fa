"""Records what the processor makes of one scripted stream, for the regression
test `tests/test_processor.py::test_processor_matches_the_recorded_reference`.

Random-weight paper-size boosted and small models (fixed seeds, so shipped
model changes do not move it), a speech-like input, a hint schedule with a
loss burst long enough for the small-model fallback to take over and come
back, random losses, and parameter changes on the way. The reference was
recorded with the processor as it was before it moved into C++; rerun this
only on purpose (`python tools/record_processor_reference.py`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kboost_rt.config import PAPER_BOOSTED, PAPER_SMALL
from kboost_rt.signal_path import CHUNK, N_BINS

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "processor_reference.npz"
CHUNKS = 160
FALLBACK_AFTER = 5
# chunk -> parameter changes made before that chunk
CHANGES = {
    90: {"gain_db": -6.0, "wet": 0.7},
    105: {"source": 1},
    115: {"bypass": True},
    122: {"bypass": False, "source": 0},
    130: {"boost": False},
    140: {"boost": True, "gain_db": 3.0, "wet": 1.0},
}


def scripted_stream():
    """-> (input chunks [N, 2, 128], hints [N, C_h, 97], arrived [N] bool): hint j is
    there at chunk j + d when arrived[j]."""
    rng = np.random.default_rng(11)
    t = np.arange(CHUNKS * CHUNK) / 16000
    voice = np.sin(2 * np.pi * (180 + 40 * np.sin(2 * np.pi * 3 * t)) * t)
    x = np.stack([0.3 * voice, 0.2 * np.roll(voice, 37)]) + 0.05 * rng.standard_normal((2, len(t)))
    chunks = x.astype(np.float32).reshape(2, CHUNKS, CHUNK).transpose(1, 0, 2).copy()
    c_h = PAPER_BOOSTED.boost.hint_channels
    hints = (0.5 * rng.standard_normal((CHUNKS, c_h, N_BINS))).astype(np.float32)
    arrived = rng.random(CHUNKS) > 0.2
    arrived[30:60] = False  # a burst: the fallback takes over, then hands back
    return chunks, hints, arrived


def models():
    from kboost_rt.model_files import random_weights

    small = PAPER_SMALL
    return (PAPER_BOOSTED, random_weights(PAPER_BOOSTED, 7)), (small, random_weights(small, 8))


def main() -> None:
    from kboost_rt.engine import NativeEngine
    from kboost_rt.fallback import SmallModelFallback
    from kboost_rt.params import LiveParams
    from kboost_rt.processor import Processor

    chunks, hints, arrived = scripted_stream()
    (bcfg, btensors), (scfg, stensors) = models()
    delay = bcfg.boost.delay

    class Schedule:  # the scripted hint source, with the client's two calls
        def send_chunk(self, seq, chunk):
            pass

        def take_hint(self, t):
            j = t - delay
            return hints[j] if j >= 0 and arrived[j] else None

    live = LiveParams(sources=2)
    fallback = SmallModelFallback(NativeEngine(scfg, stensors), FALLBACK_AFTER)
    processor = Processor(NativeEngine(bcfg, btensors), Schedule(), live, fallback)
    sources = np.zeros((CHUNKS, 2, 2, CHUNK), np.float32)
    mixes = np.zeros((CHUNKS, 2, CHUNK), np.float32)
    for t in range(CHUNKS):
        if t in CHANGES:
            live.set(**CHANGES[t])
        s, m = processor.process(chunks[t])
        sources[t], mixes[t] = s, m
    np.savez_compressed(OUT, sources=sources, mixes=mixes)
    print(f"wrote {OUT} (chunks on small: {fallback.chunks_on_small})")


if __name__ == "__main__":
    main()
