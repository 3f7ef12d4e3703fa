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

from kboost_rt.config import PAPER_BOOSTED
from kboost_rt.model_files import random_weights, save_model_files
from kboost_rt.process import process_file

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


def play_through_live(tmp_path: Path, jack_server: str, name: str, mixture: np.ndarray):
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
        live = start_live(tmp_path, jack_server, 3)
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
    _, played_back = play_through_live(tmp_path, jack_server, "kboost-tester", mixture)

    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["live"]["wrong_sizes"] == 0 and stats["chunks"] >= 300
    got_in, _ = sf.read(tmp_path / "in.wav", dtype="float32", always_2d=True)
    got_out, _ = sf.read(tmp_path / "out.wav", dtype="float32", always_2d=True)
    # 1. The host received the mixture, sample for sample.
    lag = find_lag(got_in[:, 0], mixture[0])
    assert np.array_equal(got_in[lag : lag + 16000].T, mixture)
    # 2. What it played equals `kboost-rt process --mix` of what it received.
    process_file(
        tmp_path / "in.wav", tmp_path / "file.wav", tmp_path / "m", progress=False, mix=True
    )
    file_out, _ = sf.read(tmp_path / "file.wav", dtype="float32", always_2d=True)
    # The live stream's output lags its input by the 64-sample look-ahead.
    assert np.array_equal(got_out[64:], file_out[: len(got_out) - 64])
    # 3. And that is what came out of the host's JACK ports (a fixed latency later).
    segment = got_out[lag + 2000 : lag + 12000, 0]
    lag_back = find_lag(played_back[0], segment)
    assert np.allclose(
        played_back[:, lag_back : lag_back + len(segment)].T,
        got_out[lag + 2000 : lag + 12000],
        atol=1e-7,
    )


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
    # slope plus one 128-sample ramp step of the gain.
    segment = y[start * 128 : (quiet[0] + 1) * 128]
    limit = 2 * np.pi * 220 / 16000 * 0.5 + 0.5 / 128
    assert np.abs(np.diff(segment)).max() <= limit * 1.05


@pytest.mark.parametrize("jack_server", [(48000, 384)], indirect=True)
def test_live_resamples_a_48_khz_device(jack_server, tmp_path, monkeypatch):
    """The device runs 48 kHz: the host resamples both ways (soxr), still feeds the
    model whole 16 kHz chunks, and reports the latency that adds."""
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
    assert 0 < stats["resampling"]["added_latency_ms"] < 60
    assert stats["live"]["wrong_sizes"] == 0 and stats["chunks"] >= 300
    got_in, rate = sf.read(tmp_path / "in.wav", dtype="float32", always_2d=True)
    got_out, _ = sf.read(tmp_path / "out.wav", dtype="float32", always_2d=True)
    assert rate == 16000
    # 1. The model got the mixture at 16 kHz (resampled: equal up to the filters).
    lag = find_lag(got_in[:, 0], speechband)
    received = got_in[lag : lag + 15000, 0]
    assert np.corrcoef(received, speechband[:15000])[0, 1] > 0.99
    # 2. The model ran exactly as on a file of what it received.
    process_file(
        tmp_path / "in.wav", tmp_path / "file.wav", tmp_path / "m", progress=False, mix=True
    )
    file_out, _ = sf.read(tmp_path / "file.wav", dtype="float32", always_2d=True)
    assert np.array_equal(got_out[64:], file_out[: len(got_out) - 64])
    # 3. The device got that output back at 48 kHz.
    expected = soxr.resample(got_out[lag + 2000 : lag + 12000, 0], 16000, 48000)
    back = played[0]
    lag_back = find_lag(back, expected)
    assert np.corrcoef(back[lag_back : lag_back + len(expected)], expected)[0, 1] > 0.95
