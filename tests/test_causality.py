"""Causality in offline alignment: output chunk k (samples 128k..128k+127)
depends only on input before 128(k+1) + 64, and the hint made from frame j
changes no output chunk before j + d."""

import pytest
import torch

from kboost_rt.config import BoostConfig, NetConfig
from kboost_rt.reference import BoostedModel, BoostedPipeline, GridNet
from kboost_rt.signal_path import CHUNK, LOOKAHEAD, frames_for

CHUNKS = 24
SAMPLES = CHUNKS * CHUNK
SMALL = NetConfig(channels=2, sources=2, dim=8, hidden=8, blocks=3)
LARGE = NetConfig(
    channels=2, sources=2, dim=8, hidden=8, blocks=2, attention_heads=2, attention_frames=6
)


def chunk_change(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Max abs difference per output chunk."""
    diff = (a - b).abs().reshape(*a.shape[:-1], CHUNKS, CHUNK)
    return diff.flatten(0, -3).amax(dim=(0, 2))


def first_dependent_chunk(n: int) -> int:
    """The first chunk k allowed to depend on sample n: 128(k+1) + 64 > n."""
    return max(0, (n - LOOKAHEAD) // CHUNK)


def perturbed(x: torch.Tensor, n: int) -> torch.Tensor:
    y = x.clone()
    y[..., n:] += torch.randn_like(y[..., n:])
    return y


def check_input_causality(run, x, n):
    change = chunk_change(run(x), run(perturbed(x, n)))
    k0 = first_dependent_chunk(n)
    assert change[:k0].max() < 1e-12 if k0 else True
    assert change[k0] > 1e-6  # the bound is tight: the first allowed chunk does change


@pytest.mark.parametrize("n", [64 + 5 * CHUNK, 63 + 5 * CHUNK, 1000, 2 * CHUNK + 100])
@pytest.mark.parametrize("kind", ["small", "large"])
def test_gridnet_input_causality(kind, n):
    torch.manual_seed(0)
    model = GridNet(SMALL if kind == "small" else LARGE).double().eval()
    x = torch.randn(1, 2, SAMPLES, dtype=torch.float64)
    with torch.no_grad():
        check_input_causality(lambda s: model(s)[0], x, n)


@pytest.mark.parametrize("delay", [0, 1, 3, 6])
def test_boosted_input_and_hint_causality(delay):
    torch.manual_seed(delay)
    model = BoostedModel(SMALL, BoostConfig(hint_channels=4, delay=delay)).double().eval()
    x = torch.randn(1, 2, SAMPLES, dtype=torch.float64)
    hints = torch.randn(1, 4, frames_for(SAMPLES), 97, dtype=torch.float64)
    with torch.no_grad():
        check_input_causality(lambda s: model(s, hints)[0], x, 7 * CHUNK + 30)
        base = model(x, hints)[0]
        for j in (0, 4, 10):
            changed = hints.clone()
            changed[:, :, j] += 1.0
            change = chunk_change(base, model(x, changed)[0])
            assert change[: j + delay].max() < 1e-12 if j + delay else True
            assert change[j + delay] > 1e-6


def test_lost_hint_is_a_hint_of_zeros():
    torch.manual_seed(3)
    model = BoostedModel(SMALL, BoostConfig(hint_channels=4, delay=2)).double().eval()
    x = torch.randn(1, 2, SAMPLES, dtype=torch.float64)
    hints = torch.randn(1, 4, frames_for(SAMPLES), 97, dtype=torch.float64)
    arrived = torch.ones(1, frames_for(SAMPLES), dtype=torch.bool)
    arrived[0, 5] = False
    zeroed = hints.clone()
    zeroed[:, :, 5] = 0
    with torch.no_grad():
        assert torch.equal(model(x, hints, arrived)[0], model(x, zeroed)[0])


def test_pipeline_input_causality():
    torch.manual_seed(4)
    pipeline = BoostedPipeline(
        GridNet(LARGE).double(), BoostedModel(SMALL, BoostConfig(hint_channels=4, delay=3)).double()
    ).eval()
    x = torch.randn(1, 2, SAMPLES, dtype=torch.float64)
    with torch.no_grad():
        check_input_causality(lambda s: pipeline(s)[0], x, 9 * CHUNK + 64)
