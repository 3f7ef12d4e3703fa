"""The hint-link wire format: round trips, every kind of bad datagram, fuzzing."""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kboost_rt import protocol as p

KEY = bytes(range(32))
KEYS = {7: KEY}


def audio_packet(seq=5, key_id=0):
    chunk = np.linspace(-1, 1, 256, dtype=np.float32).reshape(2, 128)
    return p.Packet(
        p.Type.AUDIO, 0xDEADBEEF, seq, p.pack_audio(chunk, p.SampleFormat.INT16), key_id
    )


def test_round_trip_plain_and_keyed():
    packet = audio_packet()
    assert p.decode(p.encode(packet)) == packet
    keyed = audio_packet(key_id=7)
    data = p.encode(keyed, KEY)
    assert len(data) == p.HEADER.size + len(keyed.payload) + p.MAC_SIZE
    assert p.decode(data, KEYS) == keyed


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda d: d[:10], "truncated header"),
        (lambda d: b"XXXX" + d[4:], "bad magic"),
        (lambda d: d[:4] + b"\x01" + d[5:], "unsupported version 1"),
        (lambda d: d[:5] + b"\x63" + d[6:], "unknown packet type 99"),
        (lambda d: d[:6] + b"\x80" + d[7:], "unknown flags"),
        (lambda d: d[:-1], "length mismatch"),
        (lambda d: d + b"\x00", "length mismatch"),
        (lambda d: d + bytes(5000), "oversized datagram"),
    ],
)
def test_malformed_datagrams_raise_packet_error(mutate, message):
    with pytest.raises(p.PacketError, match=message):
        p.decode(mutate(p.encode(audio_packet())))


def test_authentication():
    plain = p.encode(audio_packet(key_id=7))
    with pytest.raises(p.PacketError, match="unauthenticated"):
        p.decode(plain, KEYS)
    with pytest.raises(p.PacketError, match="bad MAC"):
        p.decode(p.encode(audio_packet(key_id=7), bytes(32)), KEYS)  # wrong secret
    with pytest.raises(p.PacketError, match="unauthenticated"):
        p.decode(p.encode(audio_packet(key_id=8), KEY), KEYS)  # unknown key id
    data = bytearray(p.encode(audio_packet(key_id=7), KEY))
    data[30] ^= 1  # one flipped payload bit
    with pytest.raises(p.PacketError, match="bad MAC"):
        p.decode(bytes(data), KEYS)


@pytest.mark.parametrize(
    "encoding,tol",
    [(p.HintEncoding.FLOAT32, 0.0), (p.HintEncoding.FLOAT16, 2e-3), (p.HintEncoding.INT8, 1 / 127)],
)
def test_hint_encodings(encoding, tol):
    hint = np.random.default_rng(0).standard_normal((8, 97)).astype(np.float32)
    payload = p.pack_hint(hint, encoding)
    assert len(payload) == p.hint_size(8, encoding)
    back = p.unpack_hint(payload, 8, encoding)
    assert np.abs(back - hint).max() <= tol * np.abs(hint).max()
    with pytest.raises(p.PacketError, match="bad HINT size"):
        p.unpack_hint(payload[:-1], 8, encoding)


def test_audio_and_handshake_payloads():
    chunk = np.random.default_rng(1).uniform(-1, 1, (2, 128)).astype(np.float32)
    exact = p.unpack_audio(p.pack_audio(chunk, p.SampleFormat.FLOAT32), 2)
    assert np.array_equal(exact, chunk)
    assert np.abs(p.unpack_audio(p.pack_audio(chunk, p.SampleFormat.INT16), 2) - chunk).max() < 1e-4
    with pytest.raises(p.PacketError, match="channel count"):
        p.unpack_audio(p.pack_audio(chunk, p.SampleFormat.INT16), 1)
    nan = p.pack_audio(np.full((1, 128), np.nan, np.float32), p.SampleFormat.FLOAT32)
    with pytest.raises(p.PacketError, match="non-finite"):
        p.unpack_audio(nan, 1)
    hello = p.Hello("separate-boosted-d3", 2, 3, p.HintEncoding.INT8, p.SampleFormat.INT16)
    assert p.Hello.unpack(hello.pack()) == hello
    welcome = p.Welcome(8, 3, p.HintEncoding.INT8, p.SampleFormat.INT16)
    assert p.Welcome.unpack(welcome.pack()) == welcome
    with pytest.raises(p.PacketError):
        p.Hello.unpack(b"\x02\x03\x09\x00name")  # encoding 9 does not exist


def test_hints_of_several_chunks_share_a_datagram():
    hints = [np.full((8, 97), i, np.float32) for i in range(3)]
    payload = p.pack_hints(hints, p.HintEncoding.FLOAT16)
    assert len(payload) == p.hint_payload_size(8, p.HintEncoding.FLOAT16, count=3)
    assert all(
        np.array_equal(a, b) for a, b in zip(p.unpack_hints(payload, 8, 1), hints, strict=True)
    )
    for bad in (b"", b"\x00", payload[:-1], b"\x09" + payload[1:], b"\x02" + payload[1:]):
        with pytest.raises(p.PacketError, match="bad HINT size"):
            p.unpack_hints(bad, 8, p.HintEncoding.FLOAT16)


def test_sequence_numbers_have_64_bits():
    packet = audio_packet(seq=2**40 + 3)
    assert p.decode(p.encode(packet)).seq == 2**40 + 3
    w = p.ReplayWindow(size=8)
    assert w.accept(2**32 - 1) and w.accept(2**32) and not w.accept(2**32 - 1)


def test_cookies_bind_address_stream_key_and_time():
    jar = p.Cookies()
    addr = ("192.0.2.1", 5000)
    cookie = jar.issue(addr, 7, 1, now=100.0)
    assert len(cookie) == p.COOKIE_SIZE and jar.check(cookie, addr, 7, 1, now=105.0)
    assert not jar.check(cookie, ("192.0.2.1", 5001), 7, 1, now=105.0)
    assert not jar.check(cookie, ("192.0.2.2", 5000), 7, 1, now=105.0)
    assert not jar.check(cookie, addr, 8, 1, now=105.0)
    assert not jar.check(cookie, addr, 7, 2, now=105.0)
    assert not jar.check(cookie, addr, 7, 1, now=100.0 + p.COOKIE_LIFETIME + 1)
    assert not p.Cookies().check(cookie, addr, 7, 1, now=105.0)  # another server's secret
    assert not jar.check(p.NO_COOKIE, addr, 7, 1, now=105.0)


def test_a_version_1_hello_gets_a_version_1_refusal_no_larger():
    old = p.HEADER_V1.pack(p.MAGIC, 1, 1, 0, 0, 0xABCD, 0, 0, 23) + b"\x02\x03\x00\x00" + b"s" * 19
    reply = p.refuse_version_1(old)
    assert reply is not None and len(reply) <= len(old)
    magic, version, ptype, _, _, sid, _, _, length = p.HEADER_V1.unpack_from(reply)
    assert (magic, version, ptype, sid) == (p.MAGIC, 1, p.Type.REFUSE, 0xABCD)
    assert reply[p.HEADER_V1.size :] == b"protocol 2 needed"
    assert p.refuse_version_1(old[:5] + b"\x04" + old[6:]) is None  # only a HELLO is answered
    assert p.refuse_version_1(p.encode(audio_packet())) is None


def test_nothing_sent_before_an_address_is_proven_outgrows_the_request():
    hello = p.Hello("m", 2, 3, p.HintEncoding.FLOAT32, p.SampleFormat.FLOAT32)
    request = p.encode(p.Packet(p.Type.HELLO, 1, 0, hello.pack()))  # the smallest HELLO
    retry = p.encode(p.Packet(p.Type.RETRY, 1, 0, bytes(p.COOKIE_SIZE)))
    assert len(retry) <= len(request)
    assert len(p.encode(p.Packet(p.Type.RETRY, 1, 0, bytes(24), 7), KEY)) <= len(
        p.encode(p.Packet(p.Type.HELLO, 1, 0, hello.pack(), 7), KEY)
    )
    long = p.Packet(p.Type.REFUSE, 1, 0, b"x" * 500)
    assert len(p.encode_within(long, len(request))) == len(request)


def test_replay_window():
    w = p.ReplayWindow(size=8)
    assert [w.accept(s) for s in (0, 1, 1, 5, 3, 3)] == [True, True, False, True, True, False]
    assert w.accept(100) and not w.accept(92) and w.accept(93) and not w.accept(100)


def test_key_file(tmp_path):
    f = tmp_path / "keys"
    f.write_text("# device keys\n1 " + "ab" * 16 + "\n\n2 " + "cd" * 32 + "\n")
    assert p.load_keys(f) == {1: b"\xab" * 16, 2: b"\xcd" * 32}
    for bad in ("1 abcd\n", "x " + "ab" * 16 + "\n", "0 " + "ab" * 16 + "\n", "# none\n"):
        f.write_text(bad)
        with pytest.raises(ValueError):
            p.load_keys(f)


def test_bandwidth_table_numbers():
    up, down = p.bytes_per_second(8, 2, p.HintEncoding.FLOAT32, p.SampleFormat.INT16, False)
    assert up == 125 * (24 + 28 + 2 + 512) and down == 125 * (24 + 28 + 1 + 3104)


# ---- Fuzzing: 100 000 inputs in all; only PacketError may come out. ----

VALID = [
    p.encode(audio_packet()),
    p.encode(audio_packet(key_id=7), KEY),
    p.encode(
        p.Packet(
            p.Type.HINT, 1, 2, p.pack_hints([np.ones((8, 97), np.float32)], p.HintEncoding.INT8)
        )
    ),
]


def parse_everything(data: bytes) -> None:
    for keys in (None, KEYS):
        try:
            packet = p.decode(data, keys)
        except p.PacketError:
            continue
        payload = packet.payload
        for parse, args in (
            (p.unpack_audio, (2,)),
            (p.unpack_hints, (8, p.HintEncoding.INT8)),
            (p.unpack_hints, (8, p.HintEncoding.FLOAT16)),
            (p.Hello.unpack, ()),
            (p.Welcome.unpack, ()),
            (p.unpack_cookie, ()),
        ):
            try:
                parse(payload, *args)
            except p.PacketError:
                pass


# A short fuzz in the suite; KBOOST_FUZZ_EXAMPLES=50000 (or more) for a long one.
FUZZ = settings(
    max_examples=int(os.environ.get("KBOOST_FUZZ_EXAMPLES", "3000")),
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@FUZZ
@given(st.binary(max_size=5000))
def test_fuzz_random_bytes(data):
    parse_everything(data)


@FUZZ
@given(
    st.sampled_from(VALID),
    st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=8),
    st.integers(0, 4200),
)
def test_fuzz_mutated_packets(base, flips, cut):
    data = bytearray(base)
    for i, v in flips:
        if i < len(data):
            data[i] = v
    parse_everything(bytes(data[:cut]))
