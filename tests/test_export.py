"""FixedStateStep (the exportable step) equals model.step."""

import dataclasses

import pytest
import torch
from helpers import arriving_hints

from kboost_rt.config import PAPER_BOOSTED, BoostConfig, NetConfig
from kboost_rt.reference import BoostedModel, GridNet
from kboost_rt.reference.export import FixedStateStep
from kboost_rt.signal_path import CHUNK, N_BINS

CHUNKS = 80  # past the 50-frame attention window


@pytest.mark.parametrize(
    "model",
    [
        lambda: GridNet(NetConfig(channels=1, sources=2, dim=8, hidden=8)),
        lambda: GridNet(
            NetConfig(channels=2, sources=1, dim=16, hidden=8, blocks=2, attention_heads=2)
        ),
        lambda: BoostedModel(NetConfig(), BoostConfig(hint_channels=8, delay=0)),
        lambda: BoostedModel(
            NetConfig(channels=1, sources=1),
            dataclasses.replace(PAPER_BOOSTED.boost, hint_channels=2),
        ),
    ],
)
def test_fixed_state_step_equals_step(model):
    torch.manual_seed(0)
    model = model().eval()
    fixed = FixedStateStep(model).eval()
    m = model.net.channels
    x = 0.1 * torch.randn(1, m, CHUNKS * CHUNK)
    boosted = isinstance(model, BoostedModel)
    ch = fixed.hint_channels
    hints = torch.randn(1, ch, CHUNKS, N_BINS)
    arrived = torch.rand(1, CHUNKS) > 0.3
    delivered = arriving_hints(hints, model.boost.delay if boosted else 0, CHUNKS, arrived)
    state, fixed_state = model.initial_state(), fixed.initial_state()
    with torch.no_grad():
        for t in range(CHUNKS):
            chunk = x[..., t * CHUNK : (t + 1) * CHUNK]
            hint = delivered[t] if boosted else None
            if boosted:
                want, _, state = model.step(chunk, state, hint)
            else:
                want, _, state = model.step(chunk, state)
            got, *fixed_state = fixed(
                chunk, torch.zeros(1, ch, N_BINS) if hint is None else hint, *fixed_state
            )
            assert (got - want).abs().max() < 1e-5, t
