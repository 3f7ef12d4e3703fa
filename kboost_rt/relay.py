"""`kboost-rt relay`: a user-space UDP relay that impairs the hint link.

This kernel has no netem, so delay, jitter, loss (independent or bursty),
reordering, duplication and corruption are injected here, reproducibly from a
seed. The device sends to the relay; the relay forwards to the server from its
own socket and sends the server's replies back to the device. It records what
it did to each packet by direction and sequence number, so tests can check a
client's statistics against it.
"""

from __future__ import annotations

import heapq
import random
import select
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Impairment:
    delay_ms: float = 0.0
    jitter_ms: float = 0.0  # uniform +- around the delay
    loss: float = 0.0  # long-run fraction of packets dropped
    burst: float = 1.0  # mean loss-burst length in packets (1 = independent losses)
    reorder: float = 0.0  # fraction held back by an extra 2 x jitter + 1 ms
    duplicate: float = 0.0
    corrupt: float = 0.0  # fraction with one byte flipped


@dataclass
class DirectionLog:
    counts: Counter = field(default_factory=Counter)
    dropped: set = field(default_factory=set)  # sequence numbers
    corrupted: set = field(default_factory=set)
    duplicated: set = field(default_factory=set)
    delivered: set = field(default_factory=set)  # forwarded unaltered at least once


class FaultRelay:
    def __init__(
        self,
        target: tuple[str, int],
        impairment: Impairment,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        seed: int = 0,
    ):
        self.target = target
        self.impairment = impairment
        self.rng = random.Random(seed)
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(listen)
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.connect(target)
        self.client: tuple | None = None
        self.up, self.down = DirectionLog(), DirectionLog()
        self._bursting = {"up": False, "down": False}
        self._queue: list = []
        self._counter = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.front.getsockname()

    def start(self) -> FaultRelay:
        self._thread = threading.Thread(target=self.run, name="kboost-relay", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
        self.front.close()
        self.back.close()

    def _lose(self, direction: str) -> bool:
        """Gilbert-Elliott: bursts of mean length `burst`, long-run rate `loss`."""
        imp = self.impairment
        if imp.loss <= 0:
            return False
        if imp.burst <= 1:
            return self.rng.random() < imp.loss
        leave = 1.0 / imp.burst
        enter = imp.loss * leave / max(1e-9, 1.0 - imp.loss)
        bursting = self._bursting[direction]
        bursting = self.rng.random() >= leave if bursting else self.rng.random() < enter
        self._bursting[direction] = bursting
        return bursting

    def _schedule(
        self,
        data: bytes,
        sock: socket.socket,
        addr: tuple | None,
        log: DirectionLog,
        direction: str,
    ) -> None:
        imp = self.impairment
        seq = int.from_bytes(data[16:24], "little") if len(data) >= 24 else -1
        log.counts["received"] += 1
        if self._lose(direction):
            log.counts["dropped"] += 1
            log.dropped.add(seq)
            return
        intact = True
        if self.rng.random() < imp.corrupt and data:
            intact = False
            i = self.rng.randrange(len(data))
            data = data[:i] + bytes([data[i] ^ (1 << self.rng.randrange(8))]) + data[i + 1 :]
            log.counts["corrupted"] += 1
            log.corrupted.add(seq)
        copies = 1
        if self.rng.random() < imp.duplicate:
            copies = 2
            log.counts["duplicated"] += 1
            log.duplicated.add(seq)
        for _ in range(copies):
            delay = imp.delay_ms + self.rng.uniform(-imp.jitter_ms, imp.jitter_ms)
            if self.rng.random() < imp.reorder:
                delay += 2 * imp.jitter_ms + 1.0
                log.counts["reordered"] += 1
            due = time.monotonic() + max(0.0, delay) / 1000.0
            self._counter += 1
            heapq.heappush(
                self._queue, (due, self._counter, data, sock, addr, log, seq if intact else None)
            )

    def run(self) -> None:
        while not self._stop.is_set():
            timeout = 0.005
            if self._queue:
                timeout = max(0.0, min(timeout, self._queue[0][0] - time.monotonic()))
            ready = select.select([self.front, self.back], [], [], timeout)[0]
            for sock in ready:
                try:
                    data, addr = sock.recvfrom(65536)
                except OSError:
                    continue
                if sock is self.front:
                    self.client = addr
                    self._schedule(data, self.back, None, self.up, "up")
                elif self.client is not None:
                    self._schedule(data, self.front, self.client, self.down, "down")
            now = time.monotonic()
            while self._queue and self._queue[0][0] <= now:
                _, _, data, sock, addr, log, intact_seq = heapq.heappop(self._queue)
                try:
                    sock.sendto(data, addr) if addr else sock.send(data)
                except OSError:
                    log.counts["send_errors"] += 1
                    continue
                log.counts["forwarded"] += 1
                if intact_seq is not None:
                    log.delivered.add(intact_seq)

    def summary(self) -> dict:
        return {"up": dict(self.up.counts), "down": dict(self.down.counts)}
