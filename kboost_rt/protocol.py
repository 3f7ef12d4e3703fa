"""The hint-link wire format, version 2 (docs/protocol.md).

UDP datagrams with a fixed 24-byte little-endian header, a bounded payload
and, on keyed links, a 32-byte HMAC-SHA256 trailer over header and payload.
Parsing only unpacks fixed-size integers and bytes: nothing from the network
is unpickled, evaluated or trusted, and every malformed datagram raises
`PacketError`, which receivers count and drop. A stream is admitted only
after a stateless cookie round trip (`Cookies`), and nothing the server sends
before it is larger than the datagram it answers.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass, replace
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .signal_path import CHUNK, N_BINS

if TYPE_CHECKING:
    from .hint_codec import HintCodec

MAGIC = b"KBHL"
VERSION = 2
HEADER = struct.Struct("<4sBBBBIHHQ")  # magic, version, type, flags, reserved,
#                                        stream id, key id, payload length, sequence
HEADER_V1 = struct.Struct("<4sBBBBIIHH")  # only to refuse version-1 clients clearly
MAC_SIZE = 32
MAX_DATAGRAM = 4096
FLAG_MAC = 0x01
UDP_IP_OVERHEAD = 28  # IPv4 + UDP headers


class PacketError(ValueError):
    """A datagram that is not a valid packet of this protocol."""


class Type(IntEnum):
    HELLO = 1  # client -> server: open a stream (or confirm its address)
    WELCOME = 2  # server -> client: stream accepted
    REFUSE = 3  # server -> client: stream refused or dropped, with a reason
    AUDIO = 4  # client -> server: one input chunk
    HINT = 5  # server -> client: the hints made from one or more chunks
    BYE = 6  # client -> server: close the stream
    RETRY = 7  # server -> client: repeat the HELLO with this cookie


class SampleFormat(IntEnum):
    FLOAT32 = 0
    INT16 = 1


class HintEncoding(IntEnum):
    FLOAT32 = 0
    FLOAT16 = 1
    INT8 = 2  # per-hint float32 scale, then int8 values
    PCA = 3  # the boosted model's hint codec: float32 scale, then K int8 coordinates


@dataclass(frozen=True)
class Packet:
    type: Type
    stream_id: int
    seq: int
    payload: bytes
    key_id: int = 0


# ---- Framing -----------------------------------------------------------------


def encode(packet: Packet, key: bytes | None = None) -> bytes:
    flags = FLAG_MAC if key is not None else 0
    header = HEADER.pack(
        MAGIC,
        VERSION,
        packet.type,
        flags,
        0,
        packet.stream_id,
        packet.key_id,
        len(packet.payload),
        packet.seq,
    )
    data = header + packet.payload
    if key is not None:
        data += hmac.new(key, data, hashlib.sha256).digest()
    if len(data) > MAX_DATAGRAM:
        raise PacketError(f"packet of {len(data)} bytes exceeds {MAX_DATAGRAM}")
    return data


def encode_within(packet: Packet, limit: int, key: bytes | None = None) -> bytes:
    """`encode`, with the payload cut so that the datagram is at most `limit` bytes:
    what the server sends before a stream's address is proven must not amplify."""
    room = limit - HEADER.size - (MAC_SIZE if key is not None else 0)
    return encode(replace(packet, payload=packet.payload[: max(0, room)]), key)


def decode(data: bytes, keys: dict[int, bytes] | None = None) -> Packet:
    """Parse and authenticate one datagram. `keys`: key id -> secret; when given,
    every packet must carry a valid MAC under the key its header names."""
    if len(data) > MAX_DATAGRAM:
        raise PacketError("oversized datagram")
    if len(data) < HEADER.size:
        raise PacketError("truncated header")
    magic, version, ptype, flags, _, stream_id, key_id, length, seq = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise PacketError("bad magic")
    if version != VERSION:
        raise PacketError(f"unsupported version {version}")
    try:
        ptype = Type(ptype)
    except ValueError:
        raise PacketError(f"unknown packet type {ptype}") from None
    has_mac = bool(flags & FLAG_MAC)
    if flags & ~FLAG_MAC:
        raise PacketError("unknown flags")
    expected = HEADER.size + length + (MAC_SIZE if has_mac else 0)
    if len(data) != expected:
        raise PacketError("length mismatch")
    if keys is not None:
        key = keys.get(key_id)
        if not has_mac or key is None:
            raise PacketError("unauthenticated")
        body, mac = data[:-MAC_SIZE], data[-MAC_SIZE:]
        if not hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()):
            raise PacketError("bad MAC")
    return Packet(ptype, stream_id, seq, bytes(data[HEADER.size : HEADER.size + length]), key_id)


def is_hello(data: bytes) -> bool:
    """A datagram that claims to be a HELLO of this version (parsed or not)."""
    return len(data) >= HEADER.size and data[:4] == MAGIC and data[4:6] == bytes([VERSION, 1])


def stream_id_of(data: bytes) -> int:
    return int.from_bytes(data[8:12], "little") if len(data) >= 12 else 0


def refuse_version_1(data: bytes) -> bytes | None:
    """A version-1 HELLO gets a version-1 REFUSE that an old client prints, no
    larger than the HELLO; anything else of version 1 gets nothing."""
    if len(data) < HEADER_V1.size or data[:4] != MAGIC or data[4:6] != b"\x01\x01":
        return None
    room = len(data) - HEADER_V1.size
    reason = f"this server speaks protocol version {VERSION}; update the device".encode()
    if len(reason) > room:
        reason = f"protocol {VERSION} needed".encode()[:room]
    header = HEADER_V1.pack(MAGIC, 1, Type.REFUSE, 0, 0, stream_id_of(data), 0, 0, len(reason))
    return header + reason


# ---- Admission cookies -------------------------------------------------------

COOKIE = struct.Struct("<I20s")  # issue time (server seconds), truncated HMAC
COOKIE_SIZE = COOKIE.size
COOKIE_LIFETIME = 10  # seconds


class Cookies:
    """Stateless admission cookies (as DTLS's HelloVerifyRequest or QUIC's Retry):
    a cookie proves that whoever sends a HELLO receives packets at its source
    address, so the server creates nothing and sends nothing larger than a
    request for an address that has not proven it. It binds the address, the
    stream id, the key id and the time it was issued, under a secret that
    never leaves this process; a cookie is good for COOKIE_LIFETIME seconds."""

    def __init__(self, secret: bytes | None = None):
        self._secret = secret or os.urandom(32)

    def _mac(self, issued: int, addr: tuple, stream_id: int, key_id: int) -> bytes:
        msg = f"{issued}|{addr[0]}|{addr[1]}|{stream_id}|{key_id}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).digest()[:20]

    def issue(self, addr: tuple, stream_id: int, key_id: int, now: float) -> bytes:
        issued = int(now) & 0xFFFFFFFF
        return COOKIE.pack(issued, self._mac(issued, addr, stream_id, key_id))

    def check(self, cookie: bytes, addr: tuple, stream_id: int, key_id: int, now: float) -> bool:
        if len(cookie) != COOKIE_SIZE:
            return False
        issued, mac = COOKIE.unpack(cookie)
        age = (int(now) - issued) & 0xFFFFFFFF
        return age <= COOKIE_LIFETIME and hmac.compare_digest(
            mac, self._mac(issued, addr, stream_id, key_id)
        )


# ---- Payloads ----------------------------------------------------------------

HELLO = struct.Struct(f"<BBBB{COOKIE_SIZE}s")  # channels, delay, hint encoding,
#                                                sample format, cookie; then the name
WELCOME = struct.Struct("<BBBB")  # hint channels, delay, hint encoding, sample format
AUDIO = struct.Struct("<BB")  # sample format, channels; then channels x 128 samples
MAX_NAME = 64
NO_COOKIE = bytes(COOKIE_SIZE)


@dataclass(frozen=True)
class Hello:
    model: str  # the boosted model the device runs (its folder name)
    channels: int
    delay: int
    encoding: HintEncoding
    sample_format: SampleFormat
    cookie: bytes = NO_COOKIE  # from the server's RETRY; zeros on the first try

    def pack(self) -> bytes:
        name = self.model.encode()
        if len(name) > MAX_NAME:
            raise PacketError("model name too long")
        return (
            HELLO.pack(self.channels, self.delay, self.encoding, self.sample_format, self.cookie)
            + name
        )

    @classmethod
    def unpack(cls, payload: bytes) -> Hello:
        if not HELLO.size < len(payload) <= HELLO.size + MAX_NAME:
            raise PacketError("bad HELLO size")
        channels, delay, encoding, fmt, cookie = HELLO.unpack_from(payload)
        try:
            name = payload[HELLO.size :].decode("utf-8")
            return cls(name, channels, delay, HintEncoding(encoding), SampleFormat(fmt), cookie)
        except ValueError:
            raise PacketError("bad HELLO fields") from None

    def settings(self) -> Hello:
        """What the stream is opened with (the cookie is only its admission)."""
        return replace(self, cookie=NO_COOKIE)


@dataclass(frozen=True)
class Welcome:
    hint_channels: int
    delay: int
    encoding: HintEncoding
    sample_format: SampleFormat

    def pack(self) -> bytes:
        return WELCOME.pack(self.hint_channels, self.delay, self.encoding, self.sample_format)

    @classmethod
    def unpack(cls, payload: bytes) -> Welcome:
        if len(payload) != WELCOME.size:
            raise PacketError("bad WELCOME size")
        hc, delay, encoding, fmt = WELCOME.unpack(payload)
        try:
            return cls(hc, delay, HintEncoding(encoding), SampleFormat(fmt))
        except ValueError:
            raise PacketError("bad WELCOME fields") from None


def unpack_cookie(payload: bytes) -> bytes:
    """RETRY payload -> the cookie to put in the next HELLO."""
    if len(payload) != COOKIE_SIZE:
        raise PacketError("bad RETRY size")
    return payload


def pack_audio(chunk: np.ndarray, fmt: SampleFormat) -> bytes:
    """chunk [channels, 128] float32 -> AUDIO payload."""
    channels = chunk.shape[0]
    if fmt == SampleFormat.INT16:
        samples = np.clip(np.round(chunk * 32767.0), -32768, 32767).astype("<i2")
    else:
        samples = chunk.astype("<f4")
    return AUDIO.pack(fmt, channels) + samples.tobytes()


def unpack_audio(payload: bytes, channels: int) -> np.ndarray:
    """AUDIO payload -> [channels, 128] float32; the channel count must match the stream."""
    if len(payload) < AUDIO.size:
        raise PacketError("truncated AUDIO")
    fmt, got = AUDIO.unpack_from(payload)
    if got != channels:
        raise PacketError("AUDIO channel count does not match the stream")
    body = payload[AUDIO.size :]
    if fmt == SampleFormat.INT16 and len(body) == channels * CHUNK * 2:
        x = np.frombuffer(body, "<i2").astype(np.float32) / 32767.0
    elif fmt == SampleFormat.FLOAT32 and len(body) == channels * CHUNK * 4:
        x = np.frombuffer(body, "<f4").astype(np.float32)
    else:
        raise PacketError("bad AUDIO size or format")
    if not np.isfinite(x).all():
        raise PacketError("non-finite AUDIO samples")
    return x.reshape(channels, CHUNK)


MAX_HINTS_PER_DATAGRAM = 8
HINT_COUNT = struct.Struct("<B")  # hints in the datagram; hint i is of chunk seq + i


def hint_size(hint_channels: int, encoding: HintEncoding, codec: HintCodec | None = None) -> int:
    """Bytes of one encoded hint (PCA: of the boosted model's `codec`)."""
    n = hint_channels * N_BINS
    if encoding == HintEncoding.PCA:
        return 4 + _codec_for(codec, hint_channels).components
    return {HintEncoding.FLOAT32: 4 * n, HintEncoding.FLOAT16: 2 * n, HintEncoding.INT8: 4 + n}[
        encoding
    ]


def _codec_for(codec: HintCodec | None, hint_channels: int) -> HintCodec:
    if codec is None:
        raise PacketError("pca hints need the boosted model's hint codec")
    if codec.hint_channels != hint_channels:
        raise PacketError("the hint codec does not fit the stream's hint channels")
    return codec


def hint_payload_size(
    hint_channels: int, encoding: HintEncoding, count: int = 1, codec: HintCodec | None = None
) -> int:
    return HINT_COUNT.size + count * hint_size(hint_channels, encoding, codec)


def hint_datagram_size(
    hint_channels: int,
    encoding: HintEncoding,
    keyed: bool = True,
    count: int = 1,
    codec: HintCodec | None = None,
) -> int:
    """Bytes of one HINT datagram (with its MAC when keyed)."""
    payload = hint_payload_size(hint_channels, encoding, count, codec)
    return HEADER.size + payload + (MAC_SIZE if keyed else 0)


def max_hint_channels() -> int:
    """The most hint channels whose keyed float32 HINT fits one datagram."""
    return (MAX_DATAGRAM - HEADER.size - MAC_SIZE - HINT_COUNT.size) // (4 * N_BINS)


def pack_hints(
    hints: list[np.ndarray], encoding: HintEncoding, codec: HintCodec | None = None
) -> bytes:
    """The hints of consecutive chunks -> HINT payload."""
    if not 1 <= len(hints) <= MAX_HINTS_PER_DATAGRAM:
        raise PacketError(f"a HINT carries 1 to {MAX_HINTS_PER_DATAGRAM} hints")
    return HINT_COUNT.pack(len(hints)) + b"".join(pack_hint(h, encoding, codec) for h in hints)


def unpack_hints(
    payload: bytes, hint_channels: int, encoding: HintEncoding, codec: HintCodec | None = None
) -> list[np.ndarray]:
    """HINT payload -> the hints of chunks seq, seq + 1, ..., or PacketError."""
    if not payload:
        raise PacketError("bad HINT size")
    (count,) = HINT_COUNT.unpack_from(payload)
    size = hint_size(hint_channels, encoding, codec)
    if not 1 <= count <= MAX_HINTS_PER_DATAGRAM or len(payload) != 1 + count * size:
        raise PacketError("bad HINT size")
    return [
        unpack_hint(payload[1 + i * size : 1 + (i + 1) * size], hint_channels, encoding, codec)
        for i in range(count)
    ]


def _pack_int8(values: np.ndarray) -> bytes:
    peak = float(np.abs(values).max())
    scale = peak / 127.0 if peak > 0 else 1.0
    q = np.clip(np.round(values / scale), -127, 127).astype(np.int8)
    return struct.pack("<f", scale) + q.tobytes()


def _unpack_int8(payload: bytes) -> np.ndarray:
    (scale,) = struct.unpack_from("<f", payload)
    if not 0.0 < scale < 1e30:  # 127 x scale must stay finite
        raise PacketError("bad HINT scale")
    return np.frombuffer(payload, np.int8, offset=4).astype(np.float32) * np.float32(scale)


def pack_hint(hint: np.ndarray, encoding: HintEncoding, codec: HintCodec | None = None) -> bytes:
    """hint [C_h, 97] float32 -> its encoding (one hint of a HINT payload)."""
    if encoding == HintEncoding.FLOAT32:
        return hint.astype("<f4").tobytes()
    if encoding == HintEncoding.FLOAT16:
        return hint.astype("<f2").tobytes()
    if encoding == HintEncoding.PCA:
        return _pack_int8(_codec_for(codec, hint.shape[0]).coordinates(hint))
    return _pack_int8(hint)


def unpack_hint(
    payload: bytes, hint_channels: int, encoding: HintEncoding, codec: HintCodec | None = None
) -> np.ndarray:
    """One encoded hint -> [C_h, 97] float32, or PacketError."""
    if len(payload) != hint_size(hint_channels, encoding, codec):
        raise PacketError("bad HINT size")
    if encoding == HintEncoding.FLOAT32:
        h = np.frombuffer(payload, "<f4").astype(np.float32)
    elif encoding == HintEncoding.FLOAT16:
        h = np.frombuffer(payload, "<f2").astype(np.float32)
    elif encoding == HintEncoding.PCA:
        h = _codec_for(codec, hint_channels).reconstruct(_unpack_int8(payload))
    else:
        h = _unpack_int8(payload)
    if not np.isfinite(h).all():
        raise PacketError("non-finite HINT values")
    return h.reshape(hint_channels, N_BINS)


def bytes_per_second(
    hint_channels: int,
    channels: int,
    encoding: HintEncoding,
    sample_format: SampleFormat,
    keyed: bool,
    codec: HintCodec | None = None,
) -> tuple[float, float]:
    """(uplink, downlink) bytes per second of one stream, UDP/IPv4 headers included."""
    overhead = HEADER.size + (MAC_SIZE if keyed else 0) + UDP_IP_OVERHEAD
    sample_bytes = 2 if sample_format == SampleFormat.INT16 else 4
    up = overhead + AUDIO.size + channels * CHUNK * sample_bytes
    down = overhead + hint_payload_size(hint_channels, encoding, codec=codec)
    chunks = 16000 / CHUNK
    return up * chunks, down * chunks


# ---- Replay protection and keys -----------------------------------------------


class ReplayWindow:
    """Accepts each sequence number once, within a sliding window of `size`."""

    def __init__(self, size: int = 256):
        self.size = size
        self.top = -1
        self.seen: set[int] = set()

    def accept(self, seq: int) -> bool:
        if seq <= self.top - self.size or seq in self.seen:
            return False
        self.seen.add(seq)
        if seq > self.top:
            self.top = seq
            if len(self.seen) > 2 * self.size:
                self.seen = {s for s in self.seen if s > self.top - self.size}
        return True


def load_keys(path: str | os.PathLike) -> dict[int, bytes]:
    """A key file: one `KEY_ID HEX_SECRET` per line (id 1..65535, secret >= 16 bytes);
    blank lines and lines starting with # are ignored."""
    keys: dict[int, bytes] = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        try:
            key_id, secret = int(parts[0]), bytes.fromhex(parts[1])
        except (ValueError, IndexError):
            raise ValueError(f"{path}:{n}: expected 'KEY_ID HEX_SECRET'") from None
        if not 1 <= key_id <= 65535 or len(secret) < 16 or len(parts) != 2:
            raise ValueError(f"{path}:{n}: key id must be 1..65535 and the secret >= 16 bytes")
        keys[key_id] = secret
    if not keys:
        raise ValueError(f"{path}: no keys")
    return keys
