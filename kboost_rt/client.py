"""The device side of the hint link.

Between the audio thread and this client's network thread sits the native
`HintLink` (csrc/hint_link.h): two lock-free rings, one of input chunks
going out, one of hints filed by the chunk number they were made from. The
audio thread (the native processor, or `send_chunk` / `take_hint` from
Python) never locks, blocks or touches the socket. The network thread
sends the queued chunks and files incoming hints; at chunk t the engine
gets exactly the hint of chunk t - d if it is there, and runs without one
otherwise; hints that come too late are dropped and counted.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import select
import socket
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

from . import _native
from . import protocol as p
from .hint_codec import HintCodec
from .signal_path import CHUNK, N_BINS, SAMPLE_RATE

log = logging.getLogger("kboost_rt.client")

RETRY_INTERVAL = 0.1  # s between HELLOs that answer a RETRY while streaming


class LinkError(RuntimeError):
    """The server refused the stream or never answered."""


@dataclass
class LinkStats:
    on_time: int = 0
    late: int = 0
    lost: int = 0  # needed and never arrived (or arrived late)
    duplicate: int = 0
    corrupt: int = 0  # malformed, unauthenticated or wrong-stream datagrams
    received: int = 0  # datagrams read from the socket, whatever they held
    sent: int = 0
    send_dropped: int = 0  # the outgoing ring was full
    rtt_chunks: float = float("nan")  # median arrival chunk - described chunk
    max_rtt_chunks: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class HintClient:
    def __init__(
        self,
        server: tuple[str, int],
        model: str,
        channels: int,
        delay: int,
        encoding: p.HintEncoding = p.HintEncoding.FLOAT32,
        sample_format: p.SampleFormat = p.SampleFormat.FLOAT32,
        key: tuple[int, bytes] | None = None,
        codec: HintCodec | None = None,
        max_age: int = 0,
    ):
        """`delay`: a fixed-delay model's hint delay (chunks); `max_age`: an
        any-delay model's oldest usable hint age (then `delay` is 0). `codec`:
        the boosted model's hint codec, needed for pca hints."""
        if encoding == p.HintEncoding.PCA and codec is None:
            raise ValueError("pca hints need the boosted model's hint codec")
        self.codec = codec
        self.server = server
        self.hello = p.Hello(model, channels, delay, encoding, sample_format)
        self.key_id, self.key = key if key else (0, None)
        self.keys = {self.key_id: self.key} if self.key else None
        self.stream_id = int.from_bytes(os.urandom(4), "little")
        self.delay = delay
        self.max_age = max_age
        self.channels = channels
        self.hint_channels = 0
        self.link: _native.HintLink | None = None  # made once the server said how hints look
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect(server)
        self._chunk = np.zeros((channels, CHUNK), np.float32)
        self._rtts: deque[int] = deque(maxlen=1024)
        # per chunk number, the chunk before which its hint was filed (-1: not
        # yet), once record_schedule asked for it
        self._filed_before: np.ndarray | None = None
        self._arrived = p.ReplayWindow(4096)  # hint numbers seen, for duplicates
        self._counts: Counter = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned = False
        self._cookie_taken = -RETRY_INTERVAL
        self._refusal_logged = -1.0

    # ---- set-up (not from the audio thread) ----
    def connect(self, timeout: float = 2.0) -> p.Welcome:
        """Handshake (HELLO, the server's cookie, HELLO with it, WELCOME); raises
        LinkError with the server's reason on refusal."""
        deadline = time.monotonic() + timeout
        self._send_hello()
        while time.monotonic() < deadline:
            ready = select.select([self.sock], [], [], 0.2)[0]
            if not ready:
                self._send_hello()  # it or its answer was lost
                continue
            try:
                data = self.sock.recv(p.MAX_DATAGRAM + 1)
            except ConnectionRefusedError:  # nothing listens there (yet)
                time.sleep(0.05)
                self._send_hello()
                continue
            refused = _refusal(data, self.stream_id)  # it may come unsigned (bad key)
            if refused is not None:
                raise LinkError(f"server refused: {refused}")
            try:
                packet = p.decode(data, self.keys)
            except p.PacketError:
                continue
            if packet.stream_id != self.stream_id:
                continue
            if packet.type == p.Type.RETRY:
                self._take_cookie(packet)
            elif packet.type == p.Type.WELCOME:
                welcome = p.Welcome.unpack(packet.payload)
                self.hint_channels = welcome.hint_channels
                self.link = _native.HintLink(
                    self.channels, self.hint_channels, self.delay, self.max_age
                )
                self.sock.setblocking(False)
                self._thread = threading.Thread(target=self._run, name="kboost-hints", daemon=True)
                self._thread.start()
                return welcome
        raise LinkError(
            f"no answer from {self.server[0]}:{self.server[1]} in {timeout} s "
            f"(is a kboost-rt server of protocol version {p.VERSION} running there?)"
        )

    def _send_hello(self) -> None:
        hello = p.Packet(p.Type.HELLO, self.stream_id, 0, self.hello.pack(), self.key_id)
        try:
            self.sock.send(p.encode(hello, self.key))
        except OSError:
            self._counts["send_errors"] += 1

    def _take_cookie(self, packet: p.Packet) -> None:
        """The server wants this address proven, or does not know this stream (it
        restarted, or is another backend): HELLO again, with its cookie, at most
        every RETRY_INTERVAL seconds (a RETRY can answer every chunk)."""
        try:
            cookie = p.unpack_cookie(packet.payload)
        except p.PacketError:
            return
        now = time.monotonic()
        if now - self._cookie_taken < RETRY_INTERVAL:
            return
        self._cookie_taken = now
        self.hello = dataclasses.replace(self.hello, cookie=cookie)
        self._counts["cookies"] += 1
        self._send_hello()

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=1)
        try:
            self.sock.send(
                p.encode(p.Packet(p.Type.BYE, self.stream_id, 0, b"", self.key_id), self.key)
            )
        except OSError:
            pass
        self.sock.close()

    def wait_for_replies(self, timeout: float = 0.5) -> None:
        """After the last chunk (not from an audio thread): give the hints still in
        flight up to `timeout` s to land, so that they count as late, not lost."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (
            self._queued() > self._counts["sent"] + self._counts["send_errors"]
            or self._counts["received"] < self._counts["sent"]
        ):
            time.sleep(0.005)

    def _queued(self) -> int:
        return self.link.counters()["queued"] if self.link is not None else 0

    # ---- the audio thread's side, for callers in Python (the native processor
    # uses the link directly): never blocks ----
    def send_chunk(self, seq: int, chunk: np.ndarray) -> None:
        """Queue chunk `seq` for the server (the chunk is copied)."""
        self.link.send(seq, np.ascontiguousarray(chunk, np.float32))

    def take_hint(self, t: int) -> np.ndarray | None:
        """At chunk t: the hint made from chunk t - d, or None if it has not arrived."""
        out = np.empty((self.hint_channels, N_BINS), np.float32)
        return out if self.link.take(t, out) else None

    # ---- network thread ----
    def _run(self) -> None:
        while not self._stop.is_set():
            while (seq := self.link.next_chunk(self._chunk)) >= 0:
                payload = p.pack_audio(self._chunk, self.hello.sample_format)
                try:
                    self.sock.send(
                        p.encode(
                            p.Packet(p.Type.AUDIO, self.stream_id, seq, payload, self.key_id),
                            self.key,
                        )
                    )
                    self._counts["sent"] += 1
                except OSError:
                    self._counts["send_errors"] += 1
            if select.select([self.sock], [], [], 0.001)[0]:
                self._receive()

    def _receive(self) -> None:
        while True:
            try:
                data = self.sock.recv(p.MAX_DATAGRAM + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._counts["socket_errors"] += 1
                return
            self._counts["received"] += 1
            try:
                packet = p.decode(data, self.keys)
                if packet.stream_id != self.stream_id:
                    raise p.PacketError("not of this stream")
                if packet.type == p.Type.RETRY:  # our address changed on the way
                    self._take_cookie(packet)
                    continue
                if packet.type == p.Type.WELCOME:  # the answer to a repeated HELLO
                    continue
                if packet.type == p.Type.REFUSE:
                    self._counts["refused"] += 1
                    now = time.monotonic()
                    if now - self._refusal_logged >= 1.0:  # it may repeat
                        self._refusal_logged = now
                        log.warning(
                            "the hint server dropped this stream: %s; the model runs without hints",
                            packet.payload.decode(errors="replace"),
                        )
                    continue
                if packet.type != p.Type.HINT:
                    raise p.PacketError("not a hint")
                hints = p.unpack_hints(
                    packet.payload, self.hint_channels, self.hello.encoding, self.codec
                )
            except p.PacketError:
                self._counts["corrupt"] += 1
                continue
            for i, hint in enumerate(hints):
                self._file(packet.seq + i, hint)

    def _file(self, seq: int, hint: np.ndarray) -> None:
        if not self._arrived.accept(seq):
            self._counts["duplicate"] += 1
            return
        now = self.link.now
        rtt = now - seq
        self._rtts.append(rtt)
        filed = self._filed_before
        if filed is not None and 0 <= seq < len(filed) and seq <= now + 1 and filed[seq] < 0:
            filed[seq] = max(now + 1, seq + 1)  # a hint is used after its own chunk at the earliest
        window = self.link.window
        if rtt >= window and not self._warned:  # it would be used at now + 1: too old
            self._warned = True
            log.warning(
                "hints arrive %d chunks after their chunk, more than the model's "
                "%s of %d: they will be late; %s",
                rtt,
                "oldest usable hint age" if self.max_age else "delay",
                window,
                "the link is too slow for this model"
                if self.max_age
                else "use a model trained for a longer delay (or the any-delay model)",
            )
        self.link.deliver(seq, np.ascontiguousarray(hint, np.float32))  # counts it if late

    def record_schedule(self, chunks: int) -> None:
        """From now on note, for chunks 0..chunks-1, when each one's hint came in
        (for a file; not for an endless live stream)."""
        self._filed_before = np.full(chunks, -1, np.int64)

    def hint_schedule(self) -> list[int | None] | None:
        """Per recorded chunk j, how many chunks after it its hint came in (None:
        never), as `kboost-rt eval --jitter FILE` replays it. The audio thread may
        have taken a hint one chunk earlier or later than this says, when it was
        filed while that chunk ran."""
        if self._filed_before is None:
            return None
        return [int(f - j) if f >= 0 else None for j, f in enumerate(self._filed_before)]

    def stats(self) -> LinkStats:
        c = self._counts
        native = self.link.counters() if self.link is not None else Counter()
        rtts = list(self._rtts)
        return LinkStats(
            on_time=native["on_time"],
            late=native["late"],
            lost=native["lost"],
            duplicate=c["duplicate"],
            corrupt=c["corrupt"],
            received=c["received"],
            sent=c["sent"],
            send_dropped=native["send_dropped"],
            rtt_chunks=float(np.median(rtts)) if rtts else float("nan"),
            max_rtt_chunks=max(rtts) if rtts else 0,
        )


def _refusal(data: bytes, stream_id: int) -> str | None:
    """The reason of a REFUSE for this stream, signed or not (a server that cannot
    check our key cannot sign its answer), or None."""
    try:
        packet = p.decode(data, None)
    except p.PacketError:
        return None
    if packet.type != p.Type.REFUSE or packet.stream_id != stream_id:
        return None
    return packet.payload.decode(errors="replace")


def measure_round_trip(
    server: tuple[str, int],
    model: str,
    channels: int,
    delay: int,
    key: tuple[int, bytes] | None = None,
    chunks: int = 63,
) -> float:
    """Stream `chunks` chunks of silence (paced at real time, about 0.5 s) and
    return the 95th percentile of the hints' round trip, in chunks."""
    client = HintClient(server, model, channels, delay, key=key)
    silence = np.zeros((channels, CHUNK), np.float32)
    try:
        client.connect()
        start = time.monotonic()
        for t in range(chunks + delay + 4):  # then wait for the last hints
            wait = start + (t + 1) * CHUNK / SAMPLE_RATE - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if t < chunks:
                client.send_chunk(t, silence)
            client.take_hint(t)
        rtts = list(client._rtts)
    finally:
        client.close()
    if not rtts:
        raise LinkError(f"no hints came back from {server[0]}:{server[1]} while probing")
    return float(np.percentile(rtts, 95))
