"""What N streams of the paper-size large model cost on one thread, stepped the
way the hint server steps them (round robin, one chunk each), with the weights
shared by every stream (as `serve` runs them) or packed once per stream (as it
did before the model / state split). Also the machine's single-thread sgemm
rate, so that a step's cost reads against the arithmetic it needs.

    python tools/stream_scaling.py --streams 1,4,16 --seconds 2 --json out.json

Pause other work while it runs: it measures time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: one thread's sgemm
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from kboost_rt.config import PAPER_BOOSTED, PAPER_LARGE  # noqa: E402
from kboost_rt.costs import macs_per_chunk  # noqa: E402
from kboost_rt.engine import NativeModel  # noqa: E402
from kboost_rt.model_files import random_weights  # noqa: E402
from kboost_rt.signal_path import CHUNK  # noqa: E402


def sgemm_gflops(n: int = 768, repeats: int = 15) -> float:
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    b = a.T.copy()
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(f) -> float:
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def round_robin(models: list[NativeModel], streams: int, seconds: float, rng) -> list[float]:
    """Microseconds per stream-step, one value per round over all streams."""
    engines = [models[i % len(models)].engine() for i in range(streams)]
    chunks = (0.1 * rng.standard_normal((64, 2, CHUNK))).astype(np.float32)
    out = np.zeros((2, 2, CHUNK), np.float32)
    hint = np.zeros((PAPER_BOOSTED.boost.hint_channels, 97), np.float32)
    rounds = max(3, int(seconds * 125))  # each stream gets `seconds` of audio
    per_step = []
    for r in range(rounds):
        start = time.perf_counter()
        for e in engines:
            e.process_into(chunks[r % 64], None, out, hint)
        per_step.append((time.perf_counter() - start) / streams * 1e6)
    return per_step[2:]  # the first rounds touch fresh memory


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", default="1,4,16", help="comma-separated stream counts")
    ap.add_argument("--seconds", type=float, default=2.0, help="audio per stream and count")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    counts = [int(c) for c in args.streams.split(",")]
    rng = np.random.default_rng(0)
    tensors = random_weights(PAPER_LARGE)
    generator = {
        k: v for k, v in random_weights(PAPER_BOOSTED).items() if k.startswith("hint_generator.")
    }
    shared = NativeModel(PAPER_LARGE, tensors, generator)
    macs = macs_per_chunk(PAPER_LARGE)["device"]
    gflops = sgemm_gflops()
    print(
        f"paper-size large: {macs / 1e6:.2f} M MACs a step; weights {shared.weight_bytes / 1e6:.2f}"
        f" MB, state {shared.engine().state_bytes / 1e6:.2f} MB a stream"
    )
    print(f"single-thread sgemm: {gflops:.1f} GFLOP/s -> {2 * macs / gflops / 1e3:.0f} us a step")
    print(
        f"{'streams':>7} {'shared us':>10} {'own us':>8} {'own/shared':>10} "
        f"{'GFLOP/s':>8} {'steps/s/core':>12}"
    )
    results = []
    for n in counts:
        row = {"streams": n}
        # Alternate the two layouts, so that a drift of the machine hits both.
        times: dict[str, list[float]] = {"shared": [], "own": []}
        for _ in range(2):
            for layout in ("shared", "own"):
                models = (
                    [shared]
                    if layout == "shared"
                    else [NativeModel(PAPER_LARGE, tensors, generator) for _ in range(n)]
                )
                times[layout] += round_robin(models, n, args.seconds / 2, rng)
        for layout, t in times.items():
            row[f"{layout}_us"] = statistics.median(t)
        row["gflops_shared"] = 2 * macs / row["shared_us"] / 1e3
        row["steps_per_core_second"] = 1e6 / row["shared_us"]
        results.append(row)
        print(
            f"{n:>7} {row['shared_us']:>10.1f} {row['own_us']:>8.1f} "
            f"{row['own_us'] / row['shared_us']:>10.2f} {row['gflops_shared']:>8.1f} "
            f"{row['steps_per_core_second']:>12.0f}"
        )
    print("(median over rounds of every stream stepping once; one thread)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"macs_per_step": macs, "sgemm_gflops": gflops, "results": results}, f, indent=1
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
