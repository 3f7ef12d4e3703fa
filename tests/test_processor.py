"""Live parameters and the Processor: defaults, bypass, smooth changes, file == live."""

import numpy as np
import pytest
import soundfile as sf

from kboost_rt.config import PAPER_BOOSTED, PAPER_SMALL
from kboost_rt.engine import NativeEngine
from kboost_rt.fallback import OutputAligner, SmallModelFallback, helps
from kboost_rt.model_files import random_weights, save_model_files
from kboost_rt.params import LiveParams, Params
from kboost_rt.process import process_file
from kboost_rt.processor import Processor
from kboost_rt.signal_path import CHUNK, LOOKAHEAD

TENSORS = random_weights(PAPER_BOOSTED, 5)


def chunks(n=20, seed=0):
    return (0.1 * np.random.default_rng(seed).standard_normal((n, 2, CHUNK))).astype(np.float32)


def test_live_params_validate_and_swap():
    live = LiveParams()
    before = live.snapshot()
    after = live.set(gain_db=-6.0, source=2)
    assert before == Params() and live.snapshot() is after and after.gain_db == -6.0
    for bad in ({"gain_db": 20.0}, {"wet": 1.5}, {"source": 3}, {"volume": 1}):
        with pytest.raises(ValueError):
            live.set(**bad)
    assert live.snapshot() is after  # a refused change leaves the values alone


def test_defaults_give_the_model_output_and_its_sum():
    engine, reference = NativeEngine(PAPER_BOOSTED, TENSORS), NativeEngine(PAPER_BOOSTED, TENSORS)
    processor = Processor(engine)
    for chunk in chunks():
        sources, mix = processor.process(chunk)
        want = reference.process(chunk)
        assert np.array_equal(sources, want)
        assert np.allclose(mix, want.sum(axis=0), atol=1e-6)


def test_bypass_crossfades_to_the_latency_aligned_input():
    live = LiveParams()
    processor = Processor(NativeEngine(PAPER_BOOSTED, TENSORS), params=live)
    x = chunks(10)
    stream = x.transpose(1, 0, 2).reshape(2, -1)
    delayed = np.concatenate([np.zeros((2, LOOKAHEAD), np.float32), stream], axis=1)
    for t in range(3):
        processor.process(x[t])
    live.set(bypass=True)
    _, ramp = processor.process(x[3])  # the crossfade chunk: partly model, partly input
    assert not np.allclose(ramp, delayed[:, 3 * CHUNK : 4 * CHUNK], atol=1e-6)
    for t in range(4, 10):
        _, mix = processor.process(x[t])
        assert np.allclose(mix, delayed[:, t * CHUNK : (t + 1) * CHUNK], atol=1e-7)


def test_gain_changes_ramp_over_one_chunk_without_a_step():
    live = LiveParams(Params(bypass=True))
    processor = Processor(NativeEngine(PAPER_BOOSTED, TENSORS), params=live)
    dc = np.full((2, CHUNK), 0.5, np.float32)
    for _ in range(3):
        _, mix = processor.process(dc)
    assert np.allclose(mix, 0.5)
    live.set(gain_db=-60.0)
    _, mix = processor.process(dc)
    target = 0.5 * 10 ** (-60 / 20)
    expected = 0.5 + (target - 0.5) * np.arange(1, CHUNK + 1) / CHUNK
    assert np.allclose(mix[0], expected, atol=1e-6)
    assert np.abs(np.diff(mix[0])).max() < 0.5 / CHUNK * 1.01  # no jump bigger than one step
    _, mix = processor.process(dc)
    assert np.allclose(mix, target)


def test_source_select_crossfades():
    live = LiveParams()
    engine, reference = NativeEngine(PAPER_BOOSTED, TENSORS), NativeEngine(PAPER_BOOSTED, TENSORS)
    processor = Processor(engine, params=live)
    x = chunks(6)
    for t in range(3):
        processor.process(x[t])
        reference.process(x[t])
    live.set(source=2)
    _, mix = processor.process(x[3])
    want = reference.process(x[3])
    r = np.arange(1, CHUNK + 1) / CHUNK
    assert np.allclose(mix, (1 - r) * want[0] + want[1], atol=1e-6)  # source 1 fades out
    _, mix = processor.process(x[4])
    assert np.allclose(mix, reference.process(x[4])[1], atol=1e-6)


def test_process_mix_file_equals_the_live_path(tmp_path):
    save_model_files(tmp_path / "m", PAPER_BOOSTED, TENSORS)
    x = chunks(30, seed=3)
    stream = x.transpose(1, 0, 2).reshape(2, -1)
    sf.write(tmp_path / "in.wav", stream.T, 16000, subtype="FLOAT")
    params = Params(gain_db=-3.0, wet=0.7, source=1)
    process_file(
        tmp_path / "in.wav",
        tmp_path / "mix.wav",
        tmp_path / "m",
        progress=False,
        params=params,
        mix=True,
    )
    got, _ = sf.read(tmp_path / "mix.wav", dtype="float32", always_2d=True)
    live = Processor(NativeEngine(PAPER_BOOSTED, TENSORS), params=LiveParams(params))
    padded = np.concatenate([stream, np.zeros((2, CHUNK), np.float32)], axis=1)
    played = np.concatenate(
        [
            live.process(padded[:, t * CHUNK : (t + 1) * CHUNK])[1].copy()
            for t in range(padded.shape[1] // CHUNK)
        ],
        axis=1,
    )
    assert np.array_equal(got.T, played[:, LOOKAHEAD : LOOKAHEAD + stream.shape[1]])


def _mapped(small: np.ndarray, order, gains) -> np.ndarray:
    return np.stack([(gains[i] * small[j]).astype(np.float32) for i, j in enumerate(order)])


def test_fallback_crossfades_to_the_level_matched_small_model_and_back():
    small_tensors = random_weights(PAPER_SMALL, 7)
    boosted = NativeEngine(PAPER_BOOSTED, TENSORS)
    alone = [NativeEngine(PAPER_BOOSTED, TENSORS), NativeEngine(PAPER_SMALL, small_tensors)]
    fallback = SmallModelFallback(NativeEngine(PAPER_SMALL, small_tensors), after=3)
    arrived = [True] * 5 + [False] * 8 + [True] * 4  # chunks 5-12 lose their hints
    hints = 0.1 * np.random.default_rng(1).standard_normal((len(arrived), 8, 97))
    ramp = np.arange(1, CHUNK + 1, dtype=np.float32) / CHUNK
    held = None
    for t, (chunk, got_hint) in enumerate(zip(chunks(len(arrived)), arrived, strict=True)):
        hint = hints[t].astype(np.float32) if got_hint else None
        out = boosted.process(chunk, hint)
        want_boosted, want_small = alone[0].process(chunk, hint), alone[1].process(chunk)
        fallback.apply(chunk, got_hint, out)
        if t < 7 or t > 13:  # hints, or fewer than 3 lost in a row: the boosted model
            assert np.array_equal(out, want_boosted), t
            continue
        if held is None:  # learnt from chunks 0-6, then held while the small model plays
            held = fallback.aligner.mapping()
        order, gains = fallback.aligner.mapping()  # chunk 13 learns from its boosted output
        assert (order == held[0] and np.array_equal(gains, held[1])) == (t < 13)
        small = _mapped(want_small, order, gains)
        if t == 7:  # the third lost hint: fade to the small model over this chunk
            assert np.allclose(out, want_boosted + ramp * (small - want_boosted), atol=1e-6)
        elif t < 13:
            assert np.allclose(out, small, atol=1e-7), t
        else:  # a hint again: fade back
            assert np.allclose(out, small + ramp * (want_boosted - small), atol=1e-6)
    assert fallback.chunks_on_small == 6


@pytest.mark.parametrize("sources", [1, 2])
def test_the_aligner_finds_the_level_and_talker_order_of_the_other_model(sources):
    rng = np.random.default_rng(4)
    aligner = OutputAligner(sources)
    order, gains = aligner.mapping()  # nothing heard yet: as it comes
    assert order == tuple(range(sources)) and np.array_equal(gains, np.ones(sources))
    scale = np.array([0.5, -3.0])[:sources]  # levels, one of them inverted
    for _ in range(200):
        reference = rng.standard_normal((sources, 2, CHUNK)).astype(np.float32)
        other = (reference[::-1] / scale[::-1, None, None]).astype(np.float32)  # swapped
        other += 0.01 * rng.standard_normal(other.shape).astype(np.float32)
        aligner.update(reference, other)
    out = np.zeros_like(other)
    aligner.apply(other, out)
    order, gains = aligner.mapping()
    assert order == tuple(range(sources))[::-1] and np.allclose(gains, scale, rtol=0.02)
    assert np.abs(out - reference).std() < 0.05 * reference.std()


def test_the_fallback_runs_only_where_validation_says_it_helps():
    boosted = {"validation": {"si_sdr_i": 2.7, "si_sdr_i_no_hints": 1.9}}
    assert helps(boosted, {"validation": {"si_sdr_i": 2.2}})
    assert not helps(boosted, {"validation": {"si_sdr_i": 1.8}})
    assert helps({}, {})  # no scores recorded: it may help


def test_fallback_needs_a_small_model_and_a_positive_count():
    with pytest.raises(ValueError, match="small model"):
        SmallModelFallback(NativeEngine(PAPER_BOOSTED, TENSORS))
    with pytest.raises(ValueError, match="1 or more"):
        SmallModelFallback(NativeEngine(PAPER_SMALL, random_weights(PAPER_SMALL, 7)), after=0)
