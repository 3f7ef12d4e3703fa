"""Clean speech and noise from Debian packages, decoded once into a cache.

Every talker is one *speaker*: their utterances, silence-trimmed and joined
with short gaps, are stored as one 16 kHz int16 array
`<cache>/speech/<split>/<speaker>.npy`; noises likewise under `noise/`. The
split is by speaker (never by file), and the sources the issue reserves for
an independent held-out evaluation go to the `test` split only.

Nothing is downloaded: the sources are Debian packages (`apt-get install
$(kboost-rt data packages)`), decoded with ffmpeg (G.722) or soundfile, and
synthetic voices are rendered with espeak-ng, flite and festival.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from ..signal_path import SAMPLE_RATE

SPLITS = ("train", "val", "test")

# Debian packages the data come from (ffmpeg decodes G.722; fluidsynth renders
# General MIDI; espeak-ng, flite and festival speak).
FESTVOX_PACKAGES = (
    "festvox-kdlpc16k",
    "festvox-italp16k",
    "festvox-itapc16k",
    "festvox-czech-dita",
    "festvox-czech-krb",
    "festvox-czech-machac",
    "festvox-czech-ph",
    "festvox-ca-ona-hts",
    "festvox-suopuhe-common",
    "festvox-suopuhe-lj",
    "festvox-suopuhe-mv",
)
PACKAGES = (
    "ffmpeg",
    "espeak-ng",
    "flite",
    "festival",
    *FESTVOX_PACKAGES,
    "fluidsynth",
    "fluid-soundfont-gm",
    "asterisk-core-sounds-en-g722",
    "asterisk-core-sounds-es-g722",
    "asterisk-core-sounds-ru-g722",
    "asterisk-core-sounds-it-g722",
    "asterisk-core-sounds-fr-g722",
    "asterisk-moh-opsound-wav",
    "fillets-ng-data",
    "fillets-ng-data-cs",
    "klettres-data",
    "sonic-pi-samples",
)

ASTERISK = Path("/usr/share/asterisk/sounds")
FILLETS = Path("/usr/share/games/fillets-ng")
KLETTRES = Path("/usr/share/klettres")
SONIC_PI = Path("/usr/share/sonic-pi/samples")
FESTIVAL = Path("/usr/share/festival/voices")
MOH = Path("/usr/share/asterisk/moh")
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
LICENSES = Path("/usr/share/common-licenses")

# Asterisk's en and es prompts are one speaker (Allison); it and fr are reserved.
ASTERISK_SPEAKERS = {
    "allison": (["en", "es"], "train"),
    "ivrvoiceru": (["ru"], "val"),
    "carlo": (["it"], "test"),
    "june": (["fr"], "test"),
}
KLETTRES_RESERVED = {"en", "en_GB", "de", "uk"}
KLETTRES_VAL = {"nl", "hu", "pt_BR"}
FLITE_VOICES = {"kal16": "train", "awb": "train", "rms": "val", "slt": "test"}
# Festival's voices, all training talkers (the val and test splits stay as
# they were). Left out: kal (flite's kal16 is the same speaker), the NSK voices
# (they speak only their own scripts) and festvox-us-slt-hts (slt is a test talker).
FESTIVAL_VOICES = (
    "ked_diphone",
    "lp_diphone",
    "pc_diphone",
    "czech_dita",
    "czech_krb",
    "czech_machac",
    "czech_ph",
    "upc_ca_ona_hts",
    "suo_fi_lj_diphone",
    "hy_fi_mv_diphone",
)
FILLETS_TRAIN = {"m", "v"}  # the two fish; the other characters are validation talkers
ESPEAK_LANGUAGES = (
    "en de fr es it pt nl sv da nb fi pl cs sk hu ro hr sr bg ru uk el tr "
    "id ms vi hi bn ta ka hy eu ca cy ga is lv lt et sq mk sl"
).split()
ESPEAK_VARIANTS = "m1 m2 m3 m4 m5 m7 f1 f2 f3 f4 f5 klatt2 klatt4 whisperf".split()
GM_RESERVED = range(64, 128)  # General MIDI programs 64-127: test only


class DataError(RuntimeError):
    """A data source is missing or unreadable."""


@dataclass
class Item:
    kind: str  # "speech" | "noise"
    name: str
    split: str
    load: Callable[[], list[np.ndarray]]  # float32 mono 16 kHz pieces


def _hash_split(key: str, val_fraction: float = 0.2) -> str:
    h = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if h < val_fraction else "train"


def _read(path: Path) -> np.ndarray:
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE)
    return np.asarray(mono, np.float32)


def _trim(x: np.ndarray, floor_db: float = -40.0) -> np.ndarray:
    """Cut leading and trailing silence (frames below the peak by floor_db)."""
    if x.size == 0:
        return x
    frame = 160
    n = x.size // frame
    if n == 0:
        return x
    energy = (x[: n * frame].reshape(n, frame) ** 2).mean(axis=1)
    loud = np.flatnonzero(energy > energy.max() * 10 ** (floor_db / 10))
    if loud.size == 0:
        return x[:0]
    return x[loud[0] * frame : (loud[-1] + 1) * frame]


def _decode_g722(files: list[Path]) -> list[np.ndarray]:
    """Decode many G.722 files with one ffmpeg run: 64 kbit/s G.722 is exactly
    two samples per byte, so the joined stream splits back at known offsets."""
    blobs = [f.read_bytes() for f in files]
    run = subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "g722", "-i", "pipe:", "-f", "s16le", "-ac", "1", "pipe:"],
        input=b"".join(blobs),
        capture_output=True,
        check=True,
    )
    pcm = np.frombuffer(run.stdout, np.int16).astype(np.float32) / 32768
    pieces, at = [], 0
    for blob in blobs:
        pieces.append(pcm[at : at + 2 * len(blob)])
        at += 2 * len(blob)
    return pieces


def _sentences(rng: random.Random, count: int, words: int = 14) -> list[str]:
    text = " ".join(p.read_text(errors="ignore") for p in sorted(LICENSES.glob("*-[0-9]*")))
    vocab = re.findall(r"[A-Za-z]{2,}", text)
    if not vocab:
        raise DataError(f"{LICENSES}: no text to speak")
    out = []
    for _ in range(count):
        start = rng.randrange(len(vocab) - words)
        out.append(" ".join(vocab[start : start + rng.randint(words // 2, words)]) + ".")
    return out


def _tts(cmd: list[str], wav: Path) -> np.ndarray:
    subprocess.run(cmd, check=True, capture_output=True)
    return _read(wav)


def _espeak(voice: str, seed: int) -> list[np.ndarray]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "x.wav"
        pieces = []
        for line in _sentences(rng, 12):
            speed = str(rng.randint(130, 190))
            pitch = str(rng.randint(25, 75))
            cmd = ["espeak-ng", "-v", voice, "-s", speed, "-p", pitch, "-w", str(wav), line]
            pieces.append(_tts(cmd, wav))
        return pieces


def _flite(voice: str, seed: int) -> list[np.ndarray]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "x.wav"
        return [
            _tts(["flite", "-voice", voice, "-t", line, "-o", str(wav)], wav)
            for line in _sentences(rng, 20)
        ]


def _festival(voice: str, seed: int) -> list[np.ndarray]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        text, wav = Path(tmp) / "x.txt", Path(tmp) / "x.wav"
        pieces = []
        for line in _sentences(rng, 20):
            text.write_text(line + "\n")
            # At full scale some voices clip; every piece is levelled later anyway.
            cmd = ["text2wave", "-scale", "0.5", "-eval", f"(voice_{voice})", "-o", str(wav)]
            pieces.append(_tts([*cmd, str(text)], wav))
        return pieces


def _midi_file(program: int, seconds: float, rng: random.Random) -> bytes:
    """A one-track Standard MIDI File: random notes on one General MIDI program."""
    ticks = 480  # per quarter note at the default 120 bpm: 960 ticks per second
    events = bytearray([0x00, 0xC0, program])
    t = 0.0
    while t < seconds:
        note, dur = rng.randint(40, 84), rng.choice([0.125, 0.25, 0.5, 1.0])
        for delta, status, vel in ((0, 0x90, rng.randint(60, 110)), (dur, 0x80, 0)):
            d = int(delta * 2 * ticks)
            var = [d & 0x7F]
            while d > 0x7F:
                d >>= 7
                var.insert(0, (d & 0x7F) | 0x80)
            events += bytes(var) + bytes([status, note, vel])
        t += dur
    events += b"\x00\xff\x2f\x00"
    header = b"MThd" + (6).to_bytes(4, "big") + (0).to_bytes(2, "big") + (1).to_bytes(2, "big")
    header += ticks.to_bytes(2, "big")
    return header + b"MTrk" + len(events).to_bytes(4, "big") + bytes(events)


def _general_midi(program: int) -> list[np.ndarray]:
    rng = random.Random(program)
    with tempfile.TemporaryDirectory() as tmp:
        mid, wav = Path(tmp) / "x.mid", Path(tmp) / "x.wav"
        mid.write_bytes(_midi_file(program, 20.0, rng))
        cmd = ["fluidsynth", "-ni", "-q", "-F", str(wav), "-r", str(SAMPLE_RATE), str(SOUNDFONT)]
        subprocess.run([*cmd, str(mid)], check=True, capture_output=True)
        return [_read(wav)]


def _asterisk_folders(lang: str) -> list[Path]:
    """A language's prompt folders: `en` in older packages, `en_US_f_Allison` in newer."""
    if not ASTERISK.is_dir():
        return []
    return [d for d in ASTERISK.iterdir() if d.is_dir() and d.name.split("_")[0] == lang]


def _festival_has(voice: str) -> bool:
    return any(FESTIVAL.glob(f"*/{voice}"))


def catalog() -> Iterator[Item]:
    """Every speaker and noise this machine's packages provide, with its split."""
    for speaker, (langs, split) in ASTERISK_SPEAKERS.items():
        files = sorted(
            f
            for lang in langs
            for folder in _asterisk_folders(lang)
            for f in folder.rglob("*.g722")
            if "silence" not in f.parts
        )
        if files:
            yield Item("speech", f"asterisk-{speaker}", split, lambda f=files: _decode_g722(f))
        else:
            where = f"{'/'.join(langs)} under {ASTERISK}"
            print(f"warning: no Asterisk prompts of {speaker} ({where})", file=sys.stderr)
    by_char: dict[str, list[Path]] = {}
    for f in sorted(FILLETS.glob("sound/*/cs/*.ogg")):
        parts = f.stem.split("-")
        if len(parts) >= 3 and parts[1].isalpha():
            by_char.setdefault(parts[1], []).append(f)
    for char, files in by_char.items():
        split = "train" if char in FILLETS_TRAIN else "val"
        yield Item("speech", f"fillets-{char}", split, lambda f=files: [_read(x) for x in f])
    for lang_dir in (
        sorted(p for p in KLETTRES.iterdir() if p.is_dir()) if KLETTRES.is_dir() else []
    ):
        files = sorted(lang_dir.rglob("*.ogg"))
        if not files:
            continue
        lang = lang_dir.name
        split = "test" if lang in KLETTRES_RESERVED else "val" if lang in KLETTRES_VAL else "train"
        yield Item("speech", f"klettres-{lang}", split, lambda f=files: [_read(x) for x in f])
    if shutil.which("flite"):
        for i, (voice, split) in enumerate(FLITE_VOICES.items()):
            yield Item("speech", f"flite-{voice}", split, lambda v=voice, s=i: _flite(v, s))
    if shutil.which("text2wave"):
        for i, voice in enumerate(FESTIVAL_VOICES):
            if _festival_has(voice):
                yield Item(
                    "speech", f"festival-{voice}", "train", lambda v=voice, s=i: _festival(v, s)
                )
            else:
                print(f"warning: festival has no voice {voice}", file=sys.stderr)
    if shutil.which("espeak-ng"):
        for i, lang in enumerate(ESPEAK_LANGUAGES):
            split = _hash_split(f"espeak-{lang}")
            for j, var in enumerate(ESPEAK_VARIANTS[i % 3 :: 3]):
                voice = f"{lang}+{var}"
                yield Item(
                    "speech",
                    f"espeak-{lang}-{var}",
                    split,
                    lambda v=voice, s=i * 100 + j: _espeak(v, s),
                )
    for f in sorted(SONIC_PI.glob("*.flac")):
        yield Item("noise", f"sonicpi-{f.stem}", _hash_split(f.name), lambda f=f: [_read(f)])
    for f in sorted(FILLETS.glob("music/*.ogg")) + sorted(FILLETS.glob("sound/*/*.ogg")):
        name = f"fillets-{f.parent.name}-{f.stem}"
        yield Item("noise", name, _hash_split(f.name), lambda f=f: [_read(f)])
    for f in sorted(MOH.glob("*.wav")):
        yield Item("noise", f"moh-{f.stem}", "test", lambda f=f: [_read(f)])
    if shutil.which("fluidsynth") and SOUNDFONT.is_file():
        for program in range(128):
            split = "test" if program in GM_RESERVED else "val" if program % 5 == 4 else "train"
            yield Item("noise", f"gm-{program:03d}", split, lambda p=program: _general_midi(p))


def _join(pieces: list[np.ndarray], rng: np.random.Generator, speech: bool) -> np.ndarray:
    out = []
    for piece in pieces:
        piece = _trim(piece) if speech else piece
        if piece.size < SAMPLE_RATE // 10:
            continue
        piece = piece / (np.sqrt(np.mean(piece**2)) + 1e-8) * 0.1  # same level for every piece
        out.append(piece)
        if speech:
            out.append(np.zeros(int(rng.uniform(0.05, 0.3) * SAMPLE_RATE), np.float32))
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def build_cache(cache: Path, progress=print) -> dict:
    """Decode every source into `cache` (items already there are kept)."""
    manifest: dict = {"speech": {s: {} for s in SPLITS}, "noise": {s: {} for s in SPLITS}}
    items = list(catalog())
    if not any(i.kind == "speech" for i in items):
        raise DataError("no speech sources found: apt-get install $(kboost-rt data packages)")
    for n, item in enumerate(items, 1):
        path = cache / item.kind / item.split / f"{item.name}.npy"
        if not path.is_file():
            try:
                pieces = item.load()
            except (subprocess.CalledProcessError, sf.LibsndfileError, OSError) as e:
                progress(f"[{n}/{len(items)}] {item.name}: skipped ({e})")
                continue
            rng = np.random.default_rng(n)
            audio = _join(pieces, rng, item.kind == "speech")
            if audio.size < SAMPLE_RATE:
                progress(f"[{n}/{len(items)}] {item.name}: skipped (under 1 s)")
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npy")
            np.save(
                tmp,
                np.clip(audio * 32767 / max(1.0, np.abs(audio).max()), -32768, 32767).astype(
                    np.int16
                ),
            )
            tmp.replace(path)
        seconds = np.load(path, mmap_mode="r").shape[0] / SAMPLE_RATE
        manifest[item.kind][item.split][item.name] = round(seconds, 2)
        progress(f"[{n}/{len(items)}] {item.kind} {item.split:<5} {item.name}: {seconds:.1f} s")
    (cache / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest
