"""`kboost-rt live`: the processor on the sound card.

The audio callback is native (`_native.AudioStream`, PortAudio): it runs the
processor and nothing else, so it never waits on the interpreter, allocates
or touches a socket. A device that does not run 16 kHz is resampled inside
the same callback (csrc/resampler.h, designed by `resampling.py`). Python
opens the devices, runs the hint client's network thread (it only moves
chunks and hints between the processor's rings and the socket), takes MIDI
(it only stores parameters) and prints the status line.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from . import _native
from .fallback import FALLBACK_AFTER
from .midi import MidiController, MidiMapping, open_input
from .params import LiveParams, Params
from .processor import Stream, hint_age_stats, open_stream
from .protocol import HintEncoding
from .resampling import best_frames, pair
from .signal_path import CHUNK, LOOKAHEAD, SAMPLE_RATE

_quiet_handlers: list = []  # the C callbacks must outlive the libraries' use of them


def quiet_audio_libraries() -> None:
    """Route ALSA's and JACK's own error and info messages (PortAudio probes
    every ALSA device and prints dozens of lines) to the debug log."""
    import ctypes
    import ctypes.util
    import logging

    log = logging.getLogger("kboost_rt.audio")
    if _quiet_handlers:
        return
    asound = ctypes.util.find_library("asound")
    if asound:
        # snd_lib_error_handler_t: (file, line, function, err, fmt, ...)
        alsa_t = ctypes.CFUNCTYPE(
            None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p
        )

        def alsa(file, line, function, err, fmt):
            log.debug("ALSA %s: %s", (function or b"").decode(), (fmt or b"").decode())

        handler = alsa_t(alsa)
        ctypes.CDLL(asound).snd_lib_error_set_handler(handler)
        _quiet_handlers.append(handler)
    jack_lib = ctypes.util.find_library("jack")
    if jack_lib:
        jack_t = ctypes.CFUNCTYPE(None, ctypes.c_char_p)

        def jack(message):
            log.debug("JACK: %s", (message or b"").decode(errors="replace"))

        handler = jack_t(jack)
        lib = ctypes.CDLL(jack_lib)
        lib.jack_set_error_function(handler)
        lib.jack_set_info_function(handler)
        _quiet_handlers.append(handler)


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
    resample_phase: str = "minimum",
    fallback_after: int = FALLBACK_AFTER,
    params: Params | LiveParams | None = None,
    verbose: bool = False,
    measure_latency: bool = False,
    exact_rate: bool = False,
    encoding: HintEncoding | None = None,
) -> dict:
    """`params`: the starting values (MIDI moves them from there).
    `measure_latency`: run in bypass on silence with one click put into the
    input half a second in, and report under "latency" how long it took to
    come out (see `_latency`). `encoding` None: pca hints where the model has
    a hint codec, else int8."""
    if not verbose:
        quiet_audio_libraries()
    import pyaudio

    if measure_latency:
        params = Params(bypass=True)
        seconds = seconds or 1.5

    stream = open_stream(model, server, key, encoding, params, fallback_after)
    processor, client = stream.processor, stream.client
    params = processor.params
    midi = None
    controller = None
    try:
        if midi_port is not None:
            mapping = MidiMapping.load(midi_map) if midi_map else MidiMapping.default()
            controller = MidiController(params, mapping)
            midi = open_input(controller, midi_port)
        pa = pyaudio.PyAudio()
        try:
            m = processor.channels
            devices = _device(pa, input_device, True), _device(pa, output_device, False)
            try:
                rate = device_rate or _stream_rate(pa, devices, m)
            except OSError as e:
                raise OSError(
                    f"no audio device ({e}): is a sound card there, or a JACK server "
                    "(jackd) running? `kboost-rt devices` lists what PortAudio sees"
                ) from None
        finally:
            pa.terminate()
        record_chunks = int(seconds * SAMPLE_RATE / CHUNK) + 1 if seconds else 0
        if not (record_input or record_output):
            record_chunks = 0
        if not _native.HAVE_AUDIO_STREAM:  # OSError: the command line prints it, exit 2
            raise OSError(
                "this build of kboost-rt has no native audio stream: install PortAudio "
                "(Debian: apt install portaudio19-dev) and reinstall kboost-rt"
            )
        probe = rate // 2 if measure_latency else -1
        run = _NativeRun(stream, devices, record_chunks, rate, resample_phase, probe, exact_rate)
        stop = threading.Event()
        previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
        try:
            run.start()
            started = time.monotonic()
            while run.active() and not stop.is_set():
                if seconds and time.monotonic() - started >= seconds:
                    break
                time.sleep(0.25)
                if status:
                    _status_line(run.stats(), stream, params)
        finally:
            run.stop()  # before the client and MIDI close: the callback uses them
            signal.signal(signal.SIGINT, previous)
    finally:
        if midi is not None:
            midi.close_port()
        stream.close()
    if status:
        print(file=sys.stderr)
    live = run.stats()
    live["period_us"] = 1e6 * run.frames / rate
    report = {
        "live": live,
        "resampling": run.resampling,
        "chunks": processor.t,
        "link": client.stats().as_dict() if client else None,
        "midi": dict(controller.counts) if controller else None,
        "chunks_on_small": processor.chunks_on_small,
        "hint_age_chunks": hint_age_stats(processor.hint_ages()),
    }
    if measure_latency:
        cfg = stream.files.config
        report["latency"] = _latency(run, rate, cfg.boost.delay if cfg.boost else None)
    from .audio_files import write_audio_atomic

    if record_input is not None:
        write_audio_atomic(record_input, run.recording(False))
    if record_output is not None:
        write_audio_atomic(record_output, run.recording(True))
    if stats_json is not None:
        stats_json.write_text(json.dumps(report, indent=2) + "\n")
    return report


class _NativeRun:
    """The native PortAudio stream: its callback runs the processor in C++,
    resampling there when the device does not run 16 kHz."""

    def __init__(
        self,
        stream: Stream,
        devices,
        record_chunks: int,
        rate: int,
        phase: str,
        probe: int = -1,
        exact_rate: bool = False,
    ):
        self.resampling = None
        self.frames = CHUNK
        designs = (None, None)
        if rate != SAMPLE_RATE:
            designs = pair(rate, phase, exact_rate)
            self.frames, added = best_frames(rate, phase, exact_rate)
            model_rate = designs[0].rate_out
            self.resampling = {
                "device_rate": rate,
                "model_rate": model_rate,
                "phase": phase,
                "frames": self.frames,
                "added_latency_ms": 1000 * added,
            }
            off = ""
            if model_rate != SAMPLE_RATE:
                percent = 100 * (model_rate / SAMPLE_RATE - 1)
                off = (
                    f" (the model at {model_rate:g} Hz, {percent:+.2f} %, so that one buffer "
                    "is one chunk; --exact-rate keeps 16000 Hz)"
                )
            print(
                f"the device runs {rate} Hz: resampling to and from {SAMPLE_RATE} Hz{off} "
                f"({phase} phase, {self.frames}-frame buffers), adding "
                f"{self.resampling['added_latency_ms']:.2f} ms of latency",
                file=sys.stderr,
            )
        try:
            self._stream = _native.AudioStream(
                stream.processor.native,
                -1 if devices[0] is None else devices[0],
                -1 if devices[1] is None else devices[1],
                record_chunks,
                rate,
                self.frames,
                *designs,
                probe,
            )
        except RuntimeError as e:
            raise OSError(
                f"{e}; is a sound card there, or a JACK server (jackd) running? "
                "`kboost-rt devices` lists what PortAudio sees"
            ) from None

    def start(self) -> None:
        self._stream.start()

    def stop(self) -> None:
        self._stream.stop()

    def active(self) -> bool:
        return self._stream.active

    def stats(self) -> dict:
        stats = self._stream.stats()
        stats["realtime"] = {-1: None, 0: False, 1: True}[stats["realtime"]]
        return stats

    def recording(self, output: bool) -> np.ndarray:
        return self._stream.recording(output)

    def latency_probe(self) -> dict:
        return self._stream.latency_probe()


def _latency(run: _NativeRun, rate: int, delay: int | None) -> dict:
    """The probe's result beside the budget. Measured: the click's way through the
    callback (resamplers, chunk FIFOs, look-ahead) from its input frame to its
    output frame, plus the device's input and output latency as PortAudio reports
    them. Budget: the algorithmic 12 ms (the 8 ms chunk collected, one input
    period, and the 4 ms look-ahead), one output period, and the resampling."""
    probe = run.latency_probe()
    if probe["peak_frame"] < 0 or probe["peak"] < 0.1:
        raise OSError("the latency probe's click never came out (is bypass overridden?)")
    path_ms = 1000 * (probe["peak_frame"] - probe["click_frame"]) / rate
    device_in_ms, device_out_ms = (1000 * probe[k] for k in ("input_latency_s", "output_latency_s"))
    resampling_ms = run.resampling["added_latency_ms"] if run.resampling else 0.0
    budget = {
        "algorithmic_ms": 1000 * (CHUNK + LOOKAHEAD) / SAMPLE_RATE,
        "buffering_ms": 1000 * run.frames / rate,
        "resampling_ms": resampling_ms,
    }
    return {
        "measured_ms": path_ms + device_in_ms + device_out_ms,
        "path_ms": path_ms,
        "device_input_ms": device_in_ms,
        "device_output_ms": device_out_ms,
        "budget_ms": sum(budget.values()),
        "budget": budget,
        "hint_delay_ms": None if delay is None else 1000 * delay * CHUNK / SAMPLE_RATE,
    }


def _status_line(live: dict, stream: Stream, params: LiveParams) -> None:
    p = params.snapshot()
    link = ""
    if stream.client is not None:
        s = stream.client.stats()
        link = f" | hints {s.on_time} ok {s.late} late {s.lost} lost, rtt {s.rtt_chunks:g} chunks"
        ages = hint_age_stats(stream.processor.hint_ages())
        if ages is not None:
            link += f", age p50 {ages['median']} p95 {ages['p95']}"
    times = live["callback_us"]
    print(
        f"\rcallback p50 {times['p50']:.0f} us, max {times['max']:.0f} us | xruns "
        f"{live['xruns']}{link} | gain {p.gain_db:+.1f} dB wet {p.wet:.2f} "
        f"{'boost' if p.boost else 'no-boost'} src {p.source or 'all'}"
        f"{' BYPASS' if p.bypass else ''}   ",
        end="",
        file=sys.stderr,
        flush=True,
    )


def list_devices(verbose: bool = False) -> str:
    if not verbose:
        quiet_audio_libraries()
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
