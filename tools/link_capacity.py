"""How many real-time hint streams one `kboost-rt serve` process sustains.

Starts a server (paper-size large model and boosted model, random weights; the
cost does not depend on the weights) and, for each stream count, that many
devices in threads, each sending one chunk per 8 ms for --seconds and taking
hints at delay d. Prints the share of hints that were on time.

    .venv/bin/python tools/link_capacity.py --streams 1,2,4,6,8 --seconds 5
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from kboost_rt.client import HintClient
from kboost_rt.config import PAPER_BOOSTED, PAPER_LARGE
from kboost_rt.model_files import random_weights, save_model_files
from kboost_rt.signal_path import CHUNK, SAMPLE_RATE


def device(address, seconds, delay, results, index):
    client = HintClient(address, "boosted", 2, delay)
    client.connect()
    chunks = int(seconds * SAMPLE_RATE / CHUNK)
    x = (0.1 * np.random.default_rng(index).standard_normal((2, CHUNK))).astype(np.float32)
    start = time.monotonic()
    for t in range(chunks):
        wait = start + (t + 1) * CHUNK / SAMPLE_RATE - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        client.send_chunk(t, x)
        client.take_hint(t)
    time.sleep(0.1)
    results[index] = client.stats()
    client.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", default="1,2,4,6,8")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--delay", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        boosted = dataclasses.replace(
            PAPER_BOOSTED,
            large_model="large",
            boost=dataclasses.replace(PAPER_BOOSTED.boost, delay=args.delay),
        )
        save_model_files(root / "boosted", boosted, random_weights(boosted))
        save_model_files(root / "large", PAPER_LARGE, random_weights(PAPER_LARGE))
        cli = str(Path(sys.executable).parent / "kboost-rt")
        server = subprocess.Popen(
            [
                cli,
                "serve",
                "--model",
                str(root / "boosted"),
                "--port",
                "0",
                "--max-streams",
                "64",
                "--max-streams-per-address",
                "64",
                "--opens-per-second",
                "100",
                "--report-every",
                "0",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        host, port = re.search(r"on ([\d.]+):(\d+)", server.stdout.readline()).groups()
        print(
            f"{'streams':>7} {'hints on time':>14} {'late':>6} {'lost':>6} "
            f"{'median RTT (chunks)':>20}"
        )
        for n in [int(s) for s in args.streams.split(",")]:
            results: dict = {}
            threads = [
                threading.Thread(
                    target=device, args=((host, int(port)), args.seconds, args.delay, results, i)
                )
                for i in range(n)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            needed = sum(s.on_time + s.lost for s in results.values())
            on_time = sum(s.on_time for s in results.values())
            late = sum(s.late for s in results.values())
            lost = sum(s.lost for s in results.values())
            rtt = float(np.median([s.rtt_chunks for s in results.values()]))
            print(
                f"{n:>7} {100 * on_time / needed:>13.1f}% {late:>6} {lost:>6} {rtt:>20.1f}",
                flush=True,
            )
        server.terminate()
        server.communicate(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
