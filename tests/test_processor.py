"""Live parameters and the native processor: defaults, bypass, smooth changes,
the small-model fallback, the hint link's rings, file == live, and the output
the processor gave before it moved into C++."""

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kboost_rt import _native
from kboost_rt.config import PAPER_BOOSTED, PAPER_SMALL
from kboost_rt.engine import NativeEngine
from kboost_rt.fallback import helps
from kboost_rt.model_files import ModelFiles, random_weights, save_model_files
from kboost_rt.params import LiveParams, Params
from kboost_rt.process import process_file
from kboost_rt.processor import Processor
from kboost_rt.signal_path import CHUNK, LOOKAHEAD, N_BINS

TENSORS = random_weights(PAPER_BOOSTED, 5)
TOOLS = Path(__file__).resolve().parent.parent / "tools"


def boosted(params=None, link=None, fallback=None, after=25):
    return Processor(PAPER_BOOSTED, TENSORS, link, fallback, params, after)


def new_link():
    return _native.HintLink(2, PAPER_BOOSTED.boost.hint_channels, PAPER_BOOSTED.boost.delay)


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
    reference = NativeEngine(PAPER_BOOSTED, TENSORS)
    processor = boosted()
    for chunk in chunks():
        sources, mix = processor.process(chunk)
        want = reference.process(chunk)
        assert np.array_equal(sources, want)
        assert np.allclose(mix, want.sum(axis=0), atol=1e-6)


def test_bypass_crossfades_to_the_latency_aligned_input():
    live = LiveParams()
    processor = boosted(live)
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
    processor = boosted(live)
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
    reference = NativeEngine(PAPER_BOOSTED, TENSORS)
    processor = boosted(live)
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
    live = boosted(LiveParams(params))
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
    link = new_link()
    d = PAPER_BOOSTED.boost.delay
    small = ModelFiles(None, PAPER_SMALL, small_tensors)
    processor = boosted(link=link, fallback=small, after=3)
    alone = [NativeEngine(PAPER_BOOSTED, TENSORS), NativeEngine(PAPER_SMALL, small_tensors)]
    arrived = [False] * d + [True] * 5 + [False] * 8 + [True] * 4  # chunks d+5.. lose hints
    hints = (0.1 * np.random.default_rng(1).standard_normal((len(arrived), 8, N_BINS))).astype(
        np.float32
    )
    ramp = np.arange(1, CHUNK + 1, dtype=np.float32) / CHUNK
    held = None
    first_lost = d + 5
    for t, (chunk, got_hint) in enumerate(zip(chunks(len(arrived)), arrived, strict=True)):
        if got_hint:
            link.deliver(t - d, hints[t])
        out = processor.process(chunk)[0].copy()
        hint = hints[t] if got_hint else None
        want_boosted, want_small = alone[0].process(chunk, hint), alone[1].process(chunk)
        if t < first_lost + 2 or t > first_lost + 8:  # hints, or fewer than 3 lost in a row
            if t >= d:
                assert np.array_equal(out, want_boosted), t
            continue
        if held is None:  # learnt from the chunks before, then held while the small model plays
            held = processor.fallback_mapping()
        order, gains = processor.fallback_mapping()  # the first chunk back learns again
        assert (order == held[0] and np.array_equal(gains, held[1])) == (t < first_lost + 8)
        small_out = _mapped(want_small, order, gains)
        if t == first_lost + 2:  # the third lost hint: fade to the small model over this chunk
            assert np.allclose(out, want_boosted + ramp * (small_out - want_boosted), atol=1e-6)
        elif t < first_lost + 8:
            assert np.allclose(out, small_out, atol=1e-7), t
        else:  # a hint again: fade back
            assert np.allclose(out, small_out + ramp * (want_boosted - small_out), atol=1e-6)
    assert processor.chunks_on_small == 6


@pytest.mark.parametrize("sources", [1, 2])
def test_the_aligner_finds_the_level_and_talker_order_of_the_other_model(sources):
    rng = np.random.default_rng(4)
    aligner = _native.OutputAligner(sources, 2)
    order, gains = aligner.mapping(sources)  # nothing heard yet: as it comes
    assert order == tuple(range(sources)) and np.array_equal(gains, np.ones(sources))
    scale = np.array([0.5, -3.0])[:sources]  # levels, one of them inverted
    for _ in range(200):
        reference = rng.standard_normal((sources, 2, CHUNK)).astype(np.float32)
        other = (reference[::-1] / scale[::-1, None, None]).astype(np.float32)  # swapped
        other += 0.01 * rng.standard_normal(other.shape).astype(np.float32)
        aligner.update(reference, other)
    out = aligner.apply(other)
    order, gains = aligner.mapping(sources)
    assert order == tuple(range(sources))[::-1] and np.allclose(gains, scale, rtol=0.02)
    assert np.abs(out - reference).std() < 0.05 * reference.std()


def test_the_fallback_runs_only_where_validation_says_it_helps():
    clips = {"clips_sha256": "0123456789abcdef"}
    boosted = {"validation": {"si_sdr_i": 2.7, "si_sdr_i_no_hints": 1.9, **clips}}
    assert helps(boosted, {"validation": {"si_sdr_i": 2.2, **clips}})
    assert not helps(boosted, {"validation": {"si_sdr_i": 1.8, **clips}})
    assert helps({}, {})  # no scores recorded: it may help
    # scores of other clips, or of unnamed ones, say nothing: it may help
    other = {"validation": {"si_sdr_i": 1.8, "clips_sha256": "fedcba9876543210"}}
    assert helps(boosted, other)
    assert helps(boosted, {"validation": {"si_sdr_i": 1.8}})
    unnamed = {"validation": {"si_sdr_i": 2.7, "si_sdr_i_no_hints": 1.9}}
    assert helps(unnamed, {"validation": {"si_sdr_i": 1.8}})


def test_fallback_needs_a_small_model_a_link_and_a_positive_count():
    not_small = ModelFiles(None, PAPER_BOOSTED, TENSORS)
    with pytest.raises(ValueError, match="small model"):
        boosted(link=new_link(), fallback=not_small)
    small = ModelFiles(None, PAPER_SMALL, random_weights(PAPER_SMALL, 7))
    with pytest.raises(ValueError, match="1 or more"):
        boosted(link=new_link(), fallback=small, after=0)
    with pytest.raises(ValueError, match="needs a hint link"):
        boosted(fallback=small)
    with pytest.raises(ValueError, match="delay"):
        boosted(link=_native.HintLink(2, 8, 1))


def test_processor_matches_the_recorded_reference():
    """The output the processor gave, in Python, before it moved into C++
    (tools/record_processor_reference.py): losses, the fallback taking over and
    handing back, and parameter changes on the way, to 5e-6: the native step's
    own float rounding has since changed (the STFT's folded tables moved the
    output by up to 1.3e-6), while any difference in what the processor does
    (gains, crossfades, a wrong hint) is far larger."""
    sys.path.insert(0, str(TOOLS))
    try:
        import record_processor_reference as recorded
    finally:
        sys.path.remove(str(TOOLS))
    x, hints, arrived = recorded.scripted_stream()
    (bcfg, btensors), (scfg, stensors) = recorded.models()
    d = bcfg.boost.delay
    link = _native.HintLink(2, bcfg.boost.hint_channels, d)
    live = LiveParams()
    small = ModelFiles(None, scfg, stensors)
    processor = Processor(bcfg, btensors, link, small, live, recorded.FALLBACK_AFTER)
    reference = np.load(recorded.OUT)
    for t in range(recorded.CHUNKS):
        if t in recorded.CHANGES:
            live.set(**recorded.CHANGES[t])
        if t >= d and arrived[t - d]:
            link.deliver(t - d, hints[t - d])
        sources, mix = processor.process(x[t])
        assert np.allclose(sources, reference["sources"][t], rtol=0, atol=5e-6), t
        assert np.allclose(mix, reference["mixes"][t], rtol=0, atol=5e-6), t
    assert processor.chunks_on_small > 0 and processor.hints_used > 0


def test_a_hint_filed_while_the_audio_thread_reads_is_never_torn():
    """Both sides at full speed in native threads, on a ring so short that the
    network side keeps rewriting the slot the audio side is copying: a hint the
    audio side accepts is always the whole hint of its chunk."""
    result = _native.stress_hint_link(hints=200_000, hint_channels=16, delay=2, slots=4)
    assert result["torn"] == 0, result
    assert result["checked"] > 1000, result  # hints were taken while the writer ran
    assert result["on_time"] + result["lost"] == result["needed"]
    assert result["late"] <= result["lost"]


def test_the_link_counts_each_hint_once():
    link = _native.HintLink(2, 8, 3)
    out = np.zeros((8, N_BINS), np.float32)
    hint = np.ones((8, N_BINS), np.float32)
    assert not link.deliver(1, hint)  # chunk 1 not sent yet: bogus (not counted)
    link.take(2, out)  # chunk 2 runs (it needs no hint yet: d = 3)
    assert not link.deliver(9, hint)  # a chunk not sent yet: bogus, never evicts one
    assert link.deliver(2, hint)  # early: filed
    assert not link.take(4, out)  # chunk 4 needs hint 1: lost
    assert link.take(5, out) and np.array_equal(out, hint)  # chunk 5 needs hint 2: on time
    assert not link.deliver(1, hint)  # hint 1 after chunk 4 ran: late
    assert link.counters() == {
        "on_time": 1, "late": 1, "lost": 1, "queued": 0, "send_dropped": 0,
    }  # fmt: skip
    chunk = np.arange(256, dtype=np.float32).reshape(2, CHUNK)
    for seq in range(40):  # the ring holds 32 input chunks
        link.send(seq, chunk + seq)
    got = np.zeros_like(chunk)
    assert link.next_chunk(got) == 0 and np.array_equal(got, chunk)
    assert link.counters()["send_dropped"] == 8


def test_non_finite_input_never_reaches_the_mix():
    live = LiveParams(Params(wet=0.5))  # half the mix is the dry input
    processor = boosted(live)
    x = chunks(4)
    x[1, 0, 10] = np.nan
    x[2, 1, :5] = np.inf
    for t in range(4):
        sources, mix = processor.process(x[t])
        assert np.all(np.isfinite(mix)) and np.all(np.isfinite(sources)), t
    assert processor.stats()["nonfinite_inputs"] == 2
    assert processor.stats()["nonfinite_resets"] == 0  # silenced before the model saw them


def test_an_any_delay_link_gives_each_hint_once_at_its_age():
    link = _native.HintLink(2, 8, 0, max_age=3)
    out = np.zeros((3, 8, N_BINS), np.float32)
    hints = [np.full((8, N_BINS), j, np.float32) for j in range(8)]
    assert link.take_fresh(0, out) == []
    assert link.deliver(0, hints[0])
    link.take_fresh(1, out)  # hint 0 taken at age 1
    assert link.deliver(1, hints[1]) and link.deliver(2, hints[2])
    # both arrive by chunk 3: the older one fills its own frame, not "late"
    assert link.take_fresh(3, out) == [1, 2]
    assert np.all(out[0] == 2) and np.all(out[1] == 1)
    assert link.take_fresh(4, out) == []  # nothing new: nothing taken twice
    # hint 3 never comes (lost when chunk 6 ran); hint 4 comes at age 3, on time
    link.take_fresh(5, out)
    assert link.deliver(4, hints[4])
    assert link.take_fresh(6, out) == [2] and np.all(out[0] == 4)
    assert link.take_fresh(7, out) == []
    assert not link.deliver(3, hints[3])  # its window closed at chunk 6: late
    assert link.counters() == {
        "on_time": 4, "late": 1, "lost": 1, "queued": 0, "send_dropped": 0,
    }  # fmt: skip
    with pytest.raises(ValueError):
        _native.HintLink(2, 8, 3, max_age=3)  # an any-delay link has no fixed delay


def test_the_processor_feeds_an_any_delay_model_every_hint_at_its_age():
    from kboost_rt.config import PAPER_BOOSTED_ANY_DELAY as cfg

    tensors = random_weights(cfg, 6)
    c_h = cfg.boost.hint_channels
    link = _native.HintLink(2, c_h, 0, max_age=cfg.boost.max_age)
    processor = Processor(cfg, tensors, link)
    reference = NativeEngine(cfg, tensors)
    rng = np.random.default_rng(1)
    x = chunks(30, seed=2)
    hints = rng.standard_normal((30, c_h, N_BINS)).astype(np.float32)
    # each hint arrives 1..10 chunks after its chunk (out of order; over 8 is lost)
    arrives = {j: j + int(rng.integers(1, 11)) for j in range(30)}
    ages_used = []
    for t in range(30):
        for j in sorted(j for j, when in arrives.items() if when == t):
            link.deliver(j, hints[j])
        fresh = sorted((t - j, j) for j, when in arrives.items() if when == t and t - j <= 8)
        sources, _ = processor.process(x[t])
        ages_used += [a for a, _ in fresh]
        want = reference.process_aged(
            x[t], np.stack([hints[j] for _, j in fresh]) if fresh else np.zeros((0, c_h, N_BINS),
            np.float32), [a for a, _ in fresh],
        )  # fmt: skip
        np.testing.assert_array_equal(sources, want)
    stats = processor.stats()
    assert stats["hints_used"] == len(ages_used) > 0
    assert stats["hints_by_age"] == [ages_used.count(a) for a in range(9)]
    assert link.counters()["lost"] == sum(1 for j, w in arrives.items() if w - j > 8 and j + 8 < 30)
