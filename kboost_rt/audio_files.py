"""Audio files in and out of the models: reading at 16 kHz with the model's
channels (resampled with soxr, mono and stereo mapped, non-finite samples
silenced and counted), back to the file's own rate and length, and safe
writes: outputs are checked before any work (never the input, never
anything but a regular file, a format their extension names), and a set of
outputs appears whole or not at all, with the usual permissions."""

from __future__ import annotations

import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .signal_path import SAMPLE_RATE


class ProcessError(Exception):
    """Input that cannot be processed as asked: a clear message, nothing written."""


def read_audio(path: Path, channels: int) -> np.ndarray:
    """-> [channels, samples] float32 at 16 kHz, or ProcessError."""
    import soundfile as sf

    _check_input(path)
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise ProcessError(f"{path}: cannot read audio ({e})") from None
    if rate != SAMPLE_RATE:
        raise ProcessError(f"{path}: sample rate {rate} Hz; the models run at {SAMPLE_RATE} Hz")
    if data.shape[0] == 0:
        raise ProcessError(f"{path}: no samples")
    if data.shape[1] != channels:
        raise ProcessError(f"{path}: {data.shape[1]} channel(s); the model takes {channels}")
    return np.ascontiguousarray(data.T)


def _check_input(path: Path) -> None:
    """A missing file or a FIFO, device or folder gets a clear error (reading a
    FIFO would wait forever)."""
    if not os.path.lexists(path):
        raise ProcessError(f"{path}: no such file")
    if not path.is_file():
        raise ProcessError(f"{path}: not a regular file")


@dataclass
class InputAudio:
    x: np.ndarray  # [model channels, samples] at 16 kHz
    rate: int  # the file's sample rate
    samples: int  # the file's length at its own rate
    notes: list[str]


def read_for_model(path: Path, channels: int) -> InputAudio:
    """Any file soundfile reads -> the model's channels at 16 kHz: resampled with
    soxr, mono duplicated to stereo, stereo averaged to mono; anything else is an error."""
    import soundfile as sf

    _check_input(path)
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise ProcessError(f"{path}: cannot read audio ({e})") from None
    if data.shape[0] == 0:
        raise ProcessError(f"{path}: no samples")
    notes = []
    bad = ~np.isfinite(data)
    if bad.any():
        data = np.where(bad, np.float32(0), data)
        notes.append(f"{int(bad.sum())} non-finite samples (NaN or Inf) replaced by silence")
    have = data.shape[1]
    if have != channels:
        if (have, channels) == (1, 2):
            data = np.repeat(data, 2, axis=1)
            notes.append("mono input duplicated to both model channels")
        elif (have, channels) == (2, 1):
            data = data.mean(axis=1, keepdims=True)
            notes.append("stereo input averaged to mono")
        else:
            raise ProcessError(
                f"{path}: {have} channels; the model takes {channels} "
                "(mono and stereo input can be mapped)"
            )
    x = data
    if rate != SAMPLE_RATE:
        import soxr

        x = soxr.resample(data, rate, SAMPLE_RATE, quality="VHQ").astype(np.float32)
        notes.append(f"resampled {rate} Hz -> {SAMPLE_RATE} Hz and back")
    return InputAudio(np.ascontiguousarray(x.T), rate, data.shape[0], notes)


def to_file_rate(y: np.ndarray, audio: InputAudio) -> np.ndarray:
    """[..., samples at 16 kHz] -> the input's rate and length."""
    if audio.rate != SAMPLE_RATE:
        import soxr

        flat = y.reshape(-1, y.shape[-1]).T
        back = soxr.resample(flat, SAMPLE_RATE, audio.rate, quality="VHQ").T
        y = back.reshape(*y.shape[:-1], back.shape[-1]).astype(np.float32)
    out = np.zeros((*y.shape[:-1], audio.samples), np.float32)
    n = min(audio.samples, y.shape[-1])
    out[..., :n] = y[..., :n]
    return out


# Output formats by extension: (soundfile format, subtype).
FORMATS = {
    ".wav": ("WAV", "FLOAT"),
    ".flac": ("FLAC", "PCM_24"),
    ".ogg": ("OGG", "VORBIS"),
    ".aiff": ("AIFF", "FLOAT"),
    ".aif": ("AIFF", "FLOAT"),
}


def _format_of(path: Path) -> tuple[str, str]:
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        names = ", ".join(FORMATS)
        raise ProcessError(f"{path}: unknown output format (use one of {names})") from None


def _read_umask() -> int:
    umask = os.umask(0)  # the only way to read it; done once, at import
    os.umask(umask)
    return umask


_UMASK = _read_umask()


def _mode_for(path: Path) -> int:
    """The permissions a new file gets here (0666 less the umask), or those of
    the file it replaces."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~_UMASK


def write_audio_set(files: list[tuple[Path, np.ndarray]], rate: int = SAMPLE_RATE) -> None:
    """[(path, [channels, samples])] -> files that all appear, whole, or none of
    them: each is written to a temporary file beside it first, and the set is
    renamed into place only when every one was written. ProcessError on a
    write error (disk full, permissions), with the previous files untouched."""
    import soundfile as sf

    written: list[tuple[str, Path]] = []
    try:
        for path, data in files:
            fmt, subtype = _format_of(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            os.close(fd)
            written.append((tmp, path))
            sf.write(tmp, data.T, rate, format=fmt, subtype=subtype)
            os.chmod(tmp, _mode_for(path))
    except (OSError, sf.LibsndfileError, RuntimeError) as e:
        for tmp, _ in written:
            Path(tmp).unlink(missing_ok=True)
        target = written[-1][1] if written else files[0][0]
        reason = getattr(e, "strerror", None) or str(e)
        raise ProcessError(f"{target}: cannot write ({reason}); no output was changed") from None
    except BaseException:
        for tmp, _ in written:
            Path(tmp).unlink(missing_ok=True)
        raise
    for i, (tmp, path) in enumerate(written):
        try:
            os.replace(tmp, path)
        except OSError as e:  # rare (the checks passed): say which are new, leave no temp files
            for rest, _ in written[i:]:
                Path(rest).unlink(missing_ok=True)
            done = ", ".join(str(p) for _, p in written[:i]) or "none"
            raise ProcessError(
                f"{path}: cannot replace ({e.strerror or e}); already replaced: {done}"
            ) from None


def write_audio_atomic(path: Path, data: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """[channels, samples] -> a file (format by extension) that appears whole or not at all."""
    write_audio_set([(path, data)], rate)


def check_output(path: Path, inputs: list[Path] = ()) -> None:
    """Fail before any work if `path` cannot be written as an output: it is one of
    the inputs (the same path, a hard link or a symlink to it), something other
    than a regular file, a format no extension names, or not writable there."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        st = None
    if st is not None:
        if not stat.S_ISREG(st.st_mode):
            kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file"
            raise ProcessError(f"{path}: is {kind}; outputs only replace regular files")
        for inp in inputs:
            try:
                same = os.path.samefile(path, inp)
            except OSError:
                same = False
            if same:
                raise ProcessError(f"{path}: is the input {inp}; choose another output")
    _format_of(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}."):
            pass
    except OSError as e:
        raise ProcessError(f"{path}: cannot write there ({e.strerror or e})") from None
