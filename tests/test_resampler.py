"""The audio stream's resampling (csrc/resampler.h, designed by
kboost_rt/resampling.py) around an identity model, at the device's rate:
latency, passband, and what it lets through above the models' band."""

import numpy as np
import pytest

from kboost_rt import _native
from kboost_rt.resampling import added_latency_s, design, pair


def through(
    rate: int, frames: int, x: np.ndarray, phase: str = "minimum", exact_rate: bool = False
) -> np.ndarray:
    """x [n] at the device rate -> the round trip (device -> the model's rate -> device)."""
    adapter = _native.RateAdapter(1, rate, frames, *pair(rate, phase, exact_rate))
    n = len(x) - len(x) % frames
    return adapter.run_identity(np.ascontiguousarray(x[:n, None], np.float32))[:, 0]


@pytest.mark.parametrize(
    "rate,frames,phase,limit_ms",
    [(48000, 384, "minimum", 2.0), (44100, 353, "minimum", 3.0), (48000, 384, "linear", 4.0)],
)
def test_the_round_trip_delays_by_the_reported_latency(rate, frames, phase, limit_ms):
    latency = round(added_latency_s(rate, frames, phase) * rate)
    assert latency / rate * 1000 <= limit_ms
    rng = np.random.default_rng(0)
    # Band-limited noise inside the passband comes back the same, `latency` later.
    spectrum = np.fft.rfft(rng.standard_normal(rate))
    spectrum[int(6500 * len(spectrum) / (rate / 2)) :] = 0
    x = (0.3 * np.fft.irfft(spectrum, rate) / 0.7).astype(np.float32)
    y = through(rate, frames, x, phase)
    got, want = y[rate // 4 + latency : rate // 2 + latency], x[rate // 4 : rate // 2]
    peak = int(np.argmax(np.correlate(y, want, "valid"))) - rate // 4
    assert abs(peak - latency) <= 2  # the impulse peak and the band's delay agree
    # Linear phase keeps the waveform; minimum phase keeps the magnitude (tested
    # below) but delays high frequencies a little more than low ones.
    assert np.corrcoef(got, want)[0, 1] > (0.99 if phase == "linear" else 0.8)


@pytest.mark.parametrize("rate,frames", [(48000, 384), (44100, 353)])
def test_the_passband_is_flat_and_everything_above_the_band_is_stopped(rate, frames):
    n = rate // 2
    t = np.arange(n) / rate
    for f in (100, 1000, 3000, 5000, 6000, 7000):
        y = through(rate, frames, np.sin(2 * np.pi * f * t))[n // 2 :]
        level = 20 * np.log10(np.sqrt(2 * np.mean(y**2)))
        assert abs(level) <= 0.5, (f, level)
    for f in (8500, 9000, 12000, 16000, 20000, rate / 2 - 100):
        y = through(rate, frames, np.sin(2 * np.pi * f * t))[n // 2 :]
        level = 20 * np.log10(np.sqrt(2 * np.mean(y**2)) + 1e-12)
        assert level <= -60, (f, level)  # at its own frequency or aliased anywhere


def test_designs_and_adapters_refuse_what_they_cannot_do():
    with pytest.raises(ValueError, match="phase"):
        design(48000, 16000, "maximum")
    down, up = pair(48000)
    assert (down.up, down.down, up.up, up.down) == (1, 3, 3, 1)
    with pytest.raises(ValueError, match="rate"):
        _native.RateAdapter(1, 44100, 353, down, up)  # the 48 kHz designs


def test_at_44_1_khz_the_model_runs_where_a_buffer_is_one_chunk():
    down, up = pair(44100)
    assert (down.up, down.down, up.up, up.down) == (128, 353, 353, 128)
    assert abs(down.rate_out / 16000 - 1) < 1e-3 and up.rate_out == 44100
    assert added_latency_s(44100, 353) * 1000 <= 0.5
    exact_down, _ = pair(44100, exact_rate=True)  # 16 kHz exactly: a chunk more
    assert exact_down.rate_out == 16000
    assert added_latency_s(44100, 353, exact_rate=True) * 1000 > 8.0


@pytest.mark.parametrize("frames", [352, 353])
def test_the_latency_holds_over_the_whole_buffer_cycle(frames):
    """At 44.1 kHz and exactly 16 kHz, the buffers, the resamplers' phases and
    the chunk boundaries come back into line only every 1764 buffers (14 s with
    353 frames): a click late in that cycle comes out exactly as late as one
    early in it (the output never ran dry and slipped a period)."""
    rate = 44100
    latency = round(added_latency_s(rate, frames, exact_rate=True) * rate)
    x = np.zeros(rate * 20, np.float32)
    early, late = rate, rate * 18
    x[early] = x[late] = 1.0
    y = through(rate, frames, x, exact_rate=True)
    for click in (early, late):
        window = y[click : click + 2 * latency + 100]
        assert int(np.argmax(np.abs(window))) == latency, click
