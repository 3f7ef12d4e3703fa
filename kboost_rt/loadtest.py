"""`kboost-rt loadtest`: how many real-time streams a hint server keeps on time.

For each stream count, a generator process of its own opens that many streams
over real UDP sockets (the whole handshake, cookie included), sends each one
chunk every 8 ms for the given seconds, and times every hint that comes back:
on time if it arrives before the chunk that needs it (its chunk + d) runs,
late if after, lost if never. One process with one event loop drives every
stream, so the generator's own CPU stays small and is reported. Without
`--server`, the server is a `kboost-rt serve` child with room for every
stream asked for, and its CPU is reported too.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import protocol as p
from .signal_path import CHUNK, SAMPLE_RATE

CHUNK_SECONDS = CHUNK / SAMPLE_RATE
GRACE = 0.5  # seconds to wait for the last hints


@dataclasses.dataclass
class Target:
    """What the generator's streams ask for."""

    model: str
    channels: int
    delay: int
    encoding: p.HintEncoding
    key: tuple[int, bytes] | None = None
    max_age: int = 0  # an any-delay model: a hint is on time up to this age

    @property
    def window(self) -> int:
        """Chunks a hint may take and still be used."""
        return self.max_age or self.delay


class DeviceStream:
    """One device's stream over its own UDP socket: the handshake (cookie
    included), chunks out, and the arrival time of every hint."""

    def __init__(self, index: int, server: tuple[str, int], target: Target):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect(server)
        self.sock.setblocking(False)
        self.id = int.from_bytes(os.urandom(4), "little")
        self.key_id, self.key = target.key if target.key else (0, None)
        self.keys = {self.key_id: self.key} if self.key else None
        self.hello = p.Hello(
            target.model, target.channels, target.delay, target.encoding, p.SampleFormat.INT16
        )
        self.open = False
        self.refused: str | None = None
        self.sent_at: dict[int, float] = {}
        self.arrived: dict[int, float] = {}
        self.up_bytes = self.down_bytes = 0
        rng = np.random.default_rng(index)
        chunk = (0.1 * rng.standard_normal((target.channels, CHUNK))).astype(np.float32)
        self.audio = p.pack_audio(chunk, p.SampleFormat.INT16)

    def send(self, ptype: p.Type, seq: int, payload: bytes) -> int:
        data = p.encode(p.Packet(ptype, self.id, seq, payload, self.key_id), self.key)
        try:
            self.sock.send(data)
        except OSError:
            return 0
        return len(data)

    def send_hello(self) -> None:
        self.send(p.Type.HELLO, 0, self.hello.pack())

    def send_chunk(self, seq: int, now: float) -> None:
        self.sent_at[seq] = now
        self.up_bytes += self.send(p.Type.AUDIO, seq, self.audio) + p.UDP_IP_OVERHEAD

    def receive(self, now: float) -> None:
        while True:
            try:
                data = self.sock.recv(p.MAX_DATAGRAM + 1)
            except (BlockingIOError, InterruptedError, ConnectionRefusedError):
                return
            try:
                packet = p.decode(data, None if data[6] & p.FLAG_MAC == 0 else self.keys)
            except (p.PacketError, IndexError):
                continue
            if packet.stream_id != self.id:
                continue
            if packet.type == p.Type.RETRY:
                self.hello = dataclasses.replace(self.hello, cookie=packet.payload)
                self.send_hello()
            elif packet.type == p.Type.WELCOME:
                self.open = True
            elif packet.type == p.Type.REFUSE and self.refused is None:  # the first reason
                self.refused = packet.payload.decode(errors="replace")
            elif packet.type == p.Type.HINT and self.open:
                self.down_bytes += len(data) + p.UDP_IP_OVERHEAD
                count = data[p.HEADER.size] if len(data) > p.HEADER.size else 0
                for i in range(count):
                    self.arrived.setdefault(packet.seq + i, now)


def generate(server: tuple[str, int], target: Target, streams: int, seconds: float) -> dict:
    """Open `streams` streams, run them at real time for `seconds`, and count."""
    selector = selectors.DefaultSelector()
    all_streams = [DeviceStream(i, server, target) for i in range(streams)]
    for s in all_streams:
        selector.register(s.sock, selectors.EVENT_READ, s)
    deadline = time.monotonic() + 10.0
    last_hello = 0.0
    while not all(s.open or s.refused for s in all_streams):
        now = time.monotonic()
        if now > deadline:
            raise RuntimeError(f"no answer from {server[0]}:{server[1]} to every HELLO in 10 s")
        if now - last_hello > 0.2:
            last_hello = now
            for s in all_streams:
                if not (s.open or s.refused):
                    s.send_hello()
        for key, _ in selector.select(0.01):
            key.data.receive(time.monotonic())
    refused = [s.refused for s in all_streams if s.refused]
    if refused:
        raise RuntimeError(f"{len(refused)} of {streams} streams refused: {refused[0]}")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    chunks = int(round(seconds / CHUNK_SECONDS))
    start = time.monotonic()
    # Each stream keeps its own 8 ms clock, offset so that sends are spread out.
    offsets = [i * CHUNK_SECONDS / streams for i in range(streams)]
    next_seq = [0] * streams
    end = start + chunks * CHUNK_SECONDS + GRACE
    while (now := time.monotonic()) < end:
        for i, s in enumerate(all_streams):
            while next_seq[i] < chunks and start + offsets[i] + next_seq[i] * CHUNK_SECONDS <= now:
                s.send_chunk(next_seq[i], now)
                next_seq[i] += 1
        due = min(
            (
                start + offsets[i] + next_seq[i] * CHUNK_SECONDS
                for i in range(streams)
                if next_seq[i] < chunks
            ),
            default=end,
        )
        for key, _ in selector.select(max(0.0, min(due, end) - time.monotonic())):
            key.data.receive(time.monotonic())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - cpu_before
    for s in all_streams:
        s.send(p.Type.BYE, 0, b"")
        s.sock.close()
    return _count(all_streams, target.window, chunks, seconds, cpu)


def _count(
    streams: list[DeviceStream], delay: int, chunks: int, seconds: float, cpu: float
) -> dict:
    on_time = late = lost = 0
    rtts = []
    budget = delay * CHUNK_SECONDS
    for s in streams:
        for seq, sent in s.sent_at.items():
            got = s.arrived.get(seq)
            if got is None:
                lost += 1
                continue
            rtts.append(got - sent)
            if got - sent <= budget:
                on_time += 1
            else:
                late += 1
    needed = max(1, on_time + late + lost)
    return {
        "streams": len(streams),
        "chunks_per_stream": chunks,
        "on_time": on_time / needed,
        "late": late / needed,
        "lost": lost / needed,
        "rtt_p50": float(np.percentile(rtts, 50)) * 1e3 if rtts else float("nan"),
        "rtt_p99": float(np.percentile(rtts, 99)) * 1e3 if rtts else float("nan"),
        "up_kBps_per_stream": sum(s.up_bytes for s in streams) / seconds / len(streams) / 1e3,
        "down_kBps_per_stream": sum(s.down_bytes for s in streams) / seconds / len(streams) / 1e3,
        "generator_cpu": cpu / seconds,
    }


# ---- The server, and one generator process per stream count --------------------


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _LocalServer:
    """`kboost-rt serve` with room for `streams` streams from this one address."""

    def __init__(self, models: list[str], streams: int, key_file: str | None, workers: int | None):
        # -P: the installed package, never a source tree in the working directory
        cmd = [
            sys.executable,
            "-P",
            "-m",
            "kboost_rt",
            "serve",
            "--port",
            "0",
            "--report-every",
            "0",
        ]
        for m in models:
            cmd += ["--model", m]
        cmd += ["--max-streams", str(streams), "--max-streams-per-address", str(streams)]
        cmd += ["--opens-per-second", str(max(2, streams)), "--max-load", "1000"]
        if key_file:
            cmd += ["--key-file", key_file]
        if workers:
            cmd += ["--workers", str(workers)]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        match = re.search(r"on ([\d.]+):(\d+)", line)
        if not match:
            rest = self.proc.communicate(timeout=30)[0]
            raise RuntimeError(f"the hint server did not start: {line}{rest}".strip())
        self.address = (match.group(1), int(match.group(2)))

    def cpu(self) -> float:
        return _cpu_seconds(self.proc.pid)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=10)


def run_generator(server: tuple[str, int], target: Target, streams: int, seconds: float) -> dict:
    """`generate` in a process of its own (so that it competes with the server only
    as another process would)."""
    spec = {
        "server": list(server),
        "model": target.model,
        "channels": target.channels,
        "delay": target.delay,
        "max_age": target.max_age,
        "encoding": int(target.encoding),
        "key": [target.key[0], target.key[1].hex()] if target.key else None,
        "streams": streams,
        "seconds": seconds,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)  # the key travels in a private file, not on the command line
    try:
        result = subprocess.run(
            [sys.executable, "-P", "-m", "kboost_rt.loadtest", f.name],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        )
    finally:
        os.unlink(f.name)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip().splitlines()[-1] if result.stderr else "failed")
    return json.loads(result.stdout)


def loadtest(
    target: Target,
    counts: list[int],
    seconds: float,
    server: tuple[str, int] | None = None,
    model_paths: list[str] | None = None,
    key_file: str | None = None,
    workers: int | None = None,
    progress=print,
) -> list[dict]:
    results = []
    local = _LocalServer(model_paths or [], max(counts), key_file, workers) if not server else None
    try:
        address = server or local.address  # type: ignore[union-attr]
        for n in counts:
            before = local.cpu() if local else 0.0
            start = time.monotonic()
            row = run_generator(address, target, n, seconds)
            if local:
                row["server_cpu"] = (local.cpu() - before) / (time.monotonic() - start)
            results.append(row)
            progress(row)
    finally:
        if local:
            local.close()
    return results


def _main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    key = (spec["key"][0], bytes.fromhex(spec["key"][1])) if spec["key"] else None
    target = Target(
        spec["model"],
        spec["channels"],
        spec["delay"],
        p.HintEncoding(spec["encoding"]),
        key,
        spec["max_age"],
    )
    row = generate(tuple(spec["server"]), target, spec["streams"], spec["seconds"])
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1]))
