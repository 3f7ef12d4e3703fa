"""`kboost-rt process` never loses a file: not the input, not what an output
path points to, not the previous outputs when a write fails; it writes the
format the extension names with the usual permissions, and non-finite input
never reaches an output."""

import hashlib
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kboost_rt.config import PAPER_SMALL
from kboost_rt.model_files import random_weights, save_model_files

CLI = str(Path(sys.executable).parent / "kboost-rt")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "separate-small"
    save_model_files(path, PAPER_SMALL, random_weights(PAPER_SMALL, 3))
    return path


def noise(path: Path, seconds: float = 0.5) -> Path:
    x = 0.1 * np.random.default_rng(0).standard_normal((int(16000 * seconds), 2))
    sf.write(path, x.astype(np.float32), 16000, subtype="FLOAT")
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def process(model, *args, **kw):
    return subprocess.run(
        [CLI, "process", *map(str, args), "--model", str(model), "--quiet"],
        capture_output=True, text=True, timeout=120, **kw,
    )  # fmt: skip


def test_the_input_is_never_an_output(model, tmp_path):
    inp = noise(tmp_path / "in.wav")
    before = digest(inp)
    (tmp_path / "link.wav").symlink_to(inp)
    os.link(inp, tmp_path / "hard.wav")
    for out in (inp, tmp_path / "hard.wav"):
        result = process(model, inp, out, "--mix")
        assert result.returncode == 2 and "is the input" in result.stderr, result.stderr
    result = process(model, inp, tmp_path / "link.wav", "--mix")
    assert result.returncode == 2 and "symlink" in result.stderr
    assert digest(inp) == before and "Traceback" not in result.stderr


def test_only_regular_files_are_replaced_and_checked_before_any_work(model, tmp_path):
    inp = noise(tmp_path / "in.wav")
    result = process(model, inp, "/dev/null", "--mix")
    assert result.returncode == 2 and "not a regular file" in result.stderr
    (tmp_path / "out_s2.wav").mkdir()  # the second output of a separation is a folder
    result = process(model, inp, tmp_path / "out.wav")
    assert result.returncode == 2 and "not a regular file" in result.stderr
    assert not (tmp_path / "out_s1.wav").exists()  # refused before the first was written
    result = process(model, inp, tmp_path / "out.mp4")
    assert result.returncode == 2 and "unknown output format" in result.stderr


def test_outputs_have_their_format_and_the_usual_permissions(model, tmp_path):
    inp = noise(tmp_path / "in.wav")
    umask = os.umask(0o022)
    try:
        result = process(model, inp, tmp_path / "out.flac")
    finally:
        os.umask(umask)
    assert result.returncode == 0, result.stderr
    for s in (1, 2):
        path = tmp_path / f"out_s{s}.flac"
        assert sf.info(path).format == "FLAC"
        assert path.stat().st_mode & 0o777 == 0o644
    assert not list(tmp_path.glob(".*.tmp"))


def _small_files():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))


def test_a_failed_write_leaves_the_previous_outputs_as_they_were(model, tmp_path):
    inp = noise(tmp_path / "in.wav", seconds=1.0)
    out = tmp_path / "out.wav"
    assert process(model, inp, out).returncode == 0
    before = {s: digest(tmp_path / f"out_s{s}.wav") for s in (1, 2)}
    longer = noise(tmp_path / "long.wav", seconds=2.0)  # its outputs exceed the size limit
    result = process(model, longer, out, preexec_fn=_small_files)
    assert result.returncode == 2, result.stderr
    assert "cannot write" in result.stderr and "no output was changed" in result.stderr
    assert "Traceback" not in result.stderr
    assert {s: digest(tmp_path / f"out_s{s}.wav") for s in (1, 2)} == before
    assert not list(tmp_path.glob(".*.tmp"))


def test_non_finite_input_is_silenced_counted_and_never_written(model, tmp_path):
    x = 0.1 * np.random.default_rng(1).standard_normal((8000, 2)).astype(np.float32)
    x[100, 0], x[2000:2010, 1], x[5000, 1] = np.nan, np.inf, -np.inf
    sf.write(tmp_path / "in.wav", x, 16000, subtype="FLOAT")
    result = process(model, tmp_path / "in.wav", tmp_path / "mix.wav", "--mix")
    assert result.returncode == 0, result.stderr
    assert "12 non-finite samples (NaN or Inf) replaced by silence" in result.stdout
    y, _ = sf.read(tmp_path / "mix.wav")
    assert np.all(np.isfinite(y)) and np.abs(y).max() > 0


def test_missing_and_special_inputs_get_a_clear_error(model, tmp_path):
    result = process(model, tmp_path / "nope.wav", tmp_path / "out.wav")
    assert result.returncode == 2 and "no such file" in result.stderr
    os.mkfifo(tmp_path / "fifo.wav")  # reading it would wait forever
    result = process(model, tmp_path / "fifo.wav", tmp_path / "out.wav")
    assert result.returncode == 2 and "not a regular file" in result.stderr
