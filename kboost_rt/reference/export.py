"""The streaming step as a pure function of fixed-shape tensors, for TorchScript,
torch.compile and ONNX export.

`model.step` keeps its state in Python objects and grows the attention caches
over the first frames; exporters need every state tensor at one shape. Here
the caches are full-size from the start with a `valid` mask, the STFT and
inverse STFT are matrix products (no complex tensors), and the state travels
as a flat tuple: `(out, *new_state) = FixedStateStep(model)(chunk, hint, *state)`.
The result equals `model.step` (tests/test_export.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..signal_path import CHUNK, LOOKAHEAD, N_BINS, WINDOW
from .layers import FrameAttention
from .models import BoostedModel, GridNet
from .stft import hamming, inverse_envelope


def _dft_matrices() -> tuple[torch.Tensor, torch.Tensor]:
    """Analysis [192, 2*97] (re | im) and synthesis [2*97, 192], windows folded in."""
    n = torch.arange(WINDOW, dtype=torch.float64)
    f = torch.arange(N_BINS, dtype=torch.float64)
    angle = 2 * math.pi * torch.outer(n, f) / WINDOW  # [192, 97]
    w = hamming(torch.float64)[:, None]
    analysis = torch.cat([w * torch.cos(angle), -w * torch.sin(angle)], dim=1)
    weight = torch.full((N_BINS,), 2.0, dtype=torch.float64)
    weight[0] = weight[-1] = 1.0
    synthesis = (
        torch.cat([(weight * torch.cos(angle) * w).T, (-weight * torch.sin(angle) * w).T], dim=0)
        / WINDOW
    )
    return analysis.float(), synthesis.float()


def _attention_step(
    attn: FrameAttention,
    q_in: torch.Tensor,
    kv_in: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    valid: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """FrameAttention.step with full-size caches; `valid` marks the frames that exist."""
    q = attn._rows(attn.query(q_in))
    k = torch.cat([keys, attn._rows(attn.key(kv_in))], dim=2)
    v = torch.cat([values, attn._rows(attn.value(kv_in))], dim=2)
    mask = torch.cat([valid, valid.new_ones(1)]) > 0
    scores = (q @ k.transpose(-1, -2)) * attn.scale
    scores = scores.masked_fill(~mask, float("-inf"))
    y = attn._finish(torch.softmax(scores, dim=-1) @ v)
    return y, k[:, :, 1:], v[:, :, 1:], torch.cat([valid[1:], valid.new_ones(1)])


class FixedStateStep(nn.Module):
    """(chunk [B, M, 128], hint [B, C_h, 97], *state) -> (out [B, S, M, 128], *state).

    For a small or large model the hint input is ignored (pass zeros [B, 1, 97]);
    for a boosted one a missing hint is zeros, as at run time.
    """

    def __init__(self, model: GridNet | BoostedModel):
        super().__init__()
        if isinstance(model, BoostedModel) and model.boost.any_delay:
            # Its hints come in a variable number per chunk, each with an age:
            # no fixed-signature step to export.
            raise ValueError(
                "an any-delay boosted model has no fixed-state ONNX/TorchScript step "
                "(it takes 0..8 hints per chunk, each with its age); export a fixed-delay model"
            )
        self.model = model
        self.boosted = isinstance(model, BoostedModel)
        self.gridnet: GridNet = model.small if isinstance(model, BoostedModel) else model
        analysis, synthesis = _dft_matrices()
        self.register_buffer("analysis", analysis, persistent=False)
        self.register_buffer("synthesis", synthesis, persistent=False)
        self.register_buffer("inv_envelope", inverse_envelope(), persistent=False)

    @property
    def hint_channels(self) -> int:
        return self.model.boost.hint_channels if isinstance(self.model, BoostedModel) else 1

    def initial_state(self, batch: int = 1) -> list[torch.Tensor]:
        net = self.gridnet.net
        d, h = net.dim, net.hidden
        state = [
            torch.zeros(batch, net.channels, LOOKAHEAD),
            torch.zeros(batch, 2 * net.channels, 2, N_BINS),
        ]
        merges = self.model.merges if isinstance(self.model, BoostedModel) else []
        for i, block in enumerate(self.gridnet.blocks):  # in the order forward() uses them
            state += [torch.zeros(1, batch * N_BINS, h), torch.zeros(1, batch * N_BINS, h)]
            if block.attention is not None:
                state += self._cache(block.attention, batch)
            if i < len(merges):
                if merges[i].delay:
                    state.append(torch.zeros(batch, d, merges[i].delay, N_BINS))
                state += self._cache(merges[i].attention, batch)
        state += [
            torch.zeros(batch, d, 2, N_BINS),
            torch.zeros(batch, net.sources * net.channels, LOOKAHEAD),
        ]
        return state

    @staticmethod
    def _cache(attn: FrameAttention, batch: int) -> list[torch.Tensor]:
        w = attn.frames - 1
        dv = attn.value.per_head * N_BINS
        return [
            torch.zeros(batch, attn.heads, w, attn.e * N_BINS),
            torch.zeros(batch, attn.heads, w, dv),
            torch.zeros(w),
        ]

    def forward(self, chunk: torch.Tensor, hint: torch.Tensor, *state: torch.Tensor):
        net = self.gridnet.net
        b, m, s = chunk.shape[0], net.channels, net.sources
        state_in = list(state)
        state_out: list[torch.Tensor] = []

        def take(n: int = 1) -> list[torch.Tensor]:
            taken = state_in[:n]
            del state_in[:n]
            return taken

        window = torch.cat([take()[0], chunk], dim=-1)  # [B, M, 192]
        state_out.append(window[..., CHUNK:])
        bins = window @ self.analysis  # [B, M, 2F]: re | im
        features = bins.view(b, m, 2, N_BINS).reshape(b, 2 * m, 1, N_BINS)
        z, history = self.gridnet.encoder.step(features, take()[0])
        state_out.append(history)
        z = self.gridnet.encoder_norm(z)

        hint_map = hint[:, :, None, :]
        merges = self.model.merges if isinstance(self.model, BoostedModel) else []
        for i, block in enumerate(self.gridnet.blocks):
            z = block._intra(z)
            h, c = take(2)
            z, (h, c) = block._inter(z, (h, c))
            state_out += [h, c]
            if block.attention is not None:
                update, *cache = _attention_step(block.attention, z, z, *take(3))
                z = z + update
                state_out += cache
            if i < len(merges):
                merge = merges[i]
                if merge.delay:
                    past_frames = torch.cat([take()[0], z], dim=2)
                    past = past_frames[:, :, :1]
                    state_out.append(past_frames[:, :, 1:])
                else:
                    past = z
                aligned = merge._film(past, hint_map)
                update, *cache = _attention_step(merge.attention, z, aligned, *take(3))
                z = z + update
                state_out += cache

        maps, history = self.gridnet.decoder.step(z, take()[0])
        state_out.append(history)
        # Channel 2p is the real part and 2p+1 the imaginary part of pair p = s*M + m.
        pairs = maps[:, :, 0, :].reshape(b, s * m, 2, N_BINS).reshape(b, s * m, 2 * N_BINS)
        frame = pairs @ self.synthesis  # [B, SM, 192]
        tail = take()[0]
        out = (frame[..., :CHUNK] + F.pad(tail, (0, CHUNK - LOOKAHEAD))) * self.inv_envelope
        state_out.append(frame[..., CHUNK:])
        return (out.reshape(b, s, m, CHUNK), *state_out)
