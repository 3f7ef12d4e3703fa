"""`kboost-rt serve`: the large-model hint server.

One UDP socket serves many device streams. Each stream runs the native large
engine with the hint generator of the boosted model the device announced,
chunk by chunk, and sends back one hint per chunk. The streams of one model
share its packed weights; a stream owns only its state. The network thread parses
and checks every datagram; the model steps of different streams run on a pool
of worker threads (the native step releases the GIL), each stream's chunks in
order on one worker. Every datagram is parsed by
`protocol.decode`; anything malformed, unauthenticated, replayed or out of
order is dropped and counted, never processed. A stream opens only after a
cookie round trip, is known by its key and id (not by the address it came
from), and gets real time plus a small burst of model steps: one that asks
for more is throttled and then dropped. Streams that fall silent expire. The
server needs no torch.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import protocol as p
from .engine import NativeEngine, NativeModel
from .hint_codec import HintCodec, load_codec
from .model_files import ModelFileError, ModelFiles, load_model_files
from .signal_path import CHUNK, SAMPLE_RATE

log = logging.getLogger("kboost_rt.server")
MAX_GAP = 16  # missing chunks the model is run over (on zeros) to stay aligned
# A chunk that arrives ahead of a gap waits this long (and at most this many
# wait) for the missing ones: jitter near the chunk period reorders the uplink,
# and the large model steps in order, so without the wait an overtaken chunk
# (and its hint) is lost.
REORDER_HOLD = 0.010
REORDER_CHUNKS = 3
DRAIN = 64  # datagrams read per pass before the model steps run
CHUNKS_PER_SECOND = SAMPLE_RATE / CHUNK
RATE_SLACK = 1.1  # steps a stream may ask for, relative to real time (clock drift)
BURST = 64  # steps a stream may ask for at once (half a second of chunks)
STRIKES = 125  # throttled chunks, decaying at half real time, that drop a stream
MAX_PER_ADDRESS = 4  # streams one address may open on an unkeyed server
OPENS_PER_SECOND = 2.0  # new streams one key (or unkeyed address) may open, after a burst
PENALTY = 10.0  # seconds a key (or address) may open nothing after a stream is dropped
FIRST_STEPS = 8  # a new stream's budget: it has nothing to catch up on
UNPROVEN_REPLIES = 500.0  # cookies and refusals a second, to addresses not proven


@dataclass
class ServedModel:
    name: str
    boosted: ModelFiles
    large: ModelFiles
    step_seconds: float = 0.0  # measured cost of one step, for admission
    codec: HintCodec | None = None  # the boosted model's, for pca hints
    # Packed once (by measure(), at start-up) and shared by every stream: a new
    # stream costs only its own state.
    native: NativeModel | None = field(default=None, repr=False)

    def engine(self) -> NativeEngine:
        if self.native is None:
            generator = {
                k: v for k, v in self.boosted.tensors.items() if k.startswith("hint_generator.")
            }
            self.native = NativeModel(self.large.config, self.large.tensors, generator)
        return self.native.engine()

    def measure(self, chunks: int = 50) -> float:
        """Median time of a fresh engine's steps on noise (the cost does not depend on it)."""
        engine = self.engine()
        rng = np.random.default_rng(0)
        shape = (chunks, self.large.config.net.channels, CHUNK)
        times = []
        for chunk in (0.1 * rng.standard_normal(shape)).astype(np.float32):
            start = time.perf_counter()
            engine.process_with_hint(chunk)
            times.append(time.perf_counter() - start)
        self.step_seconds = float(np.median(times))
        return self.step_seconds


@dataclass
class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up (full at first unless
    `tokens` says otherwise)."""

    rate: float
    burst: float
    tokens: float = -1.0
    when: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.burst

    def take(self, n: float = 1.0, now: float | None = None) -> bool:
        """Spend `n` tokens, or refuse (and spend nothing)."""
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.when) * self.rate)
        self.when = now
        if self.tokens < n:
            return False
        self.tokens -= n
        return True


@dataclass
class Stream:
    addr: tuple
    stream_id: int
    key_id: int
    model: ServedModel
    hello: p.Hello
    engine: NativeEngine | None  # None while it is being built
    next_seq: int = 0
    last_seen: float = field(default_factory=time.monotonic)
    replay: p.ReplayWindow = field(default_factory=p.ReplayWindow)
    stats: Counter = field(default_factory=Counter)
    # The address hints go to is the latest authenticated one; until a cookie
    # proves it, the server sends it no more bytes than it received from it.
    proven: bool = True
    credit: int = 0
    retry_sent: float = float("-inf")
    # Model steps it may ask for: real time plus a burst.
    steps: TokenBucket = field(
        default_factory=lambda: TokenBucket(CHUNKS_PER_SECOND * RATE_SLACK, BURST, FIRST_STEPS)
    )
    strikes: float = 0.0  # throttled chunks, decaying at half real time
    struck: float = field(default_factory=time.monotonic)
    held: dict[int, np.ndarray] = field(default_factory=dict)  # chunks ahead of a gap
    held_since: float = 0.0

    def strike(self, now: float) -> bool:
        """Count one throttled chunk; True once there have been too many lately."""
        decay = (now - self.struck) * CHUNKS_PER_SECOND / 2
        self.strikes, self.struck = max(0.0, self.strikes - decay) + 1, now
        return self.strikes > STRIKES


def load_served_models(
    paths: list[str | os.PathLike], large: str | None = None
) -> dict[str, ServedModel]:
    """Boosted model folders -> what the server runs for each; the large model is
    the boosted config's `large_model` folder next to it, unless `large` is given."""
    served = {}
    for path in paths:
        boosted = load_model_files(path)
        if boosted.config.role != "boosted":
            raise ModelFileError(
                f"{path}: serve needs boosted model folders (their hint "
                f"generator), got role {boosted.config.role!r}"
            )
        channels = boosted.config.boost.hint_channels if boosted.config.boost else 0
        size = p.hint_datagram_size(channels, p.HintEncoding.FLOAT32)
        if size > p.MAX_DATAGRAM:
            raise ModelFileError(
                f"{path}: its {channels} hint channels make a {size}-byte float32 HINT "
                f"datagram, over the link's {p.MAX_DATAGRAM} bytes (at most "
                f"{p.max_hint_channels()} channels)"
            )
        large_path = Path(large) if large else Path(path).parent / boosted.config.large_model
        if not large and not boosted.config.large_model:
            raise ModelFileError(f"{path}: config names no large_model; pass --large")
        large_files = load_model_files(large_path)
        if large_files.config.role != "large":
            raise ModelFileError(f"{large_path}: not a large model")
        if (large_files.config.net.channels, large_files.config.net.sources) != (
            boosted.config.net.channels,
            boosted.config.net.sources,
        ):
            raise ModelFileError(f"{large_path}: channels/sources differ from {path}")
        codec = load_codec(path, channels)
        served[boosted.name] = ServedModel(boosted.name, boosted, large_files, codec=codec)
    return served


class HintServer:
    def __init__(
        self,
        models: dict[str, ServedModel],
        host: str = "127.0.0.1",
        port: int = 0,
        keys: dict[int, bytes] | None = None,
        max_streams: int = 16,
        idle_timeout: float = 10.0,
        workers: int = 1,
        max_load: float = 0.8,
        max_per_address: int = MAX_PER_ADDRESS,
        opens_per_second: float = OPENS_PER_SECOND,
    ):
        self.models = models
        self.keys = keys
        self.max_streams = max_streams
        self.max_per_address = max_per_address  # unkeyed servers only
        self.opens_per_second = opens_per_second  # per client, after a burst of 8 x that
        self.idle_timeout = idle_timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((host, port))
        self.sock.setblocking(False)
        self.cookies = p.Cookies()
        self.streams: dict[tuple, Stream] = {}
        self.stats: Counter = Counter()
        self._stop = threading.Event()
        self.workers = workers
        self.max_load = max_load  # of the workers' time, over all streams
        for model in models.values():
            if not model.step_seconds:
                model.measure()
        self._pool = ThreadPoolExecutor(workers, "kboost-step") if workers > 1 else None
        # New streams' engines are built here, off the network thread (a paper-size
        # large model's state is megabytes of attention rings to allocate and
        # zero); WELCOME goes out when done.
        self._admission = ThreadPoolExecutor(1, "kboost-admit")
        self._opened: deque[tuple[Stream, p.Packet | None, str]] = deque()
        # stream key -> this pass's chunks: (seq, samples, silent steps before it
        # or -1 to reset the model first)
        self._work: dict[tuple, list[tuple[int, np.ndarray, int]]] = {}
        self._failed: list[tuple[Stream, str]] = []  # streams whose step raised
        self._logged_at: dict[str, float] = {}
        self._unlogged: Counter = Counter()
        # Per client (key id, or address on an unkeyed server), proven ones only:
        self._opens: dict[object, TokenBucket] = {}  # streams it may open
        self._penalty: dict[object, float] = {}  # opens refused until
        self._replies = TokenBucket(UNPROVEN_REPLIES, UNPROVEN_REPLIES)

    @property
    def address(self) -> tuple[str, int]:
        return self.sock.getsockname()

    def stop(self) -> None:
        self._stop.set()

    def serve_forever(self, report_every: float = 0.0) -> None:
        last_report = time.monotonic()
        try:
            while not self._stop.is_set():
                for data, addr in self._drain():
                    self._handle_safely(data, addr)
                self._release_expired(time.monotonic())
                self._welcome_built()
                self._run_steps()
                now = time.monotonic()
                self._expire(now)
                if report_every and now - last_report >= report_every:
                    last_report = now
                    log.info(self.summary_line())
        finally:
            self._admission.shutdown()
            if self._pool:
                self._pool.shutdown()
            self.sock.close()

    def _stream_key(self, addr: tuple, stream_id: int, key_id: int) -> tuple:
        # A keyed stream is its key's and id's wherever its packets come from; an
        # unkeyed one can only be told apart by its address.
        return (key_id, stream_id) if self.keys else (addr, stream_id)

    def _log_limited(self, kind: str, message: str, *args) -> None:
        """At most one line a second of each kind: a flood must not flood the log."""
        now = time.monotonic()
        if now - self._logged_at.get(kind, float("-inf")) >= 1.0:
            more = self._unlogged.pop(kind, 0)
            suffix = f" (and {more} more not logged)" if more else ""
            log.info(message + suffix, *args)
            self._logged_at[kind] = now
        else:
            self._unlogged[kind] += 1

    def _run_steps(self) -> None:
        """The model steps this pass collected: streams in parallel, chunks in order,
        the streams with the fewest steps first, so that no stream waits behind
        another's burst."""
        work, self._work = self._work, {}
        jobs = [(self.streams[key], chunks) for key, chunks in work.items() if key in self.streams]
        jobs.sort(key=lambda job: sum(1 + max(0, fill) for _, _, fill in job[1]))
        if self._pool and len(jobs) > 1:
            done = sum(self._pool.map(lambda job: self._step(*job), jobs))
        else:
            done = sum(self._step(stream, chunks) for stream, chunks in jobs)
        self.stats["chunks"] += done
        failed, self._failed = self._failed, []
        for stream, reason in failed:
            self._drop(stream, "streams_failed", reason)

    def _drop(self, stream: Stream, counter: str, reason: str) -> None:
        key = self._stream_key(stream.addr, stream.stream_id, stream.key_id)
        if self.streams.pop(key, None) is None:
            return
        self.stats[counter] += 1
        if counter == "streams_throttled":
            self._penalty[self._client(stream.addr, stream.key_id)] = time.monotonic() + PENALTY
        log.warning("stream %08x from %s dropped: %s", stream.stream_id, stream.addr, reason)
        if stream.proven:
            refuse = p.Packet(
                p.Type.REFUSE, stream.stream_id, 0, reason.encode()[:200], stream.key_id
            )
            self._send(None, refuse, stream.addr)

    def _step(self, stream: Stream, chunks: list[tuple[int, np.ndarray, int]]) -> int:
        """Run one stream's chunks and send their hints (on a worker thread). Nothing
        a stream does can raise out of here: its error is counted and it is dropped."""
        try:
            return self._step_chunks(stream, chunks)
        except Exception as e:
            stream.stats["errors"] += 1
            self._failed.append((stream, f"{type(e).__name__}: {e}"))
            return 0

    def _step_chunks(self, stream: Stream, chunks: list[tuple[int, np.ndarray, int]]) -> int:
        silence = np.zeros((stream.hello.channels, CHUNK), np.float32)
        for seq, chunk, fill in chunks:
            if fill < 0:
                stream.engine.reset()
                stream.stats["resets"] += 1
            else:
                for _ in range(fill):  # keep the model's time aligned with the chunk numbers
                    stream.engine.process_with_hint(silence)
                stream.stats["missing"] += fill
            _, hint = stream.engine.process_with_hint(chunk)
            stream.next_seq = seq + 1
            stream.stats["chunks"] += 1
            payload = p.pack_hints([hint], stream.hello.encoding, stream.model.codec)
            packet = p.Packet(p.Type.HINT, stream.stream_id, seq, payload, stream.key_id)
            self._send(stream, packet, stream.addr)
        return len(chunks)

    def _build(self, stream: Stream, welcome: p.Packet) -> None:
        """On the admission thread: the new stream's engine, then its WELCOME."""
        try:
            stream.engine = stream.model.engine()
            self._opened.append((stream, welcome, ""))
        except Exception as e:
            self._opened.append((stream, None, f"{type(e).__name__}: {e}"))

    def _welcome_built(self) -> None:
        while self._opened:
            stream, welcome, error = self._opened.popleft()
            key = self._stream_key(stream.addr, stream.stream_id, stream.key_id)
            if self.streams.get(key) is not stream:
                continue  # gone meanwhile (expired, or a BYE)
            if welcome is None:
                self._drop(stream, "streams_failed", f"its engine could not be built: {error}")
            else:
                self._send(None, welcome, stream.addr)

    def _drain(self) -> list[tuple[bytes, tuple]]:
        """Everything that is ready (up to DRAIN), waiting at most 50 ms for the first
        (5 ms while a new stream's engine is being built or chunks are held)."""
        batch: list[tuple[bytes, tuple]] = []
        building = any(s.engine is None for s in self.streams.values())
        waiting = building or any(s.held for s in self.streams.values())
        if not select.select([self.sock], [], [], 0.005 if waiting else 0.05)[0]:
            return batch
        while len(batch) < DRAIN:
            try:
                batch.append(self.sock.recvfrom(p.MAX_DATAGRAM + 1))
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:  # e.g. ICMP port unreachable surfacing on Linux
                self.stats["socket_errors"] += 1
                log.debug("socket error: %s", e)
                break
        return batch

    def _send(self, stream: Stream | None, packet: p.Packet, addr: tuple, limit: int = 0) -> int:
        """Send `packet`, signed under its key id on a keyed server; the bytes sent.
        `limit`: the size of the datagram it answers, when the address is not proven
        (no amplification)."""
        key = self.keys.get(packet.key_id) if self.keys and packet.key_id else None
        counts = stream.stats if stream else self.stats  # a stream's are its worker's own
        data = p.encode_within(packet, limit, key) if limit else p.encode(packet, key)
        if stream is not None and not stream.proven:
            if stream.credit < len(data):
                counts["held_unproven"] += 1
                return 0
            stream.credit -= len(data)
        return self._transmit(data, addr, counts, rationed=bool(limit))

    def _transmit(self, data: bytes, addr: tuple, counts: Counter, rationed: bool) -> int:
        # Replies to unproven addresses are rationed: a flood of HELLOs must not make
        # the server a busy sender (each answer is no larger than its HELLO anyway).
        if rationed and not self._replies.take():
            counts["replies_withheld"] += 1
            return 0
        try:
            self.sock.sendto(data, addr)
        except OSError:
            counts["send_errors"] += 1
            return 0
        counts["sent"] += 1
        return len(data)

    def _handle_safely(self, data: bytes, addr: tuple) -> None:
        """No datagram can raise out of the network thread: count it and go on."""
        try:
            self._handle(data, addr)
        except Exception as e:
            self.stats["errors"] += 1
            self._log_limited("error", "error on a datagram from %s: %s", addr, repr(e))

    def _handle(self, data: bytes, addr: tuple) -> None:
        self.stats["received"] += 1
        try:
            packet = p.decode(data, self.keys)
        except p.PacketError as e:
            reason = str(e)
            self.stats["dropped_" + reason.split()[0].lower()] += 1
            self.stats["dropped"] += 1
            if reason.startswith("unsupported version") and (old := p.refuse_version_1(data)):
                self._transmit(old, addr, self.stats, rationed=True)
            elif reason in ("unauthenticated", "bad MAC") and p.is_hello(data):
                # Tell a misconfigured client why, in no more bytes than it sent.
                refuse = p.Packet(p.Type.REFUSE, p.stream_id_of(data), 0, b"authentication failed")
                self._send(None, refuse, addr, limit=len(data))
            return
        if packet.type == p.Type.HELLO:
            return self._hello(packet, addr, len(data))
        stream = self.streams.get(self._stream_key(addr, packet.stream_id, packet.key_id))
        if stream is None:
            self.stats["dropped_unknown_stream"] += 1
            self.stats["dropped"] += 1
            if packet.type == p.Type.AUDIO:
                # A device that streams to a server which does not know its stream (this
                # one restarted, or a router sent it to another backend): a cookie lets
                # it open the stream again here, in no more bytes than it sent.
                self._retry(packet, addr, len(data))
        elif packet.type == p.Type.AUDIO:
            self._audio(stream, packet, addr, len(data))
        elif packet.type == p.Type.BYE:
            self._run_steps()  # finish what it sent before
            self.streams.pop(self._stream_key(stream.addr, stream.stream_id, stream.key_id))
            log.info("stream %08x from %s closed: %s", packet.stream_id, addr, dict(stream.stats))
        else:
            self.stats["dropped_unexpected_type"] += 1
            self.stats["dropped"] += 1

    def _refuse(self, packet: p.Packet, addr: tuple, reason: str, limit: int = 0) -> None:
        self.stats["refused"] += 1
        self._log_limited(
            "refused", "refused stream %08x from %s: %s", packet.stream_id, addr, reason
        )
        refuse = p.Packet(p.Type.REFUSE, packet.stream_id, 0, reason.encode()[:200], packet.key_id)
        self._send(None, refuse, addr, limit)

    def _retry(self, packet: p.Packet, addr: tuple, limit: int) -> int:
        """Send `addr` a cookie for this stream: the HELLO that carries it back proves
        the address (stateless: nothing is kept until then)."""
        self.stats["retries"] += 1
        cookie = self.cookies.issue(addr, packet.stream_id, packet.key_id, time.monotonic())
        retry = p.Packet(p.Type.RETRY, packet.stream_id, 0, cookie, packet.key_id)
        return self._send(None, retry, addr, limit)

    def _hello(self, packet: p.Packet, addr: tuple, size: int) -> None:
        try:
            hello = p.Hello.unpack(packet.payload)
        except p.PacketError as e:
            return self._refuse(packet, addr, str(e), limit=size)
        if not self.cookies.check(
            hello.cookie, addr, packet.stream_id, packet.key_id, time.monotonic()
        ):
            self._retry(packet, addr, size)
            return
        # From here on the address has answered: replies may say everything.
        model = self.models.get(hello.model)
        if model is None:
            return self._refuse(
                packet,
                addr,
                f"unknown model {hello.model!r}; this server has {', '.join(sorted(self.models))}",
            )
        cfg = model.boosted.config
        assert cfg.boost is not None
        if hello.encoding == p.HintEncoding.PCA and model.codec is None:
            return self._refuse(
                packet, addr, f"model {hello.model} has no hint codec here; ask for int8 hints"
            )
        size = p.hint_datagram_size(
            cfg.boost.hint_channels, hello.encoding, bool(self.keys), codec=model.codec
        )
        if size > p.MAX_DATAGRAM:
            return self._refuse(
                packet,
                addr,
                f"{hello.encoding.name.lower()} hints of {hello.model} make {size}-byte "
                f"datagrams, over {p.MAX_DATAGRAM}",
            )
        if hello.channels != cfg.net.channels:
            return self._refuse(
                packet,
                addr,
                f"model {hello.model} takes {cfg.net.channels} channels, not {hello.channels}",
            )
        if hello.delay != cfg.boost.delay:
            trained = (
                f"an any-delay model (it takes hints of any age up to {cfg.boost.max_age} "
                "chunks; its HELLO says delay 0)"
                if cfg.boost.any_delay
                else f"trained for delay {cfg.boost.delay}"
            )
            return self._refuse(
                packet, addr, f"model {hello.model} is {trained}, not delay {hello.delay}"
            )
        key = self._stream_key(addr, packet.stream_id, packet.key_id)
        existing = self.streams.get(key)
        if existing is not None and existing.hello != hello.settings():
            # The stream's engine and encoding are fixed when it opens.
            return self._refuse(
                packet,
                addr,
                f"stream {packet.stream_id:08x} is open with {existing.hello.model}, "
                f"{existing.hello.encoding.name.lower()} hints; a HELLO cannot change them "
                "(open a new stream)",
            )
        if existing is not None:
            existing.addr, existing.proven, existing.credit = addr, True, 0
            existing.last_seen = time.monotonic()
        else:
            if len(self.streams) >= self.max_streams:
                return self._refuse(packet, addr, f"server full ({self.max_streams} streams)")
            load = self._load_with(self._open_steps(), model)
            if load > self.max_load:
                return self._refuse(
                    packet,
                    addr,
                    f"server at capacity: one more stream would "
                    f"need {load:.0%} of its {self.workers} worker(s)",
                )
            if (why := self._may_open(addr, packet.key_id)) is not None:
                return self._refuse(packet, addr, why)
        welcome = p.Welcome(
            cfg.boost.hint_channels, cfg.boost.delay, hello.encoding, hello.sample_format
        )
        answer = p.Packet(p.Type.WELCOME, packet.stream_id, 0, welcome.pack(), packet.key_id)
        if existing is None:
            stream = Stream(addr, packet.stream_id, packet.key_id, model, hello.settings(), None)
            self.streams[key] = stream  # it counts towards every limit from now on
            self.stats["streams_opened"] += 1
            log.info(
                "stream %08x from %s: %s, %s hints",
                packet.stream_id,
                addr,
                hello.model,
                hello.encoding.name.lower(),
            )
            self._admission.submit(self._build, stream, answer)
        elif existing.engine is not None:  # a lost WELCOME: say it again
            self._send(None, answer, addr)

    def _client(self, addr: tuple, key_id: int) -> object:
        return key_id if self.keys else addr[0]

    def _may_open(self, addr: tuple, key_id: int) -> str | None:
        """Why this client may not open a stream now, or None: opening is cheap for
        it and dear for the server (a model, a burst of steps), so it is rationed."""
        client, now = self._client(addr, key_id), time.monotonic()
        if self._penalty.get(client, 0.0) > now:
            return "a stream of yours was dropped for its rate; wait before opening another"
        if not self.keys and self._streams_from(addr[0]) >= self.max_per_address:
            return f"{addr[0]} has {self.max_per_address} streams open already"
        if len(self._opens) > 4096:  # forget the clients that are back to a full ration
            self._opens = {c: b for c, b in self._opens.items() if b.tokens < b.burst - 1}
            self._penalty = {c: t for c, t in self._penalty.items() if t > now}
        opens = self._opens.setdefault(
            client, TokenBucket(self.opens_per_second, 8 * self.opens_per_second, when=now)
        )
        if not opens.take(1, now):
            return f"more than {self.opens_per_second:g} new streams a second"
        return None

    def _streams_from(self, host: str) -> int:
        return sum(1 for s in self.streams.values() if s.addr[0] == host)

    def _audio(self, stream: Stream, packet: p.Packet, addr: tuple, size: int) -> None:
        """Check a chunk on the network thread; queue it for this pass's steps."""
        if stream.engine is None:
            stream.stats["before_welcome"] += 1  # the device sends only after WELCOME
            return
        newest_yet = packet.seq > stream.replay.top
        if not stream.replay.accept(packet.seq):
            stream.stats["duplicate"] += 1
            return
        now = stream.last_seen = time.monotonic()
        if addr != stream.addr and newest_yet:
            # The device moved (or its NAT did): prove it. Only the newest chunk can
            # move a stream, so an older one replayed from elsewhere never does.
            stream.addr, stream.proven, stream.credit = addr, False, 0
            stream.stats["moved"] += 1
        if not stream.proven:
            stream.credit += size
            if now - stream.retry_sent >= 0.1:
                stream.retry_sent = now
                stream.credit -= self._retry(packet, addr, size)
        queued = self._work.setdefault(
            self._stream_key(stream.addr, stream.stream_id, stream.key_id), []
        )
        newest = queued[-1][0] if queued else stream.next_seq - 1
        if packet.seq <= newest:
            stream.stats["late"] += 1  # the model already moved past it
            return
        try:
            chunk = p.unpack_audio(packet.payload, stream.hello.channels)
        except p.PacketError:
            stream.stats["bad_audio"] += 1
            return
        gap = packet.seq - newest - 1
        if 0 < gap <= REORDER_CHUNKS and len(stream.held) < REORDER_CHUNKS:
            if not stream.held:
                stream.held_since = now
            stream.held[packet.seq] = chunk
            stream.stats["held"] += 1
            return
        self._release(stream, queued, now, before=packet.seq)  # the gap is given up
        self._queue(stream, queued, packet.seq, chunk, now)
        self._release(stream, queued, now)

    def _release(self, stream: Stream, queued: list, now: float, before: int = -1) -> None:
        """Queue the held chunks that can go: the next in line, those below
        `before`, and, once they waited REORDER_HOLD, the rest in order."""
        while stream.held:
            newest = queued[-1][0] if queued else stream.next_seq - 1
            first = min(stream.held)
            expired = now - stream.held_since >= REORDER_HOLD
            if first <= newest:
                del stream.held[first]
                stream.stats["late"] += 1
            elif first == newest + 1 or first < before or expired:
                if not self._queue(stream, queued, first, stream.held.pop(first), now):
                    stream.held.clear()  # throttled: the rest would be too
            else:
                break

    def _release_expired(self, now: float) -> None:
        for key, stream in list(self.streams.items()):  # a throttled one may be dropped
            if stream.held and now - stream.held_since >= REORDER_HOLD:
                self._release(stream, self._work.setdefault(key, []), now)

    def _queue(self, stream: Stream, queued: list, seq: int, chunk: np.ndarray, now: float) -> bool:
        """Queue one chunk for this pass (after the missing ones, as silence); False
        if the stream asks for more than real time."""
        newest = queued[-1][0] if queued else stream.next_seq - 1
        gap = seq - newest - 1
        fill = gap if gap <= MAX_GAP and stream.steps.take(gap + 1, now) else -1
        if fill < 0 and not stream.steps.take(1, now):
            # Over real time plus the burst: throttled, and dropped if it goes on.
            stream.stats["throttled"] += 1
            if stream.strike(now):
                self._drop(
                    stream,
                    "streams_throttled",
                    f"more than real time ({CHUNKS_PER_SECOND * RATE_SLACK:.0f} chunks/s "
                    f"plus a burst of {BURST}) for too long",
                )
            return False
        queued.append((seq, chunk, fill))
        return True

    def load(self) -> float:
        """Share of the workers' time the open streams need, from measured step costs."""
        return sum(self._open_steps()) * CHUNKS_PER_SECOND / self.workers

    def admits(self, model: ServedModel) -> int:
        """How many streams of `model` an empty server admits: the same arithmetic
        as admission, so the count is exact for the step time this machine measured."""
        n = 0
        while n < self.max_streams and self._load_with([model.step_seconds] * n, model) <= (
            self.max_load
        ):
            n += 1
        return n

    def _open_steps(self) -> list[float]:
        return [s.model.step_seconds for s in self.streams.values()]

    def _load_with(self, steps: list[float], model: ServedModel) -> float:
        """The load with streams of these step costs open, plus one of `model`."""
        return (sum(steps) + model.step_seconds) * CHUNKS_PER_SECOND / self.workers

    def _expire(self, now: float) -> None:
        for key, stream in list(self.streams.items()):
            if now - stream.last_seen > self.idle_timeout:
                del self.streams[key]
                self.stats["streams_expired"] += 1
                log.info(
                    "stream %08x from %s expired: %s",
                    stream.stream_id,
                    stream.addr,
                    dict(stream.stats),
                )

    def summary_line(self) -> str:
        s = self.stats
        return (
            f"streams {len(self.streams)} (opened {s['streams_opened']}, expired "
            f"{s['streams_expired']}, refused {s['refused']}, dropped for their rate "
            f"{s['streams_throttled']}); chunks {s['chunks']}; received {s['received']}, "
            f"dropped {s['dropped']}, cookies sent {s['retries']}; load {self.load():.0%}"
        )


class LocalServer:
    """`kboost-rt serve` for boosted models (a folder or a list) in a child process, on
    a free loopback port: the `--local-server` of `live` and `process`. Use as a
    context manager."""

    def __init__(self, model: str | os.PathLike | list, timeout: float = 30.0):
        import re
        import subprocess
        import sys

        cli = str(Path(sys.executable).parent / "kboost-rt")
        paths = model if isinstance(model, list) else [model]
        models = [arg for path in paths for arg in ("--model", str(path))]
        self.proc = subprocess.Popen(
            [cli, "serve", *models, "--port", "0", "--report-every", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        match = re.search(r"on ([\d.]+):(\d+)", line)
        if not match:
            rest = self.proc.communicate(timeout=timeout)[0]
            raise RuntimeError(f"the local hint server did not start: {line}{rest}".strip())
        self.address = (match.group(1), int(match.group(2)))

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=10)
