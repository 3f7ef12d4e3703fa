"""The hint link for real: a `kboost-rt serve` process, UDP on loopback, the
fault relay, several keyed streams, garbage floods."""

import dataclasses
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kboost_rt import protocol as p
from kboost_rt.client import HintClient, LinkError
from kboost_rt.config import PAPER_BOOSTED, PAPER_BOOSTED_ANY_DELAY, PAPER_LARGE, PAPER_SMALL
from kboost_rt.engine import NativeEngine
from kboost_rt.fallback import FALLBACK_AFTER, fallback_model
from kboost_rt.hint_codec import CODEC_FILE, fit_codec, load_codec
from kboost_rt.model_files import load_model_files, random_weights, save_model_files
from kboost_rt.params import LiveParams
from kboost_rt.process import process_file
from kboost_rt.processor import Processor, open_stream
from kboost_rt.protocol import HintEncoding
from kboost_rt.relay import DirectionLog, FaultRelay, Impairment
from kboost_rt.signal_path import CHUNK, LOOKAHEAD, SAMPLE_RATE

DELAY = 3
KEYS = {1: "11" * 32, 2: "22" * 32, 3: "33" * 32}
CLI = str(Path(sys.executable).parent / "kboost-rt")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    boosted = dataclasses.replace(
        PAPER_BOOSTED,
        large_model="sep-large",
        boost=dataclasses.replace(PAPER_BOOSTED.boost, delay=DELAY),
    )
    save_model_files(root / "sep-boosted-d3", boosted, random_weights(boosted, 1))
    # The shipped large model's size (the paper's is 4x the work: on a slow 2-core
    # machine three of its streams fill the server and every hint is late).
    large = dataclasses.replace(
        PAPER_LARGE,
        net=dataclasses.replace(PAPER_LARGE.net, dim=32, hidden=32, attention_heads=4),
    )
    save_model_files(root / "sep-large", large, random_weights(large, 2))
    # A hint codec for pca hints, fitted on this pair's own hints.
    engine = NativeEngine.from_folder(root / "sep-large", hints_for=root / "sep-boosted-d3")
    x = mixture(4.0, seed=9)
    hints = [engine.process_with_hint(x[:, t : t + CHUNK])[1] for t in range(0, x.shape[1], CHUNK)]
    fit_codec(np.array(hints), 32).save(root / "sep-boosted-d3")
    any_delay = dataclasses.replace(PAPER_BOOSTED_ANY_DELAY, large_model="sep-large")
    save_model_files(root / "sep-boosted", any_delay, random_weights(any_delay, 3))
    (root / "keys").write_text("".join(f"{k} {v}\n" for k, v in KEYS.items()))
    return root


class Server:
    def __init__(self, models: Path, keyed: bool, *extra: str):
        cmd = [
            CLI,
            "serve",
            "--model",
            str(models / "sep-boosted-d3"),
            *(
                ["--model", str(models / "sep-boosted")]
                if (models / "sep-boosted").is_dir()
                else []
            ),
            "--port",
            "0",
            "--report-every",
            "0",
            *extra,
        ]
        if keyed:
            cmd += ["--key-file", str(models / "keys")]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        line = self.proc.stdout.readline()
        match = re.search(r"on ([\d.]+):(\d+)", line)
        assert match, line + self.proc.stdout.read()
        self.address = (match.group(1), int(match.group(2)))

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=10)
        assert self.proc.returncode == 0, out
        return out


def _running(models: Path, keyed: bool):
    # Admission by measured load is the capacity test's; here every stream is admitted.
    s = Server(models, keyed, "--max-load", "1000")
    yield s
    if s.proc.poll() is None:
        s.stop()


@pytest.fixture
def server(models):
    yield from _running(models, keyed=False)


@pytest.fixture
def keyed_server(models):
    yield from _running(models, keyed=True)


def mixture(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((2, int(seconds * SAMPLE_RATE)))).astype(np.float32)


def in_process(models: Path, x: np.ndarray, chunks: int, arrived=None, wire=None) -> np.ndarray:
    """The boosted engine fed the hints of an in-process large engine at delay d
    (each hint through `wire`, if given: what the link's encoding does to it)."""
    large = NativeEngine.from_folder(models / "sep-large", hints_for=models / "sep-boosted-d3")
    small = NativeEngine.from_folder(models / "sep-boosted-d3")
    padded = np.zeros((2, chunks * CHUNK), np.float32)
    padded[:, : x.shape[1]] = x
    hints, out = [], []
    for t in range(chunks):
        chunk = padded[:, t * CHUNK : (t + 1) * CHUNK]
        hint = large.process_with_hint(chunk)[1]
        hints.append(hint if wire is None else wire(hint))
        j = t - DELAY
        use = j >= 0 and (arrived is None or arrived[j])
        out.append(small.process(chunk, hints[j] if use else None))
    return np.concatenate(out, axis=-1)


def test_stream_through_server_equals_in_process_pipeline(models, server, tmp_path):
    x = mixture(1.5)
    sf.write(tmp_path / "mix.wav", x.T, SAMPLE_RATE, subtype="FLOAT")
    result = process_file(
        tmp_path / "mix.wav",
        tmp_path / "out.wav",
        models / "sep-boosted-d3",
        server.address,
        encoding=HintEncoding.FLOAT32,  # lossless: float32 hints are the engine's own
        progress=False,
    )
    # Loopback loses nothing; a hint can only be late if this machine stalls the loop.
    assert result.link.lost == result.link.late and result.link.corrupt == 0
    assert result.link.on_time > 0 and not any(result.hints_used[:DELAY])
    # The in-process pipeline fed the same hints (those that were in time) gives the same output.
    arrived = result.hints_used[DELAY:]
    want = in_process(models, x, result.chunks, arrived)
    want = want[:, :, LOOKAHEAD : LOOKAHEAD + x.shape[1]]
    for s, path in enumerate(result.outputs):
        got, rate = sf.read(path, dtype="float32", always_2d=True)
        assert rate == SAMPLE_RATE and got.shape == (x.shape[1], 2)
        assert np.array_equal(got.T, want[s])
    served = int(re.search(r"chunks (\d+);", server.stop()).group(1))  # and it shut down
    assert served >= result.chunks - 2  # the last chunks' hints are never needed


def test_an_any_delay_model_streams_through_the_server_and_counts_hint_ages(
    models, server, tmp_path
):
    x = mixture(1.0, seed=4)
    sf.write(tmp_path / "mix.wav", x.T, SAMPLE_RATE, subtype="FLOAT")
    result = process_file(
        tmp_path / "mix.wav", tmp_path / "out.wav", models / "sep-boosted", server.address,
        encoding=HintEncoding.INT8, progress=False,
    )  # fmt: skip
    ages = result.hint_ages
    assert len(ages) == 9 and ages[0] == 0  # no hint is used before its chunk ran
    # a chunk may take two hints at once (one held up behind the other)
    assert sum(ages) == result.link.on_time >= sum(result.hints_used) > 0
    assert not result.hints_used[0]  # chunk 0 cannot have a hint yet
    # The schedule eval --jitter replays: when each chunk's hint came in.
    schedule = result.hint_schedule
    assert len(schedule) == result.chunks and all(a is None or a >= 1 for a in schedule)
    assert sum(a is not None for a in schedule) >= result.link.on_time
    # A version-1 HELLO asking for a delay the any-delay model does not have is refused.
    client = HintClient(server.address, "sep-boosted", 2, 3)
    with pytest.raises(LinkError, match="delay"):
        client.connect()
    client.close()


def test_pca_hints_through_the_server_are_the_codec_s_reconstructions(models, server, tmp_path):
    x = mixture(1.0, seed=4)
    sf.write(tmp_path / "mix.wav", x.T, SAMPLE_RATE, subtype="FLOAT")
    result = process_file(
        tmp_path / "mix.wav",
        tmp_path / "out.wav",
        models / "sep-boosted-d3",
        server.address,
        encoding=HintEncoding.PCA,
        progress=False,
    )
    assert result.link.on_time > 0 and result.link.corrupt == 0
    codec = load_codec(models / "sep-boosted-d3", 8)
    pca = HintEncoding.PCA

    def wire(hint):
        return p.unpack_hint(p.pack_hint(hint, pca, codec), 8, pca, codec)

    want = in_process(models, x, result.chunks, result.hints_used[DELAY:], wire)
    want = want[:, :, LOOKAHEAD : LOOKAHEAD + x.shape[1]]
    for s, path in enumerate(result.outputs):
        got, _ = sf.read(path, dtype="float32", always_2d=True)
        assert np.array_equal(got.T, want[s])
    # 4 + 32 bytes a hint instead of 4 + 776 (int8).
    assert p.hint_size(8, pca, codec) == 36


def run_stream(client: HintClient, engine: NativeEngine, x: np.ndarray) -> list[bool]:
    """A live device: one chunk per 8 ms, never waiting for the network."""
    chunks = x.shape[1] // CHUNK
    used, start = [], time.monotonic()
    for t in range(chunks):
        wait = start + (t + 1) * CHUNK / SAMPLE_RATE - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        chunk = np.ascontiguousarray(x[:, t * CHUNK : (t + 1) * CHUNK])
        client.send_chunk(t, chunk)
        hint = client.take_hint(t)
        engine.process(chunk, hint)
        used.append(hint is not None)
    return used


def settle(client: HintClient, datagrams: int, timeout: float = 30.0) -> None:
    """Wait until the client has read `datagrams` datagrams, however slow this machine."""
    deadline = time.monotonic() + timeout
    while client.stats().received < datagrams and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_chunk_overtaken_on_the_way_up_still_gets_its_hint(models, server):
    """Jitter near the chunk period reorders the uplink; the server holds a
    chunk that arrives ahead of a gap until the missing one comes."""
    client = HintClient(server.address, "sep-boosted-d3", 2, DELAY)
    client.connect()
    chunk = np.zeros((2, CHUNK), np.float32)
    order = [0, 2, 1, 3, 6, 4, 5]  # 1, then 4 and 5 overtaken; within a new
    for seq in order:  # stream's first burst (8 chunks), sent back to back
        client.send_chunk(seq, chunk)
    settle(client, len(order), timeout=10)
    received = client.stats().received
    client.close()
    assert received == len(order)  # a hint for every chunk, the overtaken ones too
    server.stop()


def test_faulty_link_statistics_match_the_relay(models, keyed_server):
    impairment = Impairment(
        delay_ms=2, jitter_ms=1.5, loss=0.1, reorder=0.05, duplicate=0.05, corrupt=0.03
    )
    relay = FaultRelay(keyed_server.address, Impairment(), seed=3).start()
    client = HintClient(
        relay.address,
        "sep-boosted-d3",
        2,
        DELAY,
        HintEncoding.INT8,
        key=(2, bytes.fromhex(KEYS[2])),
    )
    client.connect()
    # The handshake went through clean; from here on the relay impairs and keeps its record.
    relay.up, relay.down = DirectionLog(), DirectionLog()
    relay.impairment = impairment
    engine = NativeEngine.from_folder(models / "sep-boosted-d3")
    x = mixture(3.0, seed=1)
    used = run_stream(client, engine, x)
    time.sleep(0.2)  # the last hints land (if some do not, the relay's record says so)
    relay.stop()  # nothing reaches the client after this: the relay's record is final
    up, down = relay.up, relay.down
    settle(client, down.counts["forwarded"])
    stats = client.stats()
    client.close()
    chunks = len(used)
    assert chunks == x.shape[1] // CHUNK  # every chunk was produced
    assert up.counts["dropped"] > 0 and down.counts["dropped"] > 0  # the relay did its job
    assert stats.received == down.counts["forwarded"]
    # A needed hint reaches the client intact unless the relay dropped or corrupted it,
    # or the server never made it (its chunk was lost, or overtaken on the way up).
    # However slow this machine, such a hint is then on time or counted late, never lost.
    needed = range(chunks - DELAY)  # hints 0..N-d-1 are used at chunks d..N-1
    missing = sum(1 for j in needed if j not in down.delivered)
    assert missing >= sum(1 for j in needed if j in up.dropped | down.dropped)
    assert stats.lost - stats.late == missing
    assert stats.on_time == len(needed) - stats.lost
    assert sum(used) == stats.on_time
    assert stats.corrupt == sum(2 if s in down.duplicated else 1 for s in down.corrupted)
    assert stats.duplicate == len(down.duplicated - down.corrupted - down.dropped)


def test_keyed_streams_run_concurrently_and_a_wrong_key_is_refused(models, keyed_server):
    x = mixture(1.0, seed=2)
    results = {}

    def device(key_id):
        client = HintClient(
            keyed_server.address,
            "sep-boosted-d3",
            2,
            DELAY,
            key=(key_id, bytes.fromhex(KEYS[key_id])),
        )
        client.connect()
        run_stream(client, NativeEngine.from_folder(models / "sep-boosted-d3"), x)
        client.wait_for_replies(timeout=30)  # loopback: one hint per chunk sent
        results[key_id] = client.stats()
        client.close()

    threads = [threading.Thread(target=device, args=(k,)) for k in KEYS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for key_id, stats in results.items():
        # Every hint came back (a slow machine can only make some late).
        assert stats.received == stats.sent and stats.lost == stats.late, (key_id, stats)
        assert stats.corrupt == 0
    wrong = HintClient(keyed_server.address, "sep-boosted-d3", 2, DELAY, key=(1, b"x" * 32))
    with pytest.raises(LinkError, match="authentication failed"):
        wrong.connect()
    unkeyed = HintClient(keyed_server.address, "sep-boosted-d3", 2, DELAY)
    with pytest.raises(LinkError, match="authentication failed"):
        unkeyed.connect()
    out = keyed_server.stop()
    assert "opened 3" in out and "refused 0" in out


@pytest.mark.parametrize(
    "model,channels,delay,reason",
    [
        ("nope", 2, DELAY, "unknown model 'nope'"),
        ("sep-boosted-d3", 1, DELAY, "takes 2 channels, not 1"),
        ("sep-boosted-d3", 2, 6, "trained for delay 3, not delay 6"),
    ],
)
def test_handshake_mismatch_is_refused_with_a_reason(server, model, channels, delay, reason):
    with pytest.raises(LinkError, match=reason):
        HintClient(server.address, model, channels, delay).connect()


def test_streams_beyond_the_measured_capacity_are_refused(models):
    # The server times its step on this machine at start-up and says how many streams
    # that admits at half of one worker; exactly that many are, and the next is refused.
    server = Server(
        models,
        False,
        *("--workers", "1", "--max-load", "0.5"),
        *("--max-streams", "64", "--max-streams-per-address", "64", "--opens-per-second", "100"),
    )
    clients = []
    try:
        line = server.proc.stdout.readline()
        match = re.search(r"sep-boosted-d3: ([\d.]+) ms per chunk, admits (\d+) streams", line)
        assert match, line
        admits = int(match.group(2))
        for _ in range(admits):
            clients.append(HintClient(server.address, "sep-boosted-d3", 2, DELAY))
            clients[-1].connect()
        with pytest.raises(LinkError, match="server at capacity") as refused:
            HintClient(server.address, "sep-boosted-d3", 2, DELAY).connect()
        need = int(re.search(r"would need (\d+)% of its 1 worker", str(refused.value)).group(1))
        # One more stream is over the limit; the ones admitted were within it (to the
        # rounding of the whole percent printed).
        assert need > 50 - 1 and need * admits / (admits + 1) <= 50 + 1
    finally:
        for client in clients:
            client.close()
        out = server.stop()
    assert f"opened {admits}," in out and "refused 1," in out


def test_garbage_flood_does_not_disturb_a_stream(models, server):
    stop = threading.Event()
    sent = [0]

    def flood():
        rng = np.random.default_rng(9)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        while not stop.is_set() and sent[0] < 20000:
            for _ in range(50):
                size = int(rng.integers(0, 1500))
                data = rng.bytes(size)
                if rng.random() < 0.5:  # half of it looks like our header
                    data = b"KBHL\x01\x04\x00\x00" + data
                s.sendto(data, server.address)
                sent[0] += 1
            time.sleep(0.001)
        s.close()

    client = HintClient(server.address, "sep-boosted-d3", 2, DELAY)
    client.connect()
    flooder = threading.Thread(target=flood)
    flooder.start()
    x = mixture(1.5, seed=4)
    used = run_stream(client, NativeEngine.from_folder(models / "sep-boosted-d3"), x)
    stop.set()
    flooder.join()
    client.wait_for_replies(timeout=30)  # loopback: one hint per chunk sent
    stats = client.stats()
    client.close()
    assert sent[0] > 1000
    # No hint of the stream was lost to the flood (a slow machine can only make some late).
    assert stats.lost == stats.late and sum(used) == stats.on_time > 0
    out = server.stop()
    dropped = int(re.search(r"dropped (\d+)", out).group(1))
    assert dropped >= 0.9 * sent[0]  # counted, not processed (a few may be lost by the kernel)


def test_serve_reports_a_bad_model_clearly(tmp_path):
    result = subprocess.run(
        [CLI, "serve", "--model", str(tmp_path / "none"), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "model folder not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_pca_hints_need_the_codec_on_both_sides(models, tmp_path):
    shutil.copytree(models, tmp_path / "m")
    codec = load_codec(tmp_path / "m" / "sep-boosted-d3", 8)
    (tmp_path / "m" / "sep-boosted-d3" / CODEC_FILE).unlink()
    server = Server(tmp_path / "m", False)
    try:
        pca = HintClient(server.address, "sep-boosted-d3", 2, DELAY, HintEncoding.PCA, codec=codec)
        with pytest.raises(LinkError, match="no hint codec"):
            pca.connect()
        pca.close()
        plain = HintClient(server.address, "sep-boosted-d3", 2, DELAY, HintEncoding.INT8)
        assert plain.connect().encoding == HintEncoding.INT8  # int8 still opens
        plain.close()
        # A device left to its default asks for pca, is refused, and takes int8.
        stream = open_stream(models / "sep-boosted-d3", server.address)
        assert stream.client.hello.encoding == HintEncoding.INT8
        stream.close()
    finally:
        server.stop()
    with pytest.raises(ValueError, match="hint codec"):
        HintClient(server.address, "sep-boosted-d3", 2, DELAY, HintEncoding.PCA)


def test_serve_refuses_a_model_whose_hints_do_not_fit_a_datagram(models, tmp_path):
    wide = dataclasses.replace(
        PAPER_BOOSTED,
        large_model="sep-large",
        boost=dataclasses.replace(PAPER_BOOSTED.boost, hint_channels=11),
    )
    shutil.copytree(models / "sep-large", tmp_path / "sep-large")
    save_model_files(tmp_path / "wide", wide, random_weights(wide, 3))
    result = subprocess.run(
        [CLI, "serve", "--model", str(tmp_path / "wide"), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "11 hint channels make a 4325-byte float32 HINT datagram" in result.stderr
    assert "at most 10 channels" in result.stderr and "Traceback" not in result.stderr


def test_a_stream_whose_step_fails_is_dropped_and_the_server_serves_on(models):
    from kboost_rt.server import HintServer, load_served_models

    server = HintServer(load_served_models([models / "sep-boosted-d3"]), workers=1, max_load=1000)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        broken = HintClient(server.address, "sep-boosted-d3", 2, DELAY)
        broken.connect()
        (stream,) = server.streams.values()

        def fail(chunk):
            raise RuntimeError("engine fault")

        stream.engine.process_with_hint = fail
        chunk = np.zeros((2, CHUNK), np.float32)
        for t in range(5):
            broken.send_chunk(t, chunk)
        deadline = time.monotonic() + 30
        while server.streams and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not server.streams and server.stats["streams_failed"] == 1
        assert stream.stats["errors"] == 1
        # The server still serves: a new stream gets its hints.
        healthy = HintClient(server.address, "sep-boosted-d3", 2, DELAY)
        healthy.connect()
        for t in range(5):
            healthy.send_chunk(t, chunk)
        healthy.wait_for_replies(timeout=30)
        assert healthy.stats().received == 5
        broken.close()
        healthy.close()
    finally:
        server.stop()
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_process_fits_the_input_or_says_why(models, tmp_path):
    model = str(models / "sep-boosted-d3")

    def run(name, *extra):
        return subprocess.run(
            [
                CLI,
                "process",
                str(tmp_path / name),
                str(tmp_path / "o.wav"),
                "--model",
                model,
                "--quiet",
                *extra,
            ],
            capture_output=True,
            text=True,
        )

    sf.write(tmp_path / "mono.wav", 0.1 * np.ones(1600, np.float32), SAMPLE_RATE)
    result = run("mono.wav")
    assert result.returncode == 0 and "mono input duplicated" in result.stdout
    sf.write(tmp_path / "8k.wav", 0.1 * np.ones((800, 2), np.float32), 8000)
    result = run("8k.wav", "--mix")
    assert result.returncode == 0 and "resampled 8000 Hz" in result.stdout
    out, rate = sf.read(tmp_path / "o.wav", always_2d=True)
    assert rate == 8000 and out.shape == (800, 2)  # the input's rate and length
    for f in tmp_path.glob("o*.wav"):
        f.unlink()
    sf.write(tmp_path / "3ch.wav", np.zeros((1600, 3), np.float32), SAMPLE_RATE)
    sf.write(tmp_path / "empty.wav", np.zeros((0, 2), np.float32), SAMPLE_RATE)
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEjunk")
    for name, extra, message in [
        ("3ch.wav", [], "3 channels; the model takes 2"),
        ("empty.wav", [], "no samples"),
        ("bad.wav", [], "cannot read audio"),
        ("mono.wav", ["--source", "5", "--mix"], "source must be"),
    ]:
        result = run(name, *extra)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert not list(tmp_path.glob("o*.wav"))  # nothing half-written
    result = subprocess.run(
        [CLI, "process", str(tmp_path / "mono.wav"), "/proc/x/o.wav", "--model", model, "--quiet"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "cannot write there" in result.stderr


def test_process_with_a_local_server(models, tmp_path):
    x = mixture(0.5, seed=5)
    sf.write(tmp_path / "mix.wav", x.T, SAMPLE_RATE, subtype="FLOAT")
    result = subprocess.run(
        [
            CLI,
            "process",
            str(tmp_path / "mix.wav"),
            str(tmp_path / "out.wav"),
            "--model",
            str(models / "sep-boosted-d3"),
            "--local-server",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "started a local hint server" in result.stderr
    on_time = int(re.search(r"hints: (\d+) on time", result.stdout).group(1))
    assert on_time > 0 and (tmp_path / "out_s1.wav").is_file()


def test_the_small_model_takes_over_when_the_server_dies(models, tmp_path):
    root = tmp_path / "models"
    for name in ("sep-boosted-d3", "sep-large"):
        shutil.copytree(models / name, root / name)
    small = dataclasses.replace(PAPER_SMALL, task=PAPER_BOOSTED.task)
    save_model_files(root / "separate-small", small, random_weights(small, 9))
    server = Server(root, keyed=False)
    client = HintClient(server.address, "sep-boosted-d3", 2, DELAY)
    client.connect()
    fallback = fallback_model(root / "sep-boosted-d3")
    assert fallback is not None and fallback.name == "separate-small"
    params = LiveParams()
    files = load_model_files(root / "sep-boosted-d3")
    processor = Processor(files.config, files.tensors, client.link, fallback, params)
    reference = NativeEngine.from_folder(root / "separate-small")
    x = mixture(1.6, seed=8).reshape(2, -1, CHUNK).transpose(1, 0, 2)
    outputs, wants = [], []
    start = time.monotonic()
    try:
        for t, chunk in enumerate(x):
            if t in (30, 60):  # boost off and on again: hints still come, no fallback
                params.set(boost=t == 60)
            if t == 100:
                assert processor.chunks_on_small == 0
                server.stop()  # hints stop coming
                stopped_at = processor.hints_used
            time.sleep(max(0.0, start + (t + 1) * CHUNK / SAMPLE_RATE - time.monotonic()))
            outputs.append(processor.process(chunk)[0].copy())
            wants.append(reference.process(chunk))
    finally:
        client.close()
    assert stopped_at > 30 and processor.hints_used - stopped_at <= 2 * DELAY
    assert processor.chunks_on_small >= len(x) - 100 - FALLBACK_AFTER - 2 * DELAY
    order, gains = processor.fallback_mapping()  # held since the small model took over
    assert sorted(order) == [0, 1] and np.all(gains != 1.0)  # learnt, not the identity
    for got, want in zip(outputs[-60:], wants[-60:], strict=True):  # the small model, mapped
        for i, j in enumerate(order):
            assert np.array_equal(got[i], (gains[i] * want[j]).astype(np.float32))
    assert not np.allclose(outputs[90], wants[90], atol=1e-3)  # the boosted model, before


def test_a_device_reopens_its_stream_on_a_restarted_server(models):
    """A server that does not know a stream answers its chunks with a cookie, so a
    device whose server restarted (or whose router chose another backend) gets
    its hints again without being told to reconnect."""
    first = Server(models, False, "--max-load", "1000")
    client = HintClient(first.address, "sep-boosted-d3", 2, DELAY)
    client.connect()
    x = mixture(1.0)
    sent = 0

    def stream_until_a_hint_for_chunk(first: int, timeout: float = 30.0) -> None:
        """Chunks at real time until the hint of chunk `first` or a later one has
        come back, however slow the machine."""
        nonlocal sent
        deadline = time.monotonic() + timeout
        while client._arrived.top < first and time.monotonic() < deadline:
            t = sent % 125
            client.send_chunk(sent, np.ascontiguousarray(x[:, t * CHUNK : (t + 1) * CHUNK]))
            client.take_hint(sent)
            sent += 1
            time.sleep(CHUNK / SAMPLE_RATE)
        assert client._arrived.top >= first, f"no hint in {timeout} s: {client.stats()}"

    second = None
    try:
        stream_until_a_hint_for_chunk(0)
        first.stop()
        second = Server(models, False, "--max-load", "1000", "--port", str(first.address[1]))
        stream_until_a_hint_for_chunk(sent)  # sent after the first server had gone
        assert client._counts["cookies"] >= 2  # the handshake's, and the second server's
    finally:
        client.close()
        out = second.stop() if second is not None else ""
    assert f"stream {client.stream_id:08x}" in out


def test_a_repeated_hello_cannot_change_an_open_stream(models, server):

    client = HintClient(server.address, "sep-boosted-d3", 2, DELAY)
    client.connect()
    try:
        # The same stream, from the same address, now asking for int8 hints (with
        # the cookie of its handshake: the address is proven).
        other = dataclasses.replace(client.hello, encoding=HintEncoding.INT8)
        client.sock.send(p.encode(p.Packet(p.Type.HELLO, client.stream_id, 0, other.pack()), None))
        used = run_stream(client, NativeEngine.from_folder(models / "sep-boosted-d3"), mixture(0.5))
        client.wait_for_replies(2.0)
        stats = client.stats()
    finally:
        client.close()
    # Its hints still come as the stream opened (float32): none counted corrupt.
    assert sum(used) > 0 and stats.corrupt == 0 and client._counts["refused"] == 1, stats
    assert "a HELLO cannot change them" in server.stop()


def test_refusals_are_counted_not_logged_one_by_one(models, server):

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(server.address)
    sock.settimeout(10)
    bad = p.Hello("no-such-model", 2, DELAY, HintEncoding.FLOAT32, p.SampleFormat.FLOAT32)
    for i in range(300):  # each a full handshake: a cookie, then the refusal
        sock.send(p.encode(p.Packet(p.Type.HELLO, i, 0, bad.pack())))
        cookie = p.unpack_cookie(p.decode(sock.recv(4096)).payload)
        with_cookie = dataclasses.replace(bad, cookie=cookie)
        sock.send(p.encode(p.Packet(p.Type.HELLO, i, 0, with_cookie.pack())))
        assert p.decode(sock.recv(4096)).type == p.Type.REFUSE
    sock.close()
    out = server.stop()
    lines = [line for line in out.splitlines() if "refused stream" in line]
    assert 1 <= len(lines) <= 5, lines  # one a second at most
    assert "refused 300," in out  # and the summary counts every one


def test_loadtest_counts_every_hint_and_every_byte(models, tmp_path):

    out = tmp_path / "load.json"
    result = subprocess.run(
        [CLI, "loadtest", "--model", str(models / "sep-boosted-d3"), "--streams", "1,3"]
        + ["--seconds", "1", "--key-file", str(models / "keys"), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(out.read_text())
    assert [r["streams"] for r in doc["results"]] == [1, 3]
    # The model has a hint codec, so the streams asked for pca hints (4 + 32 bytes).
    assert doc["encoding"] == "pca"
    codec = load_codec(models / "sep-boosted-d3", 8)
    up, down = p.bytes_per_second(8, 2, HintEncoding.PCA, p.SampleFormat.INT16, True, codec)
    for r in doc["results"]:
        assert r["on_time"] + r["late"] + r["lost"] == pytest.approx(1.0)
        assert r["rtt_p50"] <= r["rtt_p99"]
        # Every chunk went up; the downlink is exactly the hints that came back.
        assert r["up_kBps_per_stream"] == pytest.approx(up / 1e3)
        assert r["down_kBps_per_stream"] == pytest.approx(down / 1e3 * (1 - r["lost"]))
        assert 0 < r["server_cpu"] and 0 < r["generator_cpu"]
    assert "streams  on time" in result.stdout


def test_loadtest_says_what_is_wrong_with_its_arguments(models):
    for args in (["--streams", "0"], ["--streams", "x"], ["--model", str(models / "sep-large")]):
        result = subprocess.run(
            [CLI, "loadtest", *args, "--seconds", "0.1"], capture_output=True, text=True
        )
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert "error:" in result.stderr
