"""Streaming equals offline: the first test every model change must keep passing.

A stream starts with 64 samples of zero history, so chunk-by-chunk output of
x equals the offline output of x with 64 zeros in front (the look-ahead lag).
"""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from helpers import arriving_hints, stream

from kboost_rt.config import PAPER_BOOSTED, PAPER_SMALL, BoostConfig, NetConfig
from kboost_rt.reference import BoostedModel, BoostedPipeline, GridNet
from kboost_rt.signal_path import CHUNK, LOOKAHEAD, frames_for

CHUNKS = 250  # 2 s
SAMPLES = CHUNKS * CHUNK
DELAYS = [0, 1, 3, 6]


def small_net(m, s=2):
    return NetConfig(channels=m, sources=s, dim=8, hidden=8, blocks=3)


def large_net(m, s=2):
    return NetConfig(channels=m, sources=s, dim=16, hidden=16, blocks=2, attention_heads=2)


def offline(model, x, *args):
    with torch.no_grad():
        return model(F.pad(x, (LOOKAHEAD, 0)), *args)[0][..., : x.shape[-1]]


def audio(m, seed, dtype=torch.float64, batch=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, m, SAMPLES, generator=g, dtype=dtype)


@pytest.mark.parametrize("m,s", [(1, 1), (2, 2), (1, 2), (2, 1)])
@pytest.mark.parametrize("kind", ["small", "large"])
def test_gridnet_streaming_equals_offline(kind, m, s):
    torch.manual_seed(m * 10 + s)
    net = small_net(m, s) if kind == "small" else large_net(m, s)
    model = GridNet(net).double().eval()
    x = audio(m, seed=1)
    with torch.no_grad():
        diff = (stream(model, x) - offline(model, x)).abs().max().item()
    assert diff < 1e-9


@pytest.mark.parametrize("m", [1, 2])
@pytest.mark.parametrize("delay", DELAYS)
def test_boosted_streaming_equals_offline(delay, m):
    torch.manual_seed(delay * 10 + m)
    boost = BoostConfig(hint_channels=4, delay=delay)
    model = BoostedModel(small_net(m), boost).double().eval()
    x = audio(m, seed=2)
    frames = frames_for(SAMPLES + LOOKAHEAD)
    hints = torch.randn(1, 4, frames, 97, dtype=torch.float64)
    with torch.no_grad():
        streamed = stream(model, x, arriving_hints(hints, delay, CHUNKS))
        diff = (streamed - offline(model, x, hints)).abs().max().item()
    assert diff < 1e-9
    # The hints matter: without them the output is different.
    with torch.no_grad():
        unhinted = stream(model, x, [None] * CHUNKS)
    assert (unhinted - streamed).abs().max().item() > 1e-6 or delay >= CHUNKS


@pytest.mark.parametrize("delay", [1, 3])
def test_boosted_with_lost_hints_streaming_equals_offline(delay):
    torch.manual_seed(5)
    model = BoostedModel(small_net(2), BoostConfig(hint_channels=8, delay=delay)).double()
    x = audio(2, seed=3)
    frames = frames_for(SAMPLES + LOOKAHEAD)
    hints = torch.randn(1, 8, frames, 97, dtype=torch.float64)
    arrived = torch.rand(1, frames, generator=torch.Generator().manual_seed(4)) > 0.3
    with torch.no_grad():
        streamed = stream(model, x, arriving_hints(hints, delay, CHUNKS, arrived))
        diff = (streamed - offline(model, x, hints, arrived)).abs().max().item()
    assert diff < 1e-9


@pytest.mark.parametrize("m,delay", [(1, 0), (2, 3), (2, 6)])
def test_pipeline_streaming_equals_offline(m, delay):
    """Large model -> hint generator -> d-chunk FIFO -> boosted small model, per chunk."""
    torch.manual_seed(7)
    large = GridNet(large_net(m)).double()
    boosted = BoostedModel(small_net(m), BoostConfig(hint_channels=4, delay=delay)).double()
    pipeline = BoostedPipeline(large, boosted).eval()
    x = audio(m, seed=4, batch=2)
    arrived = torch.rand(2, frames_for(SAMPLES + LOOKAHEAD)) > 0.1
    state = pipeline.initial_state(2)
    small_out, large_out = [], []
    with torch.no_grad():
        for t in range(CHUNKS):
            # The link loses a hint for the whole batch or for none of it.
            s, lg, state = pipeline.step(
                x[..., t * CHUNK : (t + 1) * CHUNK], state, bool(arrived[0, t])
            )
            small_out.append(s)
            large_out.append(lg)
        arrived[1] = arrived[0]
        want_small, want_large = pipeline(F.pad(x, (LOOKAHEAD, 0)), arrived)
    assert (torch.cat(small_out, -1) - want_small[..., :SAMPLES]).abs().max() < 1e-9
    assert (torch.cat(large_out, -1) - want_large[..., :SAMPLES]).abs().max() < 1e-9


def test_float32_paper_sizes_within_1e_5():
    torch.manual_seed(0)
    x = audio(2, seed=5, dtype=torch.float32)
    small = GridNet(PAPER_SMALL.net).eval()
    assert (stream(small, x) - offline(small, x)).abs().max() < 1e-5
    boosted = BoostedModel(PAPER_BOOSTED.net, PAPER_BOOSTED.boost).eval()
    hints = torch.randn(1, 8, frames_for(SAMPLES + LOOKAHEAD), 97)
    d = PAPER_BOOSTED.boost.delay
    with torch.no_grad():
        streamed = stream(boosted, x, arriving_hints(hints, d, CHUNKS))
    assert (streamed - offline(boosted, x, hints)).abs().max() < 1e-5


def test_state_is_not_mutated_by_step():
    """A state can be stepped twice (e.g. to try two hints) with the same result."""
    torch.manual_seed(1)
    cfg = dataclasses.replace(PAPER_BOOSTED.boost, delay=2)
    model = BoostedModel(small_net(2), cfg).double()
    x = audio(2, seed=6)
    state = model.initial_state()
    with torch.no_grad():
        for t in range(5):
            _, _, state = model.step(x[..., t * CHUNK : (t + 1) * CHUNK], state)
        chunk = x[..., 5 * CHUNK : 6 * CHUNK]
        a, _, _ = model.step(chunk, state)
        b, _, _ = model.step(chunk, state)
    assert torch.equal(a, b)


def test_wrong_input_shapes_raise():
    model = GridNet(PAPER_SMALL.net)
    with pytest.raises(ValueError, match="expected input"):
        model(torch.zeros(1, 1, 1000))
    with pytest.raises(ValueError, match="128 samples"):
        model.step(torch.zeros(1, 2, 100), model.initial_state())
    boosted = BoostedModel(PAPER_BOOSTED.net, PAPER_BOOSTED.boost)
    with pytest.raises(ValueError, match="hints must have shape"):
        boosted(torch.zeros(1, 2, 1280), torch.zeros(1, 8, 3, 97))


def arriving_with_ages(hints, ages, chunks):
    """What the network delivers at each chunk: every (hint j, age) with j + age == t."""
    out = [[] for _ in range(chunks)]
    for j in range(min(chunks, ages.shape[1])):
        t = j + int(ages[0, j])
        if 1 <= int(ages[0, j]) and t < chunks:
            out[t].append((hints[:, :, j], int(ages[0, j])))
    return out


@pytest.mark.parametrize("m", [1, 2])
def test_any_delay_streaming_equals_offline(m):
    """Ages jitter 1..max_age, some hints lost or too old, several arrive at once
    and out of order: streamed chunk by chunk it equals the offline model."""
    torch.manual_seed(11 + m)
    boost = BoostConfig(hint_channels=4, delay=0, max_age=8, frames=20)
    model = BoostedModel(small_net(m), boost).double().eval()
    with torch.no_grad():
        for merge in model.merges:
            merge.age_bias.normal_()  # trained models have one; zeros would hide a lag mix-up
    x = audio(m, seed=6)
    frames = frames_for(SAMPLES + LOOKAHEAD)
    g = torch.Generator().manual_seed(12)
    hints = torch.randn(1, 4, frames, 97, dtype=torch.float64, generator=g)
    ages = torch.randint(1, 11, (1, frames), generator=g)  # 9, 10: too old, never used
    ages[0, ::17] = 0  # lost
    delivered = arriving_with_ages(hints, ages, CHUNKS)
    assert max(len(d) for d in delivered) >= 3
    with torch.no_grad():
        streamed = stream(model, x, [{"hints": d} for d in delivered])
        diff = (streamed - offline(model, x, hints, None, ages)).abs().max().item()
        unhinted = stream(model, x, [{"hints": []}] * CHUNKS)
    assert diff < 1e-9
    assert (unhinted - streamed).abs().max().item() > 1e-6


def test_any_delay_uses_a_hint_that_arrives_after_a_fresher_one():
    """Hint 10 arriving at chunk 15 (after hint 12 at 13) still changes the output."""
    torch.manual_seed(3)
    model = BoostedModel(small_net(1), BoostConfig(hint_channels=4, delay=0, max_age=8)).double()
    x = audio(1, seed=7)[..., : 30 * CHUNK]
    hints = torch.randn(1, 4, 97, dtype=torch.float64)
    base = [[] for _ in range(30)]
    base[13] = [(hints, 1)]
    late = [list(d) for d in base]
    late[15] = [(hints * 2, 5)]
    with torch.no_grad():
        a = stream(model, x, [{"hints": d} for d in base])
        b = stream(model, x, [{"hints": d} for d in late])
    assert (a[..., : 15 * CHUNK] - b[..., : 15 * CHUNK]).abs().max() == 0
    assert (a[..., 15 * CHUNK :] - b[..., 15 * CHUNK :]).abs().max() > 1e-6
