"""Test helpers: run a reference model chunk by chunk."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from kboost_rt.signal_path import CHUNK  # noqa: E402


def stream(model, x, hints=None):
    """Feed x [B, M, samples] chunk by chunk; hints[t] is what arrives at chunk t."""
    state = model.initial_state(x.shape[0])
    outs = []
    for t in range(x.shape[-1] // CHUNK):
        chunk = x[..., t * CHUNK : (t + 1) * CHUNK]
        if hints is None:
            out, _, state = model.step(chunk, state)
        else:
            out, _, state = model.step(chunk, state, hints[t])
        outs.append(out)
    return torch.cat(outs, dim=-1)


def arriving_hints(hints, delay, chunks, arrived=None):
    """What the network delivers at each chunk: hint t-d (if made and not lost), else None."""
    out = []
    for t in range(chunks):
        j = t - delay
        ok = j >= 0 and (arrived is None or bool(arrived[0, j]))
        out.append(hints[:, :, j] if ok else None)
    return out
