"""`kboost-rt live`: the Processor in a PyAudio duplex callback, 16 kHz, 128 frames.

The callback only converts the buffer, runs `Processor.process` (the native
step releases the GIL and allocates nothing) and converts back: no locks,
no sockets, no waiting. Parameters arrive as lock-free snapshots (MIDI,
see midi.py); hints through the client's non-blocking hand-off.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .client import HintClient
from .engine import NativeEngine
from .fallback import FALLBACK_AFTER, SmallModelFallback
from .midi import MidiController, MidiMapping, open_input
from .model_files import load_model_files
from .params import LiveParams
from .processor import Processor
from .rate_adapter import RateAdapter
from .signal_path import CHUNK, SAMPLE_RATE


@dataclass
class LiveStats:
    callbacks: int = 0
    xruns: int = 0  # PortAudio's input-overflow / output-underflow flags
    wrong_sizes: int = 0  # callbacks with other than 128 frames (passed through silent)
    loads: list = field(default_factory=list)  # callback time / 8 ms

    def summary(self) -> dict:
        loads = np.array(self.loads) if self.loads else np.zeros(1)
        return {
            "callbacks": self.callbacks,
            "xruns": self.xruns,
            "wrong_sizes": self.wrong_sizes,
            "load_median": float(np.median(loads)),
            "load_p99": float(np.percentile(loads, 99)),
            "load_max": float(loads.max()),
        }


def _device(pa, name: str | None, want_input: bool) -> int | None:
    if name is None:
        return None
    if name.isdigit():
        return int(name)
    for i in range(pa.get_device_count()):
        info = pa.get_device_info_by_index(i)
        channels = info["maxInputChannels"] if want_input else info["maxOutputChannels"]
        if name in info["name"] and channels > 0:
            return i
    raise ValueError(
        f"no {'input' if want_input else 'output'} device matching {name!r} (see kboost-rt devices)"
    )


def _stream_rate(pa, devices: tuple[int | None, int | None], channels: int) -> int:
    """16 kHz if the devices run it, else the input device's default rate."""
    import pyaudio

    inp = pa.get_default_input_device_info()["index"] if devices[0] is None else devices[0]
    out = pa.get_default_output_device_info()["index"] if devices[1] is None else devices[1]
    try:
        pa.is_format_supported(
            SAMPLE_RATE,
            input_device=inp,
            input_channels=channels,
            input_format=pyaudio.paFloat32,
            output_device=out,
            output_channels=channels,
            output_format=pyaudio.paFloat32,
        )
        return SAMPLE_RATE
    except ValueError:
        return int(pa.get_device_info_by_index(inp)["defaultSampleRate"])


def run_live(
    model: Path,
    server: tuple[str, int] | None = None,
    key=None,
    input_device: str | None = None,
    output_device: str | None = None,
    midi_port: str | None = None,
    midi_map: Path | None = None,
    seconds: float | None = None,
    stats_json: Path | None = None,
    record_input: Path | None = None,
    record_output: Path | None = None,
    status: bool = True,
    device_rate: int | None = None,
    resample_quality: str = "LQ",
    fallback_after: int = FALLBACK_AFTER,
) -> dict:
    import pyaudio

    files = load_model_files(model)
    cfg = files.config
    if cfg.role == "large":
        raise ValueError(f"{model}: a large model runs on the server")
    engine = NativeEngine(cfg, files.tensors)
    params = LiveParams(sources=cfg.net.sources)
    client = None
    if server is not None:
        if cfg.boost is None:
            raise ValueError(f"{model}: --server needs a boosted model")
        client = HintClient(server, files.name, cfg.net.channels, cfg.boost.delay, key=key)
        client.connect()
    fallback = SmallModelFallback.beside(model, fallback_after) if client else None
    processor = Processor(engine, client, params, fallback)
    midi = None
    controller = None
    if midi_port is not None:
        mapping = MidiMapping.load(midi_map) if midi_map else MidiMapping.default()
        controller = MidiController(params, mapping)
        midi = open_input(controller, midi_port)

    m = cfg.net.channels
    stats = LiveStats()
    max_chunks = int(seconds * SAMPLE_RATE / CHUNK) + 1 if seconds else 0
    recorded_in = np.zeros((m, max_chunks * CHUNK), np.float32) if record_input else None
    recorded_out = np.zeros((m, max_chunks * CHUNK), np.float32) if record_output else None

    def run_chunk(chunk: np.ndarray) -> np.ndarray:
        """One 16 kHz chunk [M, 128] through the Processor -> the mix [M, 128]."""
        t = processor.t
        _, mix = processor.process(chunk)
        if recorded_in is not None and t < max_chunks:
            recorded_in[:, t * CHUNK : (t + 1) * CHUNK] = chunk
        if recorded_out is not None and t < max_chunks:
            recorded_out[:, t * CHUNK : (t + 1) * CHUNK] = mix
        return mix

    adapter: RateAdapter | None = None
    frames = CHUNK
    out_frames = np.zeros((CHUNK, m), np.float32)

    def callback(in_data, frame_count, time_info, flags):
        start = time.perf_counter()
        stats.callbacks += 1
        if flags:
            stats.xruns += 1
        if frame_count != frames:
            stats.wrong_sizes += 1
            return silence[: 4 * m * frame_count], pyaudio.paContinue
        block = np.frombuffer(in_data, np.float32).reshape(frame_count, m)
        if adapter is None:
            out = run_chunk(np.ascontiguousarray(block.T)).T.tobytes()
        else:
            adapter(block, out_frames)
            out = out_frames.tobytes()
        stats.loads.append((time.perf_counter() - start) / (frame_count / rate))
        return out, pyaudio.paContinue

    pa = pyaudio.PyAudio()
    rate = SAMPLE_RATE
    resampling = None
    silence = b""
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        devices = _device(pa, input_device, True), _device(pa, output_device, False)
        rate = device_rate or _stream_rate(pa, devices, m)
        if rate != SAMPLE_RATE:
            frames = round(CHUNK * rate / SAMPLE_RATE)
            out_frames = np.zeros((frames, m), np.float32)
            adapter = RateAdapter(run_chunk, rate, m, frames, resample_quality)
            resampling = {
                "device_rate": rate,
                "quality": resample_quality,
                "added_latency_ms": 1000 * adapter.added_latency_s,
            }
            print(
                f"the device runs {rate} Hz: resampling to and from {SAMPLE_RATE} Hz with soxr "
                f"{resample_quality}, adding {resampling['added_latency_ms']:.1f} ms of latency",
                file=sys.stderr,
            )
        silence = bytes(4 * m * frames)
        stream = pa.open(
            format=pyaudio.paFloat32,
            channels=m,
            rate=rate,
            input=True,
            output=True,
            frames_per_buffer=frames,
            input_device_index=devices[0],
            output_device_index=devices[1],
            stream_callback=callback,
        )
        started = time.monotonic()
        while stream.is_active() and not stop.is_set():
            if seconds and time.monotonic() - started >= seconds:
                break
            time.sleep(0.25)
            if status:
                _status_line(stats, client, params)
        stream.stop_stream()
        stream.close()
    finally:
        pa.terminate()
        signal.signal(signal.SIGINT, previous)
        if midi is not None:
            midi.close_port()
        if client is not None:
            client.close()
    if status:
        print(file=sys.stderr)
    chunks = min(processor.t, max_chunks) if max_chunks else processor.t
    report = {
        "live": stats.summary(),
        "resampling": resampling,
        "chunks": processor.t,
        "link": client.stats().as_dict() if client else None,
        "midi": dict(controller.counts) if controller else None,
        "chunks_on_small": fallback.chunks_on_small if fallback else 0,
    }
    from .process import write_audio_atomic

    if record_input is not None:
        write_audio_atomic(record_input, recorded_in[:, : chunks * CHUNK])
    if record_output is not None:
        write_audio_atomic(record_output, recorded_out[:, : chunks * CHUNK])
    if stats_json is not None:
        stats_json.write_text(json.dumps(report, indent=2) + "\n")
    return report


def _status_line(stats: LiveStats, client: HintClient | None, params: LiveParams) -> None:
    recent = stats.loads[-125:] or [0.0]
    p = params.snapshot()
    link = ""
    if client is not None:
        s = client.stats()
        link = f" | hints {s.on_time} ok {s.late} late {s.lost} lost, rtt {s.rtt_chunks:g} chunks"
    print(
        f"\rload {100 * np.mean(recent):4.1f}% (max {100 * max(recent):4.1f}%) | xruns "
        f"{stats.xruns}{link} | gain {p.gain_db:+.1f} dB wet {p.wet:.2f} "
        f"{'boost' if p.boost else 'no-boost'} src {p.source or 'all'}"
        f"{' BYPASS' if p.bypass else ''}   ",
        end="",
        file=sys.stderr,
        flush=True,
    )


def list_devices() -> str:
    lines = []
    try:
        import pyaudio

        pa = pyaudio.PyAudio()
        lines.append("Audio devices:")
        for i in range(pa.get_device_count()):
            d = pa.get_device_info_by_index(i)
            api = pa.get_host_api_info_by_index(d["hostApi"])["name"]
            lines.append(
                f"  {i}: {d['name']} ({api}) in {d['maxInputChannels']} out "
                f"{d['maxOutputChannels']}, {d['defaultSampleRate']:g} Hz"
            )
        pa.terminate()
    except ImportError:
        lines.append("Audio devices: PyAudio is not installed (pip install 'kboost-rt[live]')")
    try:
        from .midi import midi_input

        names = midi_input().get_ports()
        lines.append("MIDI inputs:" + ("" if names else " none"))
        lines += [f"  {n}" for n in names]
    except ImportError:
        lines.append("MIDI inputs: python-rtmidi is not installed")
    except ValueError as e:
        lines.append(f"MIDI inputs: {e}")
    return "\n".join(lines)
