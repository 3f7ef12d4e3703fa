"""`kboost-rt demo` (what `make demo` runs): the main job on the shipped models.

1. Starts `kboost-rt serve` (large model + hint generator) as a separate process.
2. Streams the shipped example mixture (talkers, noise and room never used in
   training) through the live path, the native processor + `HintClient`, paced
   at real time, with the any-delay boosted small model (each hint used at
   the age it arrives; `--delay D` runs the fixed model of that delay
   instead); an optional fault relay loses hints on the way.
3. Runs the small model alone and the large model on the same mixture.
4. Prints SI-SDRi of small / boosted / large on the example, the hints' fate
   and each native engine's cost per 8 ms chunk, and writes the outputs,
   `report.json` and `spectrograms.png`. No audio device and no torch needed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from .audio_files import read_audio, write_audio_atomic
from .engine import NativeEngine
from .evaluate import _stream, si_sdr_improvement
from .model_files import ModelFileError, load_model_files, shipped_models_dir
from .process import output_paths, process_file
from .processor import Processor, hint_age_stats
from .signal_path import CHUNK, SAMPLE_RATE


def examples_dir() -> Path:
    """The shipped example mixtures: in the installed package or the checkout."""
    installed = Path(__file__).parent / "examples"
    return installed if installed.is_dir() else Path(__file__).parent.parent / "examples"


def _best_order(estimates: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Estimates [S, M, N] reordered to match references (the PIT order)."""
    if len(estimates) == 1:
        return estimates
    direct = sum(np.dot(estimates[s, 0], references[s, 0]) for s in range(2))
    swapped = sum(np.dot(estimates[1 - s, 0], references[s, 0]) for s in range(2))
    return estimates if direct >= swapped else estimates[::-1]


def _cost_us(files, chunks: np.ndarray) -> float:
    engine = NativeEngine(files.config, files.tensors)
    hints = None
    if files.config.boost is not None:
        rng = np.random.default_rng(0)
        shape = (len(chunks), files.config.boost.hint_channels, 97)
        hints = rng.standard_normal(shape).astype(np.float32)
    return float(np.median(engine.time_chunks(chunks, hints)[20:])) / 1e3


def _hint_wire(boosted: Path) -> dict:
    """The encoding the demo's device asks for (its default) and its downlink."""
    from .hint_codec import default_encoding, load_codec
    from .protocol import SampleFormat, bytes_per_second

    cfg = load_model_files(boosted).config
    channels = cfg.boost.hint_channels
    encoding = default_encoding(boosted)
    codec = load_codec(boosted, channels)
    down = bytes_per_second(
        channels, cfg.net.channels, encoding, SampleFormat.FLOAT32, False, codec
    )[1]  # fmt: skip
    return {"encoding": encoding.name.lower(), "downlink_kBps": down / 1e3}


def plot_spectrograms(rows: list[tuple[str, np.ndarray]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no spectrograms (pip install 'kboost-rt[eval]')")
        return False
    fig, axes = plt.subplots(len(rows), 1, figsize=(8, 1.7 * len(rows)), sharex=True)
    for ax, (title, x) in zip(axes, rows, strict=True):
        ax.specgram(x, NFFT=512, Fs=SAMPLE_RATE, noverlap=384, cmap="magma", vmin=-130)
        ax.set_ylabel("Hz")
        ax.set_title(title, fontsize=9, loc="left")
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def run_demo(
    out: Path,
    task: str = "separate",
    delay: int | None = None,
    loss: float = 0.0,
    models: Path | None = None,
    example: Path | None = None,
) -> int:
    from .relay import FaultRelay, Impairment
    from .server import LocalServer

    models = models or shipped_models_dir()
    example = example or examples_dir() / task
    if delay is None and not (models / f"{task}-boosted").is_dir():
        delay = 1  # no any-delay model: the fixed model that gains most from hints
    names = {
        "small": f"{task}-small",
        "boosted": f"{task}-boosted" if delay is None else f"{task}-boosted-d{delay}",
        "large": f"{task}-large",
    }
    if delay is not None and not (models / names["boosted"]).is_dir():
        raise ModelFileError(
            f"{models}: no {names['boosted']}; fixed-delay models are not shipped "
            f"(drop --delay to run the any-delay {task}-boosted, or see docs/model-files.md)"
        )
    files = {role: load_model_files(models / name) for role, name in names.items()}
    channels, n_src = files["small"].config.net.channels, files["small"].config.net.sources
    if not (example / "mixture.wav").is_file():
        raise ModelFileError(f"{example}: no example mixture.wav")
    mixture = read_audio(example / "mixture.wav", channels)
    refs = np.stack([read_audio(example / f"source{s + 1}.wav", channels) for s in range(n_src)])
    out.mkdir(parents=True, exist_ok=True)
    seconds = mixture.shape[1] / SAMPLE_RATE
    print(f"Example: {example} ({seconds:.1f} s, {task}; talkers and room unseen in training)")

    estimates: dict[str, np.ndarray] = {}
    report: dict = {"task": task, "example": str(example), "delay": delay, "hint_loss": loss}
    wav = example / "mixture.wav"
    result = process_file(wav, out / "small.wav", models / names["small"], progress=False)
    estimates["small"] = np.stack([read_audio(p, channels) for p in result.outputs])

    with LocalServer(models / names["boosted"]) as server:
        relay = None
        address = server.address
        if loss > 0:
            relay = FaultRelay(address, Impairment(loss=loss / 2), seed=1).start()
            address = relay.address
        print(
            f"Hint server: `kboost-rt serve` process at {server.address[0]}:{server.address[1]}"
            + (f", through a relay losing {loss:.0%} of chunks and hints" if relay else "")
        )
        how = (
            "each hint at the age it arrives"
            if delay is None
            else f"at a fixed {8 * delay} ms hint delay"
        )
        print(f"Streaming through {names['boosted']} ({how}), at real time...")
        result = process_file(
            wav, out / "boosted.wav", models / names["boosted"], address, progress=False
        )
        if relay:
            relay.stop()
    estimates["boosted"] = np.stack([read_audio(p, channels) for p in result.outputs])
    s = result.link
    report["hints"] = {
        "chunks": result.chunks,
        "on_time": s.on_time,
        "late": s.late,
        "lost": s.lost,
        "duplicate": s.duplicate,
        "corrupt": s.corrupt,
        "round_trip_chunks": s.rtt_chunks,
        "max_round_trip_chunks": s.max_rtt_chunks,
        "age_chunks": hint_age_stats(result.hint_ages),
        **_hint_wire(models / names["boosted"]),
    }

    large = Processor(files["large"].config, files["large"].tensors)
    estimates["large"] = _stream(large, mixture)
    for path, audio in zip(output_paths(out / "large.wav", n_src), estimates["large"], strict=True):
        write_audio_atomic(path, audio)

    n = min(500, mixture.shape[1] // CHUNK)
    chunks = np.ascontiguousarray(
        mixture[:, : n * CHUNK].reshape(channels, n, CHUNK).swapaxes(0, 1)
    )
    print(f"\n{'model':<24}{'SI-SDRi':>9}{'us/chunk':>10}{'of 8 ms':>9}")
    report["models"] = {}
    for role, name in names.items():
        score = si_sdr_improvement(estimates[role], refs, mixture)
        us = _cost_us(files[role], chunks)
        report["models"][role] = {"model": name, "si_sdr_i": score, "us_per_chunk": us}
        where = " (server)" if role == "large" else ""
        print(f"{name + where:<24}{score:>7.2f} dB{us:>10.1f}{us / 8000:>9.1%}")
    ages = report["hints"]["age_chunks"]
    boost = files["boosted"].config.boost
    used = f"budget {delay}" if delay is not None else f"used at any age up to {boost.max_age}"
    if ages:
        used += f", age when used median {ages['median']}, p95 {ages['p95']}"
    print(
        f"\nHints: {s.on_time} on time, {s.late} late, {s.lost} lost of {result.chunks} chunks; "
        f"round trip {s.rtt_chunks:g} chunks (max {s.max_rtt_chunks}), {used}; "
        f"{report['hints']['encoding']} hints, {report['hints']['downlink_kBps']:.1f} kB/s "
        "downlink with IP and UDP headers"
    )
    rows = [("mixture (mic 1)", mixture[0]), ("talker 1, reference", refs[0, 0])]
    for role in names:
        est = _best_order(estimates[role], refs)
        rows.append((f"{names[role]}: {report['models'][role]['si_sdr_i']:.1f} dB", est[0, 0]))
    png = out / "spectrograms.png"
    if plot_spectrograms(rows, png):
        report["spectrograms"] = str(png)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"Wrote the outputs, {out / 'report.json'} and {png} in {out}", file=sys.stderr)
    return 0 if s.on_time > 0 else 1
