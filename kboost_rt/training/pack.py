"""The training data that travels to a GPU machine, in a few megabytes.

A GPU machine of this project takes at most 64 MiB of files, the repository
included, and reaches no network. `write_pack` turns the data cache into a
folder that fits:

- `train-audio.npz`: every training talker and noise, Ogg/Opus-coded (about
  22 kbit/s), each cut to at most a share of the byte budget (evenly spaced
  pieces, so a long talker is not cut to its first minutes);
- `val-<task>.npz`: the trainer's fixed validation clips (the same 32 x 2 s
  that `kboost-rt train` validates on), lossless: FLAC at 16 bits, scaled
  per clip to its peak;
- `rooms.npz` (only with `rooms="copy"`): the cache's training rooms as they
  are; otherwise the machine simulates its own training rooms in parallel
  from seeds (`simulate_rooms`), which keeps the pack small;
- `pack.json`: what is in it, and the minutes of each kind.

`load_pack` decodes it on the other side with soundfile (a wheel that
travels beside the pack when the machine lacks it).
"""

from __future__ import annotations

import io
import json
import os
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from ..signal_path import SAMPLE_RATE
from .mixing import Mixer
from .rooms import RIR_LENGTH, SOURCES_PER_ROOM, TRAINING_SPACING, simulate_room

PACK_VERSION = 1
OPUS_LEVEL = 0.93  # libsndfile's compression level: about 22 kbit/s at 16 kHz
PIECE_SECONDS = 30.0
NOISE_SHARE = 0.15  # of the audio budget
VAL_SEED = 1234  # the CPU trainer's validation clips (trainer.Run.val)
ROOM_SEED = 101  # training rooms made on the GPU machine: SeedSequence([ROOM_SEED, i])


class PackError(RuntimeError):
    """A pack is missing, from another version, or does not fit its budget."""


def _opus(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, SAMPLE_RATE, format="OGG", subtype="OPUS", compression_level=OPUS_LEVEL)
    return buf.getvalue()


def _decode(data: bytes) -> np.ndarray:
    x, rate = sf.read(io.BytesIO(data), dtype="float32")
    if rate != SAMPLE_RATE:
        raise PackError(f"a packed clip is at {rate} Hz, not {SAMPLE_RATE}")
    return x


def _pieces(x: np.ndarray, seconds: float) -> np.ndarray:
    """At most `seconds` of x, as evenly spaced pieces of PIECE_SECONDS."""
    keep = int(seconds * SAMPLE_RATE)
    if x.shape[0] <= keep:
        return x
    piece = min(keep, int(PIECE_SECONDS * SAMPLE_RATE))
    count = max(1, keep // piece)
    starts = np.linspace(0, x.shape[0] - piece, count).astype(int)
    return np.concatenate([x[s : s + piece] for s in starts])


def _clips(folder: Path) -> dict[str, np.ndarray]:
    files = sorted(f for f in folder.glob("*.npy") if not f.name.endswith(".tmp.npy"))
    return {f.stem: np.load(f, mmap_mode="r") for f in files}


def _fit(clips: dict[str, np.ndarray], budget: int) -> tuple[dict[str, bytes], float]:
    """Opus-code every clip, each cut to the same length cap, so that all fit `budget` bytes."""
    lengths = [c.shape[0] / SAMPLE_RATE for c in clips.values()]
    total = sum(lengths)

    def cap_for(rate: float) -> float:  # the largest per-clip cap whose total fits
        cap = max(lengths)
        for _ in range(200):
            if sum(min(n, cap) for n in lengths) * rate <= 0.97 * budget:
                break
            cap *= 0.97
        return cap

    # Opus spends more bits on some sources than on others: its rate is probed on
    # 10 s of up to 12 clips spread over all of them, then measured on what was
    # coded, and the clips coded again at that rate if they did not fit.
    names = list(clips)
    spread = np.linspace(0, len(names) - 1, min(12, len(names))).astype(int)
    probed = [np.asarray(clips[names[i]][: 10 * SAMPLE_RATE], np.float32) / 32768 for i in spread]
    rate = sum(len(_opus(x)) for x in probed) / sum(x.shape[0] / SAMPLE_RATE for x in probed)
    for _ in range(3):
        cap = cap_for(rate)
        coded = {
            name: _opus(_pieces(np.asarray(c, np.float32) / 32768, cap))
            for name, c in clips.items()
        }
        size = sum(len(b) for b in coded.values())
        if size <= budget:
            return coded, cap
        rate = size / sum(min(n, cap) for n in lengths)
    raise PackError(f"{size} bytes of Opus do not fit the {budget} bytes given ({total:.0f} s)")


def _flac(x: np.ndarray) -> tuple[bytes, float]:
    """[channels, samples] float -> 16-bit FLAC bytes scaled to the peak, and that scale."""
    scale = float(np.abs(x).max()) or 1.0
    buf = io.BytesIO()
    sf.write(buf, (x / scale).T, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return buf.getvalue(), scale


def write_pack(
    cache: Path,
    tasks: list[str],
    out: Path,
    megabytes: float = 40.0,
    val_clips: int = 32,
    val_seconds: float = 2.0,
    rooms: str = "simulate",
    progress=print,
) -> dict:
    """The pack of `tasks`: the validation clips of each, and training audio for all."""
    out.mkdir(parents=True, exist_ok=True)
    speech, noise = _clips(cache / "speech" / "train"), _clips(cache / "noise" / "train")
    if not speech:
        raise PackError(f"{cache}: no training speech; build it with `kboost-rt data build`")
    budget = int(megabytes * 1e6)
    for task in tasks:
        val_path = out / f"val-{task}.npz"
        mixer = Mixer(cache, task, "val")
        rng = np.random.default_rng(VAL_SEED)
        x, y = mixer.batch(val_clips, int(val_seconds * SAMPLE_RATE), rng)
        val = {}
        for i in range(val_clips):
            data, scale = _flac(np.concatenate([x[i], y[i].reshape(-1, y.shape[-1])]))
            val[f"clip{i:03d}"] = np.frombuffer(data, np.uint8)
            val[f"scale{i:03d}"] = np.float64(scale)
        np.savez(val_path, sources=np.int64(y.shape[1]), **val)
        budget -= val_path.stat().st_size
    room_bank = None
    if rooms == "copy":
        room_bank = np.load(cache / "rooms" / "train.npy").astype(np.float16)
        budget -= room_bank.nbytes
    elif rooms != "simulate":
        raise ValueError(f"rooms must be 'copy' or 'simulate', not {rooms!r}")
    if budget <= 0:
        raise PackError(f"{megabytes:g} MB cannot hold the validation clips and rooms")
    progress(f"pack: coding {len(speech)} talkers and {len(noise)} noises to Opus")
    coded_speech, speech_cap = _fit(speech, int(budget * (1 - NOISE_SHARE if noise else 1)))
    coded_noise, noise_cap = _fit(noise, int(budget * NOISE_SHARE)) if noise else ({}, 0.0)
    audio = {f"speech/{k}": np.frombuffer(v, np.uint8) for k, v in coded_speech.items()}
    audio |= {f"noise/{k}": np.frombuffer(v, np.uint8) for k, v in coded_noise.items()}
    np.savez(out / "train-audio.npz", **audio)
    if room_bank is not None:
        np.savez(out / "rooms.npz", train=room_bank)
    seconds = {
        kind: round(sum(min(c.shape[0] / SAMPLE_RATE, cap) for c in clips.values()), 1)
        for kind, clips, cap in (("speech", speech, speech_cap), ("noise", noise, noise_cap))
    }
    info = {
        "version": PACK_VERSION,
        "tasks": list(tasks),
        "talkers": len(speech),
        "noises": len(noise),
        "seconds": seconds,
        "cap_seconds": {"speech": round(speech_cap, 1), "noise": round(noise_cap, 1)},
        "val": {"clips": val_clips, "seconds": val_seconds, "seed": VAL_SEED},
        "rooms": rooms,
        "bytes": sum(f.stat().st_size for f in out.glob("*.npz")),
    }
    (out / "pack.json").write_text(json.dumps(info, indent=1) + "\n")
    progress(
        f"pack: {info['bytes'] / 1e6:.1f} MB in {out}: speech {seconds['speech'] / 60:.1f} min "
        f"(at most {speech_cap:.0f} s a talker), noise {seconds['noise'] / 60:.1f} min"
    )
    return info


@dataclass
class Pack:
    speech: dict[str, np.ndarray]  # float32 mono, 16 kHz
    noise: dict[str, np.ndarray]
    rooms: np.ndarray | None  # [rooms, 3, 2, RIR_LENGTH] float32, or None: simulate
    val_x: np.ndarray  # [clips, 2, samples]
    val_y: np.ndarray  # [clips, sources, 2, samples]
    info: dict


def load_pack(folder: Path, task: str) -> Pack:
    info_path = folder / "pack.json"
    if not info_path.is_file():
        raise PackError(f"{folder}: no pack.json; make a pack with `kboost-rt data pack`")
    info = json.loads(info_path.read_text())
    if info.get("version") != PACK_VERSION:
        raise PackError(f"{folder}: pack version {info.get('version')}, not {PACK_VERSION}")
    val_path = folder / f"val-{task}.npz"
    if not val_path.is_file():
        made = ", ".join(info["tasks"])
        raise PackError(f"{folder}: no validation clips for {task} (the pack is for {made})")
    with np.load(folder / "train-audio.npz") as audio:
        coded = {k: audio[k].tobytes() for k in audio.files}
    # libsndfile decodes outside the GIL: threads share the work
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        decoded = dict(zip(coded, pool.map(_decode, coded.values()), strict=True))
    speech = {k[7:]: v for k, v in decoded.items() if k.startswith("speech/")}
    noise = {k[6:]: v for k, v in decoded.items() if k.startswith("noise/")}
    xs, ys = [], []
    with np.load(val_path) as val:
        sources = int(val["sources"])
        for i in range(info["val"]["clips"]):
            clip, _ = sf.read(io.BytesIO(val[f"clip{i:03d}"].tobytes()), dtype="float32")
            clip = clip.T * np.float32(val[f"scale{i:03d}"])
            xs.append(clip[:2])
            ys.append(clip[2:].reshape(sources, 2, -1))
    rooms = None
    if (folder / "rooms.npz").is_file():
        with np.load(folder / "rooms.npz") as r:
            rooms = r["train"].astype(np.float32)
    return Pack(speech, noise, rooms, np.stack(xs), np.stack(ys), info)


def _room(i: int) -> np.ndarray:
    return simulate_room(np.random.default_rng([ROOM_SEED, i]), TRAINING_SPACING)


def simulate_rooms(count: int, workers: int) -> np.ndarray:
    """Training rooms, room i from its own seed so that processes can share the work
    (not the cache's rooms, which are drawn in sequence; these are other rooms of
    the same distribution, and never the val or test rooms)."""
    bank = np.zeros((count, SOURCES_PER_ROOM, 2, RIR_LENGTH), np.float32)
    if workers <= 1:
        for i in range(count):
            bank[i] = _room(i)
        return bank
    import multiprocessing

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for i, room in enumerate(pool.map(_room, range(count), chunksize=4)):
            bank[i] = room
    return bank
