"""An honest hint stream under a flood from another process.

Starts a keyed `kboost-rt serve` (paper-size boosted model, the shipped large
model's size, random weights: the cost does not depend on them), an honest
device in this process (key 2) sending one chunk per 8 ms, and an attacker
process (key 1) sending --rate datagrams a second for --seconds: random
garbage (half of it with our header), replays of the honest stream's own
captured packets, HELLOs with a forged MAC, and the chunks of a stream it
opened properly, far over real time (when the server drops that stream, the
attacker keeps asking to reopen it). Prints, and writes with --json, the
honest stream's hints on time / late / lost and round trip, what the attacker
sent and the CPU it used, and what the server counted.

    .venv/bin/python tools/link_flood.py --rate 20000 --seconds 10 --json flood.json

`attack` runs only the attacker (tests/test_link_security.py uses it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from kboost_rt import protocol as p
from kboost_rt.client import HintClient
from kboost_rt.config import PAPER_BOOSTED, PAPER_LARGE
from kboost_rt.loadtest import DeviceStream, Target
from kboost_rt.model_files import random_weights, save_model_files
from kboost_rt.signal_path import CHUNK, SAMPLE_RATE

MODEL = "flood-boosted-d3"
DELAY = 3
KEYS = {1: bytes([0x11]) * 32, 2: bytes([0x22]) * 32}
HELLO = p.Hello(MODEL, 2, DELAY, p.HintEncoding.INT8, p.SampleFormat.INT16)


# ---- The attacker --------------------------------------------------------------


class Attacker:
    def __init__(
        self, server: tuple[str, int], key_id: int, key: bytes, captures: list[bytes], model: str
    ):
        self.server, self.key_id, self.key = server, key_id, key
        self.target = Target(model, 2, DELAY, p.HintEncoding.INT8, (key_id, key))
        self.captures = captures
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.stream: DeviceStream | None = None  # the stream it opened properly
        self.seq = 0
        self.counts: dict[str, int] = {}
        self.refusals: list[str] = []
        self.welcomes = 0  # streams it opened
        self.rng = random.Random(1)

    def _send(self, kind: str, data: bytes) -> None:
        try:
            self.sock.sendto(data, self.server)
            self.counts[kind] = self.counts.get(kind, 0) + 1
        except OSError:  # a full socket buffer: the attacker's loss
            self.counts["send_errors"] = self.counts.get("send_errors", 0) + 1

    def _open(self) -> bool:
        s = self.stream
        return s is not None and s.open and s.refused is None

    def _reopen(self) -> None:
        """A fresh stream each time, with the whole handshake."""
        if self.stream is not None:
            if self.stream.refused is not None:
                self.refusals.append(self.stream.refused)
            self.stream.sock.close()
        self.stream = DeviceStream(0, self.server, self.target)
        self.stream.send_hello()
        self.counts["hello"] = self.counts.get("hello", 0) + 1

    def read_replies(self) -> None:
        if self.stream is not None:
            was_open = self.stream.open
            self.stream.receive(time.monotonic())
            if self.stream.open and not was_open:
                self.welcomes += 1

    def one(self) -> None:
        """One datagram of the mix."""
        r = self.rng.random()
        if r < 0.4:
            data = os.urandom(self.rng.randrange(0, 1400))
            if r < 0.2:
                data = p.MAGIC + bytes([p.VERSION, self.rng.randrange(1, 8)]) + data
            self._send("garbage", data)
        elif r < 0.6 and self.captures:
            self._send("replayed", self.rng.choice(self.captures))
        elif r < 0.7:
            hello = dataclasses.replace(HELLO, model=self.target.model)
            forged = p.encode(
                p.Packet(p.Type.HELLO, self.rng.getrandbits(32), 0, hello.pack(), self.key_id),
                self.key,
            )
            self._send("forged_hello", forged[:-1] + bytes([forged[-1] ^ 0xFF]))
        elif self._open():
            self.stream.send(p.Type.AUDIO, self.seq, self.stream.audio)
            self.counts["over_rate"] = self.counts.get("over_rate", 0) + 1
            self.seq += 1
        else:
            self._send("garbage", os.urandom(64))

    def run(self, rate: float, seconds: float) -> None:
        start = time.monotonic()
        last_hello = float("-inf")
        sent = 0
        while (now := time.monotonic()) - start < seconds:
            if not self._open() and now - last_hello > 0.5:
                last_hello = now
                self._reopen()
            self.read_replies()
            for _ in range(50):
                self.one()
            sent += 50
            ahead = start + sent / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)

    def report(self, seconds: float) -> dict:
        if self.stream is not None and self.stream.refused is not None:
            self.refusals.append(self.stream.refused)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        total = sum(v for k, v in self.counts.items() if k != "send_errors")
        return {
            "sent": self.counts,
            "datagrams_per_second": total / seconds,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "refusals": self.refusals[:5],
            "refusal_count": len(self.refusals),
            "streams_opened": self.welcomes,
        }


def cmd_attack(args: argparse.Namespace) -> int:
    host, port = args.server.rsplit(":", 1)
    captures = [bytes.fromhex(line) for line in Path(args.captures).read_text().split()]
    attacker = Attacker(
        (host, int(port)), args.key_id, bytes.fromhex(args.key), captures, args.model
    )
    attacker.run(args.rate, args.seconds)
    Path(args.out).write_text(json.dumps(attacker.report(args.seconds)))
    return 0


def start_attack(
    server: tuple[str, int], captures: list[bytes], rate: float, seconds: float, work: Path
) -> tuple[subprocess.Popen, Path]:
    """The attacker in its own process, with key 1 and these captured datagrams."""
    (work / "captures").write_text("\n".join(c.hex() for c in captures))
    out = work / "attack.json"
    cmd = [sys.executable, __file__, "attack", "--server", f"{server[0]}:{server[1]}"]
    cmd += ["--key-id", "1", "--key", KEYS[1].hex(), "--captures", str(work / "captures")]
    cmd += ["--rate", str(rate), "--seconds", str(seconds), "--out", str(out)]
    return subprocess.Popen(cmd), out


# ---- The benchmark ---------------------------------------------------------------


def write_models(root: Path) -> None:
    boosted = dataclasses.replace(
        PAPER_BOOSTED,
        large_model="flood-large",
        boost=dataclasses.replace(PAPER_BOOSTED.boost, delay=DELAY),
    )
    save_model_files(root / MODEL, boosted, random_weights(boosted, 1))
    large = dataclasses.replace(
        PAPER_LARGE, net=dataclasses.replace(PAPER_LARGE.net, dim=32, hidden=32, attention_heads=4)
    )
    save_model_files(root / "flood-large", large, random_weights(large, 2))
    (root / "keys").write_text("".join(f"{k} {v.hex()}\n" for k, v in KEYS.items()))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def honest_stream(client: HintClient, first: int, chunks: int) -> None:
    x = (0.1 * np.random.default_rng(0).standard_normal((2, CHUNK))).astype(np.float32)
    start = time.monotonic()
    for i in range(chunks):
        time.sleep(max(0.0, start + (i + 1) * CHUNK / SAMPLE_RATE - time.monotonic()))
        client.send_chunk(first + i, x)
        client.take_hint(first + i)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command")
    attack = sub.add_parser("attack", help="only the attacker")
    attack.add_argument("--server", required=True, metavar="HOST:PORT")
    attack.add_argument("--key-id", type=int, required=True)
    attack.add_argument("--key", required=True, help="hex secret")
    attack.add_argument("--captures", required=True, help="captured datagrams, hex, one a line")
    attack.add_argument("--model", default=MODEL, help="the boosted model to open a stream of")
    attack.add_argument("--rate", type=float, default=20000.0)
    attack.add_argument("--seconds", type=float, default=10.0)
    attack.add_argument("--out", required=True, help="JSON report")
    ap.add_argument("--rate", type=float, default=20000.0, help="attack datagrams per second")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if args.command == "attack":
        return cmd_attack(args)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_models(root)
        cli = str(Path(sys.executable).parent / "kboost-rt")
        server = subprocess.Popen(
            [cli, "serve", "--model", str(root / MODEL), "--key-file", str(root / "keys")]
            + ["--port", "0", "--report-every", "0", "--max-load", "1000"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        line = server.stdout.readline()
        host, port = re.search(r"on ([\d.]+):(\d+)", line).groups()
        address = (host, int(port))
        client = HintClient(address, MODEL, 2, DELAY, p.HintEncoding.INT8, key=(2, KEYS[2]))
        client.connect()
        warm = int(SAMPLE_RATE / CHUNK)  # one second before the attack, to capture from
        honest_stream(client, 0, warm)
        audio = p.pack_audio(np.zeros((2, CHUNK), np.float32), p.SampleFormat.INT16)
        captures = [
            p.encode(p.Packet(p.Type.AUDIO, client.stream_id, s, audio, 2), KEYS[2])
            for s in range(warm)
        ]
        before = client.stats()
        server_cpu = cpu_seconds(server.pid)
        attacker, report = start_attack(address, captures, args.rate, args.seconds, root)
        honest_stream(client, warm, int(args.seconds * SAMPLE_RATE / CHUNK))
        client.wait_for_replies(1.0)
        after = client.stats()
        server_cpu = cpu_seconds(server.pid) - server_cpu
        attacker.wait(timeout=60)
        attack_report = json.loads(report.read_text())
        client.close()
        time.sleep(0.2)
        server.terminate()
        out = server.communicate(timeout=10)[0]
    summary = re.search(r"shut down: (.*)", out)
    closed = re.search(rf"stream {client.stream_id:08x} from .* closed: (\{{.*\}})", out)
    on_time = after.on_time - before.on_time
    late, lost = after.late - before.late, after.lost - before.lost
    needed = on_time + lost
    result = {
        "rate_asked": args.rate,
        "seconds": args.seconds,
        "honest": {
            "on_time": on_time,
            "late": late,
            "lost": lost,
            "on_time_share": on_time / needed if needed else float("nan"),
            "rtt_chunks_median": after.rtt_chunks,
            "rtt_chunks_max": after.max_rtt_chunks,
            "server_side": closed.group(1) if closed else None,
        },
        "attacker": attack_report,
        "server": {
            "summary": summary.group(1) if summary else out[-500:],
            "cpu_share": server_cpu / args.seconds,
        },
        "machine": {"cpus": os.cpu_count()},
    }
    a = attack_report
    print(f"attacker: {a['datagrams_per_second']:.0f} datagrams/s ({a['sent']}), ", end="")
    print(f"its CPU {a['cpu_seconds'] / args.seconds:.0%} of a core")
    print(f"  refused {a['refusal_count']} times, first: {a['refusals'][:2]}")
    print(f"server: {result['server']['summary']}")
    print(f"  CPU {result['server']['cpu_share']:.0%} of a core during the attack")
    print(
        f"honest stream: {on_time} on time, {late} late, {lost} lost "
        f"({100 * result['honest']['on_time_share']:.1f} % on time), round trip median "
        f"{after.rtt_chunks:.1f} chunks, max {after.max_rtt_chunks}"
    )
    print(f"  server side: {result['honest']['server_side']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
