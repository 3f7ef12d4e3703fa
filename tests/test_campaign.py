"""The GPU run, end to end at tiny scale on the CPU: the data pack, mixing on the
training device, `tools/gpu_run.sh` making every model of a task in a budget,
and continuing from its archive. A GPU minute is never lost to a bug this
catches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pyroomacoustics")

from helpers import make_tiny_cache  # noqa: E402

from kboost_rt.engine import NativeEngine  # noqa: E402
from kboost_rt.hint_codec import load_codec  # noqa: E402
from kboost_rt.model_files import load_model_files  # noqa: E402
from kboost_rt.signal_path import CHUNK  # noqa: E402
from kboost_rt.training import pack as packing  # noqa: E402
from kboost_rt.training.mixing import SNR_DB, Mixer  # noqa: E402
from kboost_rt.training.torch_mixing import TorchMixer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"separate-large", "separate-small", "separate-boosted"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_tiny_cache(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def pack(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("pack")
    packing.write_pack(
        cache, ["separate"], out, megabytes=1.0, val_clips=3, val_seconds=0.5, rooms="copy",
        progress=lambda _: None,
    )  # fmt: skip
    return out


def test_pack_holds_the_trainers_validation_clips_and_fits_its_budget(cache, pack):
    info = json.loads((pack / "pack.json").read_text())
    assert info["bytes"] <= 1.0e6 and info["talkers"] == 4 and info["noises"] == 2
    loaded = packing.load_pack(pack, "separate")
    # The same clips the CPU trainer validates on (same seed), to 16-bit precision.
    x, y = Mixer(cache, "separate", "val").batch(3, 8000, np.random.default_rng(1234))
    assert loaded.val_x.shape == x.shape and loaded.val_y.shape == y.shape
    peak = np.abs(np.concatenate([x, y.reshape(3, -1, 8000)], 1)).max()
    assert np.abs(loaded.val_x - x).max() <= peak / 2**15 * 1.01
    assert np.abs(loaded.val_y - y).max() <= peak / 2**15 * 1.01
    # The training audio came through the Opus coding whole, at the same level.
    for name, clip in loaded.speech.items():
        original = np.load(cache / "speech" / "train" / f"{name}.npy") / 32768
        assert abs(len(clip) - len(original)) < 1000
        assert np.std(clip) == pytest.approx(np.std(original), rel=0.1)
    np.testing.assert_allclose(
        loaded.rooms, np.load(cache / "rooms" / "train.npy"), atol=1e-3, rtol=1e-2
    )


def test_a_pack_for_another_task_or_version_is_refused(pack, tmp_path):
    with pytest.raises(
        packing.PackError, match="no validation clips for enhance .the pack is for separate"
    ):
        packing.load_pack(pack, "enhance")
    with pytest.raises(packing.PackError, match="no pack.json"):
        packing.load_pack(tmp_path, "separate")


def test_rooms_simulated_in_parallel_are_the_same_as_one_by_one():
    one = packing.simulate_rooms(2, workers=1)
    assert np.array_equal(one, packing.simulate_rooms(2, workers=2))
    assert one.shape == (2, 3, 2, 8000) and not np.array_equal(one[0], one[1])


@pytest.mark.parametrize("task", ["separate", "enhance"])
def test_device_mixtures_follow_the_cpu_recipe(pack, task):
    p = packing.load_pack(pack, "separate")
    mixer = TorchMixer(task, list(p.speech.values()), list(p.noise.values()), p.rooms, "cpu", 3)
    x, y = mixer.batch(16, 8000)
    sources = 2 if task == "separate" else 1
    assert x.shape == (16, 2, 8000) and y.shape == (16, sources, 2, 8000)
    talkers = y.sum(1)
    noise = x - talkers
    snr = 10 * torch.log10(talkers.pow(2).mean((1, 2)) / noise.pow(2).mean((1, 2)))
    lo, hi = SNR_DB[task]
    assert torch.all(snr > lo - 0.01) and torch.all(snr < hi + 0.01)
    level = 10 * torch.log10(x.pow(2).mean((1, 2)))
    assert torch.all(level < -15 + 0.01) and torch.all(x.abs().amax((1, 2)) <= 0.95 + 1e-6)
    if sources == 2:  # two talkers within 5 dB of each other, never the same one twice
        gap = 10 * torch.log10(y[:, 0].pow(2).mean((1, 2)) / y[:, 1].pow(2).mean((1, 2)))
        assert torch.all(gap.abs() < 5 + 0.01)
        assert not torch.allclose(y[:, 0], y[:, 1])
    again = TorchMixer(task, list(p.speech.values()), list(p.noise.values()), p.rooms, "cpu", 3)
    assert torch.equal(again.batch(16, 8000)[0], x)  # seeded: reproducible


def _gpu_run(pack: Path, out: Path, minutes: float, *extra: str) -> str:
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(
        [str(ROOT / "tools" / "gpu_run.sh"), "separate", str(minutes), "--device", "cpu",
         "--pack", str(pack), "--out", str(out), "--seconds", "0.25", "--batch", "2",
         "--checkpoint-s", "1", "--rooms", "2", "--codec-clips", "2", *extra],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _models(archive: Path, tmp_path: Path) -> dict[str, Path]:
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path, filter="data")
    return {p.name: p for p in tmp_path.iterdir() if (p / "config.json").is_file()}


def test_gpu_run_makes_every_model_of_a_task_within_its_budget(pack, tmp_path):
    log = _gpu_run(pack, tmp_path / "out", 0.25, "--fixed-delays", "1")
    assert "phase 1: separate-large" in log and "phase 2:" in log
    archive = tmp_path / "out" / "separate-models.tar"
    models = _models(archive, tmp_path / "models")
    assert set(models) == MODELS | {"separate-boosted-d1"}
    curves = json.loads((tmp_path / "out" / "separate-campaign.json").read_text())
    for name, folder in models.items():
        files = load_model_files(folder)  # validated as any model folder
        notes = files.config.notes
        assert notes["trained_steps"] > 0 and notes["audio_hours"] > 0
        assert curves["models"][name]["curve"], name
        assert "si_sdr_i" in notes["validation"]
        if files.config.role == "boosted":
            assert files.config.large_model == "separate-large"
            assert "si_sdr_i_no_hints" in notes["validation"]
            codec = load_codec(folder, 8)  # pca hints: fitted on its own hints
            assert codec is not None and codec.components == 96, name
    # Scored on the same clips, and named so: the fallback rule compares them.
    named = {load_model_files(models[n]).config.notes["validation"]["clips_sha256"] for n in models}
    assert len(named) == 1
    # The same audio for the small and every boosted model: the fairness rule.
    steps = {curves["models"][n]["steps"] for n in set(models) - {"separate-large"}}
    assert len(steps) == 1
    # The native engine runs what the run made: the boosted models with the large
    # model's hints, the any-delay one with a hint of age 2.
    chunk = (0.01 * np.random.default_rng(0).standard_normal((2, CHUNK))).astype(np.float32)
    for name in ("separate-boosted", "separate-boosted-d1"):
        large = NativeEngine.from_folder(models["separate-large"], hints_for=models[name])
        boosted = NativeEngine.from_folder(models[name])
        _, hint = large.process_with_hint(chunk)
        if boosted.any_delay:
            out = boosted.process_aged(chunk, hint[None], [2])
        else:
            out = boosted.process(chunk, hint)
        assert np.all(np.isfinite(out)), name


def test_gpu_run_continues_from_an_archive(pack, tmp_path):
    _gpu_run(pack, tmp_path / "first", 0.15)
    log = _gpu_run(
        pack, tmp_path / "second", 0.1, "--init", str(tmp_path / "first" / "separate-models.tar"),
        "--large-share", "0",
    )  # fmt: skip
    assert "continuing from" in log and "phase 1" not in log
    first = _models(tmp_path / "first" / "separate-models.tar", tmp_path / "a")
    second = _models(tmp_path / "second" / "separate-models.tar", tmp_path / "b")
    assert set(second) == MODELS
    for name in MODELS - {"separate-large"}:
        before = load_model_files(first[name]).config.notes["audio_hours"]
        assert load_model_files(second[name]).config.notes["audio_hours"] > before
    # The large model was not trained again: the same weights.
    a, b = load_model_files(first["separate-large"]), load_model_files(second["separate-large"])
    assert all(np.array_equal(a.tensors[k], b.tensors[k]) for k in a.tensors)


def test_speed_perturbation_plays_a_talker_faster_or_slower():
    from kboost_rt.training.torch_mixing import _Pool

    t = np.arange(48000) / 16000
    pool = _Pool([np.sin(2 * np.pi * 200 * t).astype(np.float32)], torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    crops = pool.crop(torch.zeros(3, dtype=torch.long), 16000, g, torch.tensor([0.9, 1.0, 1.1]))
    peaks = torch.fft.rfft(crops).abs().argmax(-1)  # 1 Hz bins
    assert peaks.tolist() == [180, 200, 220]


def test_the_pack_fits_its_budget_when_its_first_clip_codes_cheaply():
    rng = np.random.default_rng(0)
    quiet = np.zeros(20 * 16000, np.int16)  # Opus spends almost nothing on silence
    loud = [(3000 * rng.standard_normal(20 * 16000)).astype(np.int16) for _ in range(4)]
    clips = {"a-silence": quiet, **{f"b-noise-{i}": x for i, x in enumerate(loud)}}
    full = sum(len(packing._opus(x.astype(np.float32) / 32768)) for x in loud)
    coded, cap = packing._fit(clips, full // 2)  # room for about half of it
    assert sum(len(b) for b in coded.values()) <= full // 2 and 0 < cap < 20


def test_fixed_delays_without_a_recipe_are_refused(capsys):
    from kboost_rt.training.campaign import parse_args

    assert parse_args(["separate", "1", "--device", "cpu"]).fixed_delays == ()
    assert parse_args(
        ["separate", "1", "--device", "cpu", "--fixed-delays", "1,6"]
    ).fixed_delays == (1, 6)
    with pytest.raises(SystemExit):
        parse_args(["separate", "1", "--device", "cpu", "--fixed-delays", "2"])
    assert "no recipe for delay 2" in capsys.readouterr().err
