"""Side by side on one JACK server: `kboost-rt live` and a null PyAudio
pass-through client (a callback that copies its input and does nothing else).

Starts jackd (dummy backend) at the given rate and period, then both clients
at once for `--seconds`, optionally with busy loops loading every core, and
prints each one's xruns and callback times (p50 / p99 / p99.9 / max) next to
the period; `--json` writes them. Both clients see the same server, so an
xrun the server has counts for both: what matters is how many more the host
has than the null client.

    python tools/live_soak.py --seconds 30 --json soak-16k.json
    python tools/live_soak.py --rate 48000 --period 256 --busy 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

CLI = str(Path(sys.executable).parent / "kboost-rt")

NULL_CLIENT = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    import pyaudio
    rate, frames, seconds, out = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    times, counts = [], {"callbacks": 0, "xruns": 0}
    def callback(data, n, info, flags):
        start = time.perf_counter()
        counts["callbacks"] += 1
        counts["xruns"] += bool(flags)
        times.append(1e6 * (time.perf_counter() - start))
        return data, pyaudio.paContinue
    pa = pyaudio.PyAudio()
    s = pa.open(format=pyaudio.paFloat32, channels=2, rate=rate, input=True, output=True,
                frames_per_buffer=frames, stream_callback=callback)
    time.sleep(seconds)
    s.stop_stream(); s.close(); pa.terminate()
    t = np.array(times or [0.0])
    counts["callback_us"] = {"p50": float(np.median(t)), "p99": float(np.percentile(t, 99)),
                             "p999": float(np.percentile(t, 99.9)), "max": float(t.max())}
    counts["period_us"] = 1e6 * frames / rate
    open(out, "w").write(json.dumps(counts))
    """
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--rate", type=int, default=16000, help="jackd sample rate (default 16000)")
    ap.add_argument("--period", type=int, default=128, help="jackd frames per period (default 128)")
    ap.add_argument("--busy", type=int, default=0, help="busy loops to run beside (default 0)")
    ap.add_argument(
        "--model",
        help="model for live (default: the shipped separate-boosted, or separate-small with "
        "--no-server)",
    )
    ap.add_argument("--no-server", action="store_true", help="live without --local-server")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    jackd = shutil.which("jackd")
    if jackd is None:
        print("jackd is not installed (tools/setup_system.sh installs jackd2)", file=sys.stderr)
        return 2
    name = f"kboost-soak-{os.getpid()}"
    env = dict(os.environ, JACK_DEFAULT_SERVER=name)
    server = subprocess.Popen(
        [jackd, "--no-realtime", "-n", name, "-d", "dummy", "-r", str(args.rate), "-p",
         str(args.period)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    busy = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            time.sleep(1.0)
            busy = [
                subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(args.busy)
            ]
            null_json = Path(tmp) / "null.json"
            live_json = Path(tmp) / "live.json"
            live_cmd = [CLI, "live", "--seconds", str(args.seconds), "--quiet", "--stats-json",
                        str(live_json)]  # fmt: skip
            live_cmd += ["--model", args.model] if args.model else ["--task", "separate"]
            if not args.no_server:
                live_cmd += ["--local-server"]
            null = subprocess.Popen(
                [sys.executable, "-c", NULL_CLIENT, str(args.rate), str(args.period),
                 str(args.seconds + 2), str(null_json)],
                env=env, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            live = subprocess.run(live_cmd, env=env, capture_output=True, text=True)
            null.wait(timeout=args.seconds + 30)
            if live.returncode != 0:
                print(live.stdout + live.stderr, file=sys.stderr)
                return 1
            host = json.loads(live_json.read_text())
            baseline = json.loads(null_json.read_text())
        finally:
            for b in busy:
                b.kill()
            server.terminate()
            server.wait(timeout=10)
    rows = [("kboost-rt live", host["live"]), ("null pass-through", baseline)]
    print(
        f"jackd dummy {args.rate} Hz / {args.period} frames, {args.seconds:g} s, "
        f"{args.busy} busy loop(s); live's native callback got real-time priority: "
        f"{host['live'].get('realtime')}"
    )
    print(f"{'client':<20}{'xruns':>7}{'p50 us':>9}{'p99 us':>9}{'p99.9 us':>10}{'max us':>9}"
          f"{'period us':>11}")  # fmt: skip
    for label, r in rows:
        t = r["callback_us"]
        print(
            f"{label:<20}{r['xruns']:>7}{t['p50']:>9.0f}{t['p99']:>9.0f}{t['p999']:>10.0f}"
            f"{t['max']:>9.0f}{r['period_us']:>11.0f}"
        )
    if host.get("link"):
        s = host["link"]
        print(f"hints: {s['on_time']} on time, {s['late']} late, {s['lost']} lost")
    if args.json:
        report = {
            "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
            "jack": {"rate": args.rate, "period": args.period},
            "seconds": args.seconds,
            "busy_loops": args.busy,
            "results": [{"client": label, **r} for label, r in rows],
            "link": host.get("link"),
        }
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
