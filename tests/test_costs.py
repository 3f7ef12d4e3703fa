"""Parameter shapes and MACs per chunk, from the config alone."""

import dataclasses

import pytest

from kboost_rt.config import PAPER_BOOSTED, PAPER_LARGE, PAPER_SMALL, BoostConfig, NetConfig
from kboost_rt.costs import macs_per_chunk, parameter_counts, parameter_shapes
from kboost_rt.reference import build_model

# Measured on the authors' code at the paper's sizes (2 mics, 2 sources).
PAPER_MACS = {
    "small": (PAPER_SMALL, 2.18e6),
    "boosted": (PAPER_BOOSTED, 2.67e6),
    "large": (PAPER_LARGE, 38.7e6),
}


@pytest.mark.parametrize("role", PAPER_MACS)
def test_paper_macs_match_the_authors_code(role):
    cfg, want = PAPER_MACS[role]
    got = macs_per_chunk(cfg)["device"]
    assert abs(got - want) / want < 0.005, (role, got)


def test_boosting_adds_merges_but_not_the_hint_generator():
    small = macs_per_chunk(PAPER_SMALL)
    boosted = macs_per_chunk(PAPER_BOOSTED)
    assert boosted["device"] == small["device"] + boosted["merges"]
    assert boosted["hint_generator"] == 8 * 8 * 9 * 97


CONFIGS = [
    PAPER_SMALL,
    PAPER_LARGE,
    PAPER_BOOSTED,
    dataclasses.replace(
        PAPER_SMALL, net=NetConfig(channels=1, sources=1, dim=12, hidden=20, blocks=2)
    ),
    dataclasses.replace(
        PAPER_LARGE,
        net=NetConfig(
            channels=1,
            sources=2,
            dim=24,
            hidden=8,
            blocks=1,
            attention_heads=3,
            attention_qk_dim=100,
        ),
    ),
    dataclasses.replace(
        PAPER_BOOSTED,
        net=NetConfig(channels=2, sources=1, dim=8, hidden=8, blocks=4),
        boost=BoostConfig(hint_channels=2, delay=6, heads=2, qk_dim=300),
    ),
]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_shapes_match_the_reference_model(cfg):
    want = {name: tuple(t.shape) for name, t in build_model(cfg).state_dict().items()}
    assert parameter_shapes(cfg) == want
    assert sum(parameter_counts(cfg).values()) == sum(
        p.numel() for p in build_model(cfg).parameters()
    )
