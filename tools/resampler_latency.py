"""What resampling adds to the live path's latency, side by side: soxr's
streaming resamplers (python-soxr, each quality) and kboost-rt's polyphase
resamplers (minimum and linear phase; at 44.1 kHz also with the model at
exactly 16 kHz rather than locked to the buffers), each around an identity
model with the chunk FIFOs `live` uses, at the device rates and buffers
`live` opens.

Added latency is the peak of the round trip's impulse response (device ->
16 kHz chunks -> device). Prints a table; `--json` writes it.

    python tools/resampler_latency.py --json resampler-latency.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import soxr

from kboost_rt.resampling import added_latency_s, locks_chunks
from kboost_rt.signal_path import CHUNK, SAMPLE_RATE

DEVICES = [(48000, 384), (44100, 353), (44100, 351)]


def soxr_latency_s(rate: int, frames: int, quality: str) -> float:
    """The same measurement for two soxr.ResampleStream resamplers with chunk FIFOs
    and just enough starting silence never to run dry (found on silence first)."""

    def pair():
        return (
            soxr.ResampleStream(rate, SAMPLE_RATE, 1, "float32", quality=quality),
            soxr.ResampleStream(SAMPLE_RATE, rate, 1, "float32", quality=quality),
        )

    down, up = pair()
    pending = have = deficit = 0
    silence = np.zeros(frames, np.float32)
    # A whole cycle of buffers against chunks (as csrc/resampler.cpp), after 2 s.
    g = math.gcd(rate, SAMPLE_RATE)
    cycle = math.lcm(SAMPLE_RATE // g, CHUNK) // (SAMPLE_RATE // g) * (rate // g)
    for _ in range(math.lcm(cycle, frames) // frames + 2 * rate // frames):
        pending += len(down.resample_chunk(silence))
        while pending >= CHUNK:
            pending -= CHUNK
            have += len(up.resample_chunk(np.zeros(CHUNK, np.float32)))
        have -= frames
        deficit = max(deficit, -have)
    down, up = pair()
    n = frames * (rate // (2 * frames) + 2)
    x = np.zeros(2 * n, np.float32)
    x[n] = 1.0
    inq = np.zeros(0, np.float32)
    outq = np.zeros(deficit, np.float32)
    y = np.zeros_like(x)
    for i in range(0, len(x) - frames + 1, frames):
        inq = np.concatenate([inq, down.resample_chunk(x[i : i + frames])])
        while len(inq) >= CHUNK:
            chunk, inq = inq[:CHUNK], inq[CHUNK:]
            outq = np.concatenate([outq, up.resample_chunk(chunk)])
        y[i : i + frames], outq = outq[:frames], outq[frames:]
    return (int(np.argmax(np.abs(y))) - n) / rate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--json", help="write the table here")
    args = ap.parse_args()
    rows = []
    for rate, frames in DEVICES:
        for phase in ("minimum", "linear"):
            modes = [False, True] if locks_chunks(rate) else [False]
            for exact in modes:
                ms = 1000 * added_latency_s(rate, frames, phase, exact)
                label = f"kboost-rt {phase} phase" + (", exact 16 kHz" if exact else "")
                rows.append({"resampler": label, "rate": rate, "frames": frames,
                             "added_latency_ms": ms})  # fmt: skip
        for quality in ("QQ", "LQ", "MQ", "HQ"):
            ms = 1000 * soxr_latency_s(rate, frames, quality)
            rows.append({"resampler": f"soxr {quality}", "rate": rate, "frames": frames,
                         "added_latency_ms": ms})  # fmt: skip
    print(f"{'resampler':<42}{'rate':>7}{'frames':>8}{'added ms':>10}")
    for r in rows:
        print(f"{r['resampler']:<42}{r['rate']:>7}{r['frames']:>8}{r['added_latency_ms']:>10.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
