"""The resampling adapter between a device rate and the 16 kHz Processor."""

import numpy as np
import pytest
import soxr

from kboost_rt.rate_adapter import Fifo, RateAdapter


def test_fifo_wraps_and_refuses_overflow():
    fifo = Fifo(5, 1)
    out = np.zeros((3, 1), np.float32)
    for start in range(0, 30, 3):
        fifo.push(np.arange(start, start + 3, dtype=np.float32)[:, None])
        fifo.pop_into(out)
        assert out[:, 0].tolist() == [start, start + 1, start + 2]
    fifo.push(np.zeros((5, 1), np.float32))
    with pytest.raises(OverflowError):
        fifo.push(np.zeros((1, 1), np.float32))


@pytest.mark.parametrize(
    "rate,frames,quality", [(48000, 384, "LQ"), (44100, 512, "LQ"), (48000, 256, "QQ")]
)
def test_reported_latency_is_the_measured_one(rate, frames, quality):
    """Through an identity model, the output is the input delayed by exactly
    the latency the adapter reports, and every chunk is whole 128 samples."""
    chunks = []

    def identity(chunk):
        chunks.append(chunk.shape)
        return chunk

    adapter = RateAdapter(identity, rate, 2, frames, quality)
    rng = np.random.default_rng(0)
    band = soxr.resample(rng.standard_normal(32000), 16000, rate)  # inside the passband
    x = (0.1 * np.stack([band, -band], 1)).astype(np.float32)
    y = np.zeros_like(x)
    for i in range(0, len(x) - frames + 1, frames):
        adapter(x[i : i + frames], y[i : i + frames])
    probe = x[rate // 2 : rate, 0]
    lag = int(np.argmax(np.correlate(y[:, 0], probe, "valid"))) - rate // 2
    assert lag == round(adapter.added_latency_s * rate)
    assert set(chunks) == {(2, 128)}
    got = y[lag + rate // 2 : lag + rate, 0]
    assert np.corrcoef(got, probe)[0, 1] > 0.9
    assert np.allclose(y[lag + rate // 2 : lag + rate, 1], -got, atol=1e-5)


def test_unknown_quality_is_refused():
    with pytest.raises(ValueError, match="quality"):
        RateAdapter(lambda c: c, 48000, 2, 384, "best")
