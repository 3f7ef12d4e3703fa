"""The native engine against the PyTorch reference, chunk by chunk over 20 s."""

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from kboost_rt import _native
from kboost_rt.config import PAPER_BOOSTED, PAPER_LARGE, PAPER_SMALL, BoostConfig, NetConfig
from kboost_rt.engine import NativeEngine, NativeModel
from kboost_rt.model_files import ModelFileError
from kboost_rt.reference import BoostedModel, GridNet, build_model, save_model
from kboost_rt.signal_path import CHUNK, N_BINS

SECONDS = 20
CHUNKS = SECONDS * 16000 // CHUNK  # 2500
TOL = 1e-4


def tensors_of(model) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def audio(m: int, chunks: int = CHUNKS, seed: int = 0) -> np.ndarray:
    """Speech-like level: unit-variance noise scaled to 0.1, [chunks, M, 128]."""
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((chunks, m, CHUNK))).astype(np.float32)


def hint_schedule(chunks: int, delay: int, hint_channels: int, seed: int = 1):
    """Hints as the link delivers them: none before chunk d, then all of them for
    the first half, then 30 % lost for the second half."""
    rng = np.random.default_rng(seed)
    hints = rng.standard_normal((chunks, hint_channels, N_BINS)).astype(np.float32)
    arrived = np.ones(chunks, bool)
    arrived[:delay] = False
    arrived[chunks // 2 :] &= rng.random(chunks - chunks // 2) >= 0.3
    return [hints[t] if arrived[t] else None for t in range(chunks)]


def compare(model, engine: NativeEngine, x: np.ndarray, hints=None) -> float:
    state = model.initial_state()
    worst = 0.0
    with torch.no_grad():
        for t in range(x.shape[0]):
            chunk = torch.from_numpy(x[t])[None]
            if hints is None:
                want, _, state = model.step(chunk, state)
                got = engine.process(x[t])
            else:
                h = None if hints[t] is None else torch.from_numpy(hints[t])[None]
                want, _, state = model.step(chunk, state, h)
                got = engine.process(x[t], hints[t])
            worst = max(worst, float(np.abs(got - want[0].numpy()).max()))
    return worst


@pytest.mark.parametrize("m,s", [(1, 1), (1, 2), (2, 1), (2, 2)])
def test_small_matches_reference(m, s):
    torch.manual_seed(m * 3 + s)
    cfg = dataclasses.replace(PAPER_SMALL, net=NetConfig(channels=m, sources=s))
    model = build_model(cfg).eval()
    assert compare(model, NativeEngine(cfg, tensors_of(model)), audio(m)) <= TOL


@pytest.mark.parametrize(
    "m,s,delay",
    [
        (2, 2, 0),
        (2, 2, 1),
        (2, 2, 3),
        (2, 2, 6),
        (1, 1, 0),
        (1, 1, 1),
        (1, 1, 3),
        (1, 1, 6),
        (1, 2, 3),
        (2, 1, 6),
    ],
)
def test_boosted_matches_reference_with_and_without_hints(m, s, delay):
    torch.manual_seed(delay * 7 + m)
    net = NetConfig(channels=m, sources=s)
    boost = BoostConfig(hint_channels=2 * s * m, delay=delay)
    cfg = dataclasses.replace(PAPER_BOOSTED, net=net, boost=boost)
    model = build_model(cfg).eval()
    hints = hint_schedule(CHUNKS, delay, boost.hint_channels)
    assert any(h is None for h in hints[CHUNKS // 2 :]) and hints[CHUNKS // 4] is not None
    assert compare(model, NativeEngine(cfg, tensors_of(model)), audio(m), hints) <= TOL


def aged_schedule(chunks: int, hint_channels: int, seed: int = 2):
    """What an any-delay model gets at each chunk: [(hint, age), ...] with ages
    jittering over 1-10 (9 and 10 too old), 10 % lost, bursts and reordering."""
    rng = np.random.default_rng(seed)
    hints = rng.standard_normal((chunks, hint_channels, N_BINS)).astype(np.float32)
    ages = rng.integers(1, 11, chunks)
    lost = rng.random(chunks) < 0.1
    out = [[] for _ in range(chunks)]
    for j in range(chunks):
        if not lost[j] and j + ages[j] < chunks:
            out[j + ages[j]].append((hints[j], int(ages[j])))
    return out


@pytest.mark.parametrize("m,s", [(2, 2), (1, 1)])
def test_any_delay_boosted_matches_reference(m, s):
    torch.manual_seed(40 + m)
    net = NetConfig(channels=m, sources=s)
    boost = BoostConfig(hint_channels=8, delay=0, max_age=8)
    cfg = dataclasses.replace(PAPER_BOOSTED, net=net, boost=boost)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for merge in model.merges:
            merge.age_bias.normal_()
    engine = NativeEngine(cfg, tensors_of(model))
    assert engine.any_delay
    x = audio(m, chunks=1000)
    schedule = aged_schedule(1000, 8)
    assert max(len(a) for a in schedule) >= 3
    state, worst, empty = model.initial_state(), 0.0, np.zeros((0, 8, N_BINS), np.float32)
    with torch.no_grad():
        for t in range(x.shape[0]):
            arrived = schedule[t]
            pairs = [(torch.from_numpy(h)[None], a) for h, a in arrived]
            want, _, state = model.step(torch.from_numpy(x[t])[None], state, hints=pairs)
            hints = np.stack([h for h, _ in arrived]) if arrived else empty
            got = engine.process_aged(x[t], hints, [a for _, a in arrived])
            worst = max(worst, float(np.abs(got - want[0].numpy()).max()))
    assert worst <= TOL
    with pytest.raises(ValueError, match="ages"):
        engine.process(x[0], schedule[20][0][0] if schedule[20] else np.zeros((8, 97), "f4"))
    with pytest.raises(ValueError, match=r"\[K, 8, 97\]"):
        engine.process_aged(x[0], np.zeros((2, 8, 97), np.float32), [1])


LARGE_TEST = NetConfig(dim=32, hidden=32, blocks=2, attention_heads=4)


@pytest.mark.parametrize(
    "net,chunks",
    [
        (dataclasses.replace(LARGE_TEST, channels=1, sources=1), CHUNKS),
        (dataclasses.replace(LARGE_TEST, channels=1, sources=2), CHUNKS),
        (dataclasses.replace(LARGE_TEST, channels=2, sources=1), CHUNKS),
        (PAPER_LARGE.net, CHUNKS),
    ],
)
def test_large_matches_reference_and_makes_the_same_hints(net, chunks):
    torch.manual_seed(net.channels + net.dim)
    large = GridNet(net).eval()
    boosted = BoostedModel(
        NetConfig(channels=net.channels, sources=net.sources),
        BoostConfig(hint_channels=net.spec_channels, delay=3),
    )
    generator = {f"hint_generator.{k}": v for k, v in tensors_of(boosted.hint_generator).items()}
    cfg = dataclasses.replace(PAPER_LARGE, net=net)
    engine = NativeEngine(cfg, tensors_of(large), hint_generator=generator)
    assert engine.makes_hints
    x = audio(net.channels, chunks)
    state = large.initial_state()
    history = boosted.hint_generator.initial_history(1, torch.float32)
    worst_out = worst_hint = 0.0
    with torch.no_grad():
        for t in range(chunks):
            want, maps, state = large.step(torch.from_numpy(x[t])[None], state)
            want_hint, history = boosted.hint_generator.step(maps, history)
            got, got_hint = engine.process_with_hint(x[t])
            worst_out = max(worst_out, float(np.abs(got - want[0].numpy()).max()))
            worst_hint = max(worst_hint, float(np.abs(got_hint - want_hint[0, :, 0].numpy()).max()))
    assert worst_out <= TOL and worst_hint <= TOL


def test_engine_from_model_folders(tmp_path):
    torch.manual_seed(0)
    large, boosted = build_model(PAPER_LARGE), build_model(PAPER_BOOSTED)
    save_model(large, PAPER_LARGE, tmp_path / "large")
    save_model(boosted, PAPER_BOOSTED, tmp_path / "boosted")
    engine = NativeEngine.from_folder(tmp_path / "large", hints_for=tmp_path / "boosted")
    small_engine = NativeEngine.from_folder(tmp_path / "boosted")
    x = audio(2, 20)
    state = large.eval().initial_state()
    with torch.no_grad():
        for t in range(20):
            want, _, state = large.step(torch.from_numpy(x[t])[None], state)
            got, hint = engine.process_with_hint(x[t])
            assert np.abs(got - want[0].numpy()).max() <= TOL
            assert small_engine.process(x[t], hint).shape == (2, 2, CHUNK)
    with pytest.raises(ModelFileError, match="not a boosted model"):
        NativeEngine.from_folder(tmp_path / "large", hints_for=tmp_path / "large")


def test_streams_of_one_model_share_its_weights_and_keep_their_own_state():
    """Engines of one NativeModel, stepped interleaved and from two threads at once
    on different audio, each equal an engine with a model of its own, bit for bit."""
    torch.manual_seed(3)
    large = GridNet(LARGE_TEST).eval()
    boosted = BoostedModel(NetConfig(), BoostConfig(hint_channels=8, delay=3))
    generator = {f"hint_generator.{k}": v for k, v in tensors_of(boosted.hint_generator).items()}
    cfg, tensors = dataclasses.replace(PAPER_LARGE, net=LARGE_TEST), tensors_of(large)
    shared = NativeModel(cfg, tensors, generator)
    streams = [audio(2, 150, seed=s) for s in range(3)]

    def alone(x):
        engine = NativeEngine(cfg, tensors, generator)
        return [engine.process_with_hint(chunk) for chunk in x]

    wanted = [alone(x) for x in streams]
    engines = [shared.engine() for _ in streams]
    assert all(e.model is shared for e in engines) and shared.makes_hints
    assert 0 < engines[0].state_bytes and 0 < shared.weight_bytes
    for t in range(150):  # chunk t of every stream before chunk t + 1 of any
        for engine, x, want in zip(engines, streams, wanted, strict=True):
            out, hint = engine.process_with_hint(x[t])
            assert np.array_equal(out, want[t][0]) and np.array_equal(hint, want[t][1])

    def run(x):  # the step releases the GIL: the threads step at the same time
        engine = shared.engine()
        return [engine.process_with_hint(chunk) for chunk in x]

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, streams[:2]))
    for got, want in zip(results, wanted, strict=False):
        for (out, hint), (out_w, hint_w) in zip(got, want, strict=True):
            assert np.array_equal(out, out_w) and np.array_equal(hint, hint_w)
    with pytest.raises(ValueError, match="no tensors of its own"):
        NativeEngine(shared, tensors)


@pytest.fixture(scope="module")
def boosted_engine_and_model():
    torch.manual_seed(11)
    model = build_model(PAPER_BOOSTED).eval()
    return model, tensors_of(model)


@pytest.mark.parametrize("where", ["input-nan", "input-inf", "hint-nan"])
def test_nonfinite_input_silences_one_chunk_then_recovers(boosted_engine_and_model, where):
    _, tensors = boosted_engine_and_model
    engine = NativeEngine(PAPER_BOOSTED, tensors)
    x = audio(2, 60, seed=5)
    hints = hint_schedule(60, 3, 8)
    bad = 30
    if where.startswith("input"):
        x = x.copy()
        x[bad, 1, 17] = np.nan if where == "input-nan" else np.inf
    else:
        hints[bad] = hints[bad].copy()
        hints[bad][4, 50] = np.nan
    outs = [engine.process(x[t], hints[t]) for t in range(60)]
    assert engine.nonfinite_resets == 1 and engine.chunks == 60
    assert not np.any(outs[bad]) and np.all(np.isfinite(np.array(outs)))
    # After the reset it behaves exactly like a fresh engine started at bad + 1.
    fresh = NativeEngine(PAPER_BOOSTED, tensors)
    for t in range(bad + 1, 60):
        assert np.array_equal(outs[t], fresh.process(x[t], hints[t]))


def test_reset_equals_a_new_engine(boosted_engine_and_model):
    _, tensors = boosted_engine_and_model
    engine = NativeEngine(PAPER_BOOSTED, tensors)
    x = audio(2, 30, seed=6)
    first = [engine.process(c) for c in x]
    engine.reset()
    second = [engine.process(c) for c in x]
    assert np.array_equal(np.array(first), np.array(second))


def test_all_kernel_sets_agree(boosted_engine_and_model):
    """The generic build and the SIMD one compute the same step."""
    model, tensors = boosted_engine_and_model
    x = audio(2, 100, seed=7)
    hints = hint_schedule(100, 3, 8)
    results = {}
    try:
        for name in _native.kernel_sets():
            assert _native.select_kernels(name)
            engine = NativeEngine(PAPER_BOOSTED, tensors)
            results[name] = np.array([engine.process(x[t], hints[t]) for t in range(100)])
    finally:
        _native.select_kernels(_native.kernel_sets()[-1])
    assert "generic" in results
    for name, out in results.items():
        assert np.abs(out - results["generic"]).max() <= TOL, name


def test_every_kernel_set_matches_the_reference_at_hidden_64():
    """The 64-wide LSTM recurrences (the paper's large model) have their own
    kernel paths; every set runs them to the reference's tolerance."""
    net = NetConfig(dim=64, hidden=64, blocks=1)
    torch.manual_seed(11)
    model = GridNet(net).eval()
    cfg = dataclasses.replace(PAPER_SMALL, net=net)
    x = audio(2, 40, seed=3)
    try:
        for name in _native.kernel_sets():
            assert _native.select_kernels(name)
            worst = compare(model, NativeEngine(cfg, tensors_of(model)), x)
            assert worst <= TOL, (name, worst)
    finally:
        _native.select_kernels(_native.kernel_sets()[-1])


def test_bad_arguments_give_clear_errors(boosted_engine_and_model):
    _, tensors = boosted_engine_and_model
    engine = NativeEngine(PAPER_BOOSTED, tensors)
    with pytest.raises(ValueError, match=r"chunk must be \[2, 128\]"):
        engine.process(np.zeros((2, 100), np.float32))
    with pytest.raises(ValueError, match=r"hint must be \[8, 97\]"):
        engine.process(np.zeros((2, 128), np.float32), np.zeros((8, 96), np.float32))
    with pytest.raises(ValueError, match="has no hint generator"):
        engine.process_with_hint(np.zeros((2, 128), np.float32))
    chunk = np.zeros((2, 128), np.float32)
    for out in (
        np.zeros((2, 2, 128), np.float64),
        np.zeros((2, 2, 128), np.float32)[:, ::-1],
        np.zeros((2, 1, 128), np.float32),
    ):  # a copy's writes would be lost: refused
        with pytest.raises(ValueError, match="out must be a writeable C-contiguous float32"):
            engine.process_into(chunk, None, out)
    broken = dict(tensors)
    broken["small.blocks.1.inter_proj.weight"] = np.zeros((16, 15), np.float32)
    with pytest.raises(
        ValueError, match=r"'small.blocks.1.inter_proj.weight' has shape \(16, 15\)"
    ):
        NativeEngine(PAPER_BOOSTED, broken)
    del broken["small.blocks.1.inter_proj.weight"]
    with pytest.raises(ValueError, match="missing tensor 'small.blocks.1.inter_proj.weight'"):
        NativeEngine(PAPER_BOOSTED, broken)
