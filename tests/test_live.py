"""`kboost-rt live` for real: jackd (dummy backend), PortAudio's JACK host API,
and a test JACK client that plays a known mixture into the host and records
what it plays back."""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kboost_rt import _native
from kboost_rt.config import PAPER_BOOSTED
from kboost_rt.model_files import random_weights, save_model_files
from kboost_rt.params import Params
from kboost_rt.process import process_file
from kboost_rt.resampling import pair
from kboost_rt.signal_path import CHUNK

jack = pytest.importorskip("jack")
pytest.importorskip("pyaudio")
CLI = str(Path(sys.executable).parent / "kboost-rt")


def start_live(tmp_path: Path, jack_server: str, seconds: float, *extra: str):
    """`kboost-rt live` on the test model, recording its input, output and stats."""
    return subprocess.Popen(
        [
            CLI,
            "live",
            "--model",
            str(tmp_path / "m"),
            "--seconds",
            str(seconds),
            "--quiet",
            "--record-input",
            str(tmp_path / "in.wav"),
            "--record-output",
            str(tmp_path / "out.wav"),
            "--stats-json",
            str(tmp_path / "stats.json"),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, JACK_DEFAULT_SERVER=jack_server),
    )


def wait_for_ports(client, **wanted) -> dict:
    """name -> predicate(port); polls until every predicate matches some port."""
    deadline = time.monotonic() + 10
    while True:
        found = {name: [p for p in client.get_ports() if test(p)] for name, test in wanted.items()}
        if all(found.values()) or time.monotonic() > deadline:
            assert all(found.values()), [p.name for p in client.get_ports()]
            return found
        time.sleep(0.05)


def is_host(tester: str):
    """Audio ports of the host under test: not the tester's, not the system's."""
    return lambda p: p.is_audio and not p.name.startswith((tester, "system"))


def find_lag(haystack: np.ndarray, needle: np.ndarray) -> int:
    """Offset of `needle` in `haystack` (1-D), by cross-correlation."""
    corr = np.correlate(haystack, needle[:4000], mode="valid")
    return int(np.argmax(np.abs(corr)))


def locate_blocks(got: np.ndarray, sent: np.ndarray, atol: float = 0.0) -> np.ndarray:
    """Where each 128-sample block of `got` [C, n] (on its own 128-grid) occurs in
    `sent` [C, m], -2 where it is silence, or -1 where it is neither. JACK moves whole
    128-frame periods; on a slow, loaded machine an xrun can drop one (the
    host's or the tester's Python callback missed it), so the tests check
    order and exactness block by block rather than one contiguous run."""
    last = sent.shape[1] - CHUNK
    found = []
    for start in range(0, got.shape[1] - CHUNK + 1, CHUNK):
        block = got[:, start : start + CHUNK]
        if not block.any():
            found.append(-2)
            continue
        candidates = np.flatnonzero(np.abs(sent[0, : last + 1] - block[0, 0]) <= atol)
        hit = next(
            (
                int(c)
                for c in candidates
                if np.allclose(sent[:, c : c + CHUNK], block, rtol=0, atol=atol)
            ),
            -1,
        )
        found.append(hit)
    return np.array(found)


def assert_in_order(positions: np.ndarray, blocks: int, what: str) -> None:
    """`positions` (from `locate_blocks`) cover `blocks` blocks of the sent signal
    in order, on one 128-grid, with at most a tenth of them lost to xruns."""
    hits = np.unique(positions[positions >= 0])
    assert len(hits) > 0, f"{what}: none of the sent audio arrived"
    steps = np.diff(positions[positions >= 0])
    # A step of 0 (or silence): a client missed a period and its port kept the
    # last one (or was cleared).
    assert np.all(steps >= 0) and np.all(steps % CHUNK == 0), f"{what}: out of order {hits}"
    # Blocks that arrived form one run: no foreign block inside it.
    run = np.flatnonzero(positions >= 0)
    assert np.all(positions[run[0] : run[-1] + 1] != -1), f"{what}: a corrupt block"
    assert len(hits) >= 0.9 * blocks, f"{what}: {blocks - len(hits)} of {blocks} blocks lost"


def assert_pieces_match(
    haystack: np.ndarray, needle: np.ndarray, r: float, what: str, piece: int = 1000
) -> None:
    """Each `piece`-sample piece of `needle` is found in `haystack` (1-D) with
    correlation above `r`, in order; a fifth may be lost to xruns (see
    `locate_blocks`), which shift what follows by a period (one dropped period
    can spoil the two pieces it straddles)."""
    found, lags = [], []
    for start in range(0, len(needle) - piece + 1, piece):
        part = needle[start : start + piece]
        lag = find_lag(haystack, part)
        found.append(bool(np.corrcoef(haystack[lag : lag + piece], part)[0, 1] > r))
        if found[-1]:
            lags.append(lag)
    assert np.all(np.diff(lags) > 0), f"{what}: pieces out of order {lags} {found}"
    assert sum(found) >= 0.8 * len(found), f"{what}: pieces matched {found}"


def play_through_live(
    tmp_path: Path, jack_server: str, name: str, mixture: np.ndarray, *flags: str
):
    """Run `kboost-rt live` for 3 s while a JACK client `name` plays `mixture`
    [2, samples] (once, after the host is connected) into the host's inputs and
    records its outputs. Returns (live's stderr, the recording [2, frames])."""
    recorded = np.zeros((2, mixture.shape[1] + 6 * 48000), np.float32)
    played, written = [0], [0]
    go = threading.Event()
    client = jack.Client(name, servername=jack_server)
    outs = [client.outports.register(f"play_{i}") for i in (1, 2)]
    ins = [client.inports.register(f"rec_{i}") for i in (1, 2)]

    @client.set_process_callback
    def process(frames):
        for c in range(2):
            out = outs[c].get_array()
            out[:] = 0
            if go.is_set() and played[0] < mixture.shape[1]:
                n = min(frames, mixture.shape[1] - played[0])
                out[:n] = mixture[c, played[0] : played[0] + n]
            if written[0] + frames <= recorded.shape[1]:
                recorded[c, written[0] : written[0] + frames] = ins[c].get_array()
        if go.is_set():
            played[0] += frames
        written[0] += frames

    with client:
        live = start_live(tmp_path, jack_server, 3, *flags)
        ports = wait_for_ports(
            client,
            host_in=lambda p: is_host(name)(p) and p.is_input,
            host_out=lambda p: is_host(name)(p) and p.is_output,
        )
        for src, dst in zip(outs, ports["host_in"], strict=False):
            client.connect(src, dst)
        for src, dst in zip(ports["host_out"], ins, strict=False):
            client.connect(src, dst)
        time.sleep(0.3)
        go.set()
        out, err = live.communicate(timeout=30)
        assert live.returncode == 0, out + err
        client.deactivate()
    return err, recorded[:, : min(written[0], recorded.shape[1])]


def test_live_through_jack_equals_file_processing(jack_server, tmp_path, monkeypatch):
    monkeypatch.setenv("JACK_DEFAULT_SERVER", jack_server)
    save_model_files(tmp_path / "m", PAPER_BOOSTED, random_weights(PAPER_BOOSTED, 7))
    rng = np.random.default_rng(0)
    mixture = (0.2 * rng.standard_normal((2, 16000))).astype(np.float32)  # 1 s
    flags = ("--gain-db", "-4.5", "--wet", "0.7", "--source", "2")  # the starting values
    err, played_back = play_through_live(tmp_path, jack_server, "kboost-tester", mixture, *flags)
    assert "ALSA lib" not in err and "jack" not in err.lower()  # the libraries kept quiet

    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["live"]["wrong_sizes"] == 0 and stats["chunks"] >= 300
    # The callback's own times, from the native histogram, against its 8 ms period.
    times = stats["live"]["callback_us"]
    assert stats["live"]["period_us"] == 8000 and 0 < times["p50"] <= times["p999"] <= times["max"]
    assert stats["live"]["realtime"] in (True, False)  # it asked, and says what it got
    got_in, _ = sf.read(tmp_path / "in.wav", dtype="float32", always_2d=True)
    got_out, _ = sf.read(tmp_path / "out.wav", dtype="float32", always_2d=True)
    # 1. The host received the mixture, sample for sample (whole periods that an
    # xrun dropped aside; then the stats say so).
    lag = find_lag(got_in[:, 0], mixture[0])
    received = locate_blocks(got_in.T, mixture)
    assert_in_order(received, mixture.shape[1] // CHUNK, f"input ({stats['live']})")
    # 2. What it played equals `kboost-rt process --mix` of what it received.
    params = Params(gain_db=-4.5, wet=0.7, source=2)
    process_file(
        tmp_path / "in.wav", tmp_path / "file.wav", tmp_path / "m", progress=False, mix=True,
        params=params,
    )  # fmt: skip
    file_out, _ = sf.read(tmp_path / "file.wav", dtype="float32", always_2d=True)
    # The live stream's output lags its input by the 64-sample look-ahead.
    assert np.array_equal(got_out[64:], file_out[: len(got_out) - 64])
    # 3. And that is what came out of the host's JACK ports (a fixed latency later).
    segment = got_out[lag + 2048 : lag + 12032].T
    back = locate_blocks(played_back, segment, atol=1e-7)
    assert_in_order(back, segment.shape[1] // CHUNK, f"output ({stats['live']})")


def test_midi_changes_the_live_output_smoothly(jack_server, tmp_path, monkeypatch):
    rtmidi = pytest.importorskip("rtmidi")
    monkeypatch.setenv("JACK_DEFAULT_SERVER", jack_server)
    save_model_files(tmp_path / "m", PAPER_BOOSTED, random_weights(PAPER_BOOSTED, 8))
    knobs = rtmidi.MidiOut(rtmidi.API_UNIX_JACK)
    knobs.open_virtual_port("kboost-live-knobs")
    t = np.arange(16000 * 6)
    sine = (0.5 * np.sin(2 * np.pi * 220 * t / 16000)).astype(np.float32)
    pos = [0]
    client = jack.Client("kboost-sine", servername=jack_server)
    outs = [client.outports.register(f"play_{i}") for i in (1, 2)]

    @client.set_process_callback
    def process(frames):
        for port in outs:
            port.get_array()[:] = sine[pos[0] : pos[0] + frames]
        pos[0] += frames

    with client:
        live = start_live(tmp_path, jack_server, 3.5, "--midi-port", "kboost-live-knobs")
        ports = wait_for_ports(
            client,
            host_in=lambda p: is_host("kboost-sine")(p) and p.is_input,
            midi_in=lambda p: p.is_midi and p.is_input and "RtMidiIn" in p.name,
            knob=lambda p: p.is_midi and p.is_output and "kboost-live-knobs" in p.name,
        )
        host_in, midi_in, knob = ports["host_in"], ports["midi_in"], ports["knob"]
        for src, dst in zip(outs, host_in, strict=False):
            client.connect(src, dst)
        if not client.get_all_connections(knob[0]):
            client.connect(knob[0], midi_in[0])
        time.sleep(0.8)
        knobs.send_message([0x90, 37, 100])  # bypass on: the input passes through
        time.sleep(0.8)
        for value in (127, 100, 0):  # gain: soft takeover picks it up, then down to -60 dB
            knobs.send_message([0xB0, 7, value])
            time.sleep(0.05)
        out, err = live.communicate(timeout=30)
        assert live.returncode == 0, out + err
        knobs.close_port()

    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["midi"]["applied"] >= 3 and stats["midi"]["takeover_wait"] >= 1
    x, _ = sf.read(tmp_path / "in.wav", dtype="float32", always_2d=True)
    y, _ = sf.read(tmp_path / "out.wav", dtype="float32", always_2d=True)
    x, y = x[:, 0], y[:, 0]
    dry = np.concatenate([np.zeros(64, np.float32), x[:-64]])  # the look-ahead lag
    chunks = len(y) // 128
    bypassed = [
        c
        for c in range(chunks)
        if np.array_equal(y[c * 128 : (c + 1) * 128], dry[c * 128 : (c + 1) * 128])
    ]
    assert bypassed, "bypass never reached the output"
    start = bypassed[0]
    quiet = [
        c
        for c in range(start, chunks)
        if np.abs(y[c * 128 : (c + 1) * 128]).max() < 0.5 * 10 ** (-60 / 20) * 1.01
    ]
    assert quiet, "the gain never reached -60 dB"
    # From full level to -60 dB with no click: no step larger than the sine's own
    # slope plus one 128-sample ramp step of the gain. Steps the input itself
    # made (a period the sine's client missed under load) pass through bypass
    # as they came, so they are left out.
    span = slice(start * 128, (quiet[0] + 1) * 128)
    slope = 2 * np.pi * 220 / 16000 * 0.5
    smooth_input = np.abs(np.diff(dry[span])) <= slope * 1.05
    assert smooth_input.mean() > 0.9, "the input sine itself was broken"
    steps = np.abs(np.diff(y[span]))[smooth_input]
    assert steps.max() <= (slope + 0.5 / 128) * 1.05


@pytest.mark.parametrize("jack_server", [(48000, 384)], indirect=True)
def test_live_resamples_a_48_khz_device(jack_server, tmp_path, monkeypatch):
    """The device runs 48 kHz: the host resamples both ways inside its native
    callback, still feeds the model whole 16 kHz chunks, and reports the
    latency that adds."""
    import soxr

    monkeypatch.setenv("JACK_DEFAULT_SERVER", jack_server)
    save_model_files(tmp_path / "m", PAPER_BOOSTED, random_weights(PAPER_BOOSTED, 9))
    rng = np.random.default_rng(1)
    spectrum = np.fft.rfft(rng.standard_normal(16000))
    spectrum[6000:] = 0  # below 6 kHz: inside the resamplers' passband
    speechband = (0.2 * np.fft.irfft(spectrum, 16000) / 0.7).astype(np.float32)
    mixture = soxr.resample(np.stack([speechband, -speechband], 1), 16000, 48000).T
    err, played = play_through_live(tmp_path, jack_server, "kboost-48k", mixture)

    assert "resampling to and from 16000 Hz" in err
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["resampling"]["device_rate"] == 48000
    assert 0 < stats["resampling"]["added_latency_ms"] <= 2.0
    assert stats["live"]["underruns"] == 0 and stats["resampling"]["frames"] == 384
    assert stats["live"]["wrong_sizes"] == 0 and stats["chunks"] >= 300
    got_in, rate = sf.read(tmp_path / "in.wav", dtype="float32", always_2d=True)
    got_out, _ = sf.read(tmp_path / "out.wav", dtype="float32", always_2d=True)
    assert rate == 16000
    # 1. The model got the mixture at 16 kHz, as the stream's own resampler makes
    # it (its response: tests/test_resampler.py), whichever of the 3 input phases
    # the stream started on.
    down, up = pair(48000)
    lag = find_lag(got_in[:, 0], speechband)
    expected = [
        _native.Resampler(1, down).process(np.concatenate([np.zeros(k), mixture[0]])[:, None])
        for k in range(3)
    ]
    best = max(expected, key=lambda e: np.abs(np.correlate(got_in[:, 0], e[2000:6000, 0])).max())
    assert_pieces_match(got_in[:, 0], best[:15000, 0], 0.99, "input")
    # 2. The model ran exactly as on a file of what it received.
    process_file(
        tmp_path / "in.wav", tmp_path / "file.wav", tmp_path / "m", progress=False, mix=True
    )
    file_out, _ = sf.read(tmp_path / "file.wav", dtype="float32", always_2d=True)
    assert np.array_equal(got_out[64:], file_out[: len(got_out) - 64])
    # 3. The device got that output back at 48 kHz.
    expected = _native.Resampler(1, up).process(got_out[:, :1])[
        3 * (lag + 2000) : 3 * (lag + 12000)
    ]
    assert_pieces_match(played[0], expected[:, 0], 0.99, "output", piece=3000)


@pytest.mark.parametrize("jack_server", [(16000, 128), (48000, 384)], indirect=True)
def test_live_measures_its_latency_beside_the_budget(jack_server, tmp_path):
    save_model_files(tmp_path / "m", PAPER_BOOSTED, random_weights(PAPER_BOOSTED, 10))
    result = subprocess.run(
        [CLI, "live", "--model", str(tmp_path / "m"), "--measure-latency", "--quiet",
         "--stats-json", str(tmp_path / "stats.json")],
        capture_output=True, text=True, timeout=60,
        env=dict(os.environ, JACK_DEFAULT_SERVER=jack_server),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "input-to-output latency" in result.stdout and "budget" in result.stdout
    stats = json.loads((tmp_path / "stats.json").read_text())
    lat = stats["latency"]
    resampling = lat["budget"]["resampling_ms"]
    # The click's way through the callback: the 4 ms look-ahead, plus the
    # resampling's measured share when the device runs another rate.
    assert lat["path_ms"] == pytest.approx(4.0 + resampling, abs=0.05)
    assert (resampling == 0) == (stats["resampling"] is None)
    assert lat["budget"]["algorithmic_ms"] == 12 and lat["budget"]["buffering_ms"] == 8
    assert lat["measured_ms"] == pytest.approx(
        lat["path_ms"] + lat["device_input_ms"] + lat["device_output_ms"]
    )


def test_live_without_any_audio_device_says_what_to_start(tmp_path):
    env = dict(os.environ, JACK_DEFAULT_SERVER=f"kboost-nobody-{os.getpid()}")
    devices = subprocess.run(
        [sys.executable, "-c", "import pyaudio; print(pyaudio.PyAudio().get_device_count())"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    if devices.stdout.strip() not in ("0", ""):
        pytest.skip("this machine has an audio device besides JACK")
    save_model_files(tmp_path / "m", PAPER_BOOSTED, random_weights(PAPER_BOOSTED, 12))
    result = subprocess.run(
        [CLI, "live", "--model", str(tmp_path / "m"), "--seconds", "1", "--quiet"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert "JACK server (jackd)" in result.stderr and "Traceback" not in result.stderr
    assert "ALSA lib" not in result.stderr  # the libraries' own noise stays in the debug log


def test_live_runs_the_any_delay_model_on_a_local_server_and_reports_hint_ages(
    jack_server, tmp_path
):
    import dataclasses

    from kboost_rt.config import PAPER_BOOSTED_ANY_DELAY, PAPER_LARGE

    large = dataclasses.replace(
        PAPER_LARGE, net=dataclasses.replace(PAPER_LARGE.net, dim=16, hidden=16, attention_heads=2)
    )
    save_model_files(tmp_path / "big", large, random_weights(large, 13))
    cfg = dataclasses.replace(PAPER_BOOSTED_ANY_DELAY, large_model="big")
    save_model_files(tmp_path / "m", cfg, random_weights(cfg, 14))
    result = subprocess.run(
        [CLI, "live", "--model", str(tmp_path / "m"), "--local-server", "--hints", "int8",
         "--seconds", "2", "--quiet", "--stats-json", str(tmp_path / "stats.json")],
        capture_output=True, text=True, timeout=90,
        env=dict(os.environ, JACK_DEFAULT_SERVER=jack_server),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    stats = json.loads((tmp_path / "stats.json").read_text())
    ages = stats["hint_age_chunks"]
    assert stats["link"]["on_time"] == ages["used"] == sum(ages["by_age"]) > 0
    assert 1 <= ages["median"] <= ages["p95"] <= 8 and ages["by_age"][0] == 0
    assert "age when used median" in result.stdout
