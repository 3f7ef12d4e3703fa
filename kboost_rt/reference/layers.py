"""Layers of the reference models. Feature maps are [batch, channels, time, freq].

Each layer with streaming state has `forward` (whole sequence, starting from
zero state) and `step` (one frame, state in and out). Layers never mutate a
state they are given; they return a new one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..signal_path import N_BINS

Cache = tuple[torch.Tensor, torch.Tensor]  # keys, values of past frames
EPS = 1e-5


def _uniform_(t: torch.Tensor, fan_in: int) -> None:
    bound = 1.0 / math.sqrt(fan_in)
    nn.init.uniform_(t, -bound, bound)


class CausalConv(nn.Module):
    """3x3 convolution, causal in time (2 frames of history), frequency padded by 1.

    With `transposed`, the weight has nn.ConvTranspose2d's [in, out, 3, 3]
    layout and the layer equals a stride-1 transposed convolution whose output
    is cut to the input's frames: y[t] = sum_k W[:, :, k] * x[t - k].
    """

    def __init__(self, c_in: int, c_out: int, transposed: bool = False):
        super().__init__()
        self.transposed = transposed
        shape = (c_in, c_out, 3, 3) if transposed else (c_out, c_in, 3, 3)
        self.weight = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.empty(c_out))
        fan_in = (c_out if transposed else c_in) * 9
        _uniform_(self.weight, fan_in)
        _uniform_(self.bias, fan_in)

    def _conv_weight(self) -> torch.Tensor:
        if self.transposed:
            return self.weight.flip(2, 3).transpose(0, 1)
        return self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (1, 1, 2, 0)), self._conv_weight(), self.bias)

    def step(self, x: torch.Tensor, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, C, 1, F], history [B, C, 2, F] (the previous two input frames)."""
        window = torch.cat([history, x], dim=2)
        y = F.conv2d(F.pad(window, (1, 1, 0, 0)), self._conv_weight(), self.bias)
        return y, window[:, :, 1:]

    def initial_history(self, batch: int, dtype: torch.dtype) -> torch.Tensor:
        c_in = self.weight.shape[0] if self.transposed else self.weight.shape[1]
        return torch.zeros(batch, c_in, 2, N_BINS, dtype=dtype, device=self.weight.device)


class ChannelNorm(nn.LayerNorm):
    """LayerNorm over the channels at every (time, freq) point."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Explicit permutes (not movedim): the ONNX exporter mishandles negative axes.
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Projection(nn.Module):
    """1x1 map to heads*per_head channels, PReLU per head, LayerNorm over (per_head, freq).

    Returns [B, heads, per_head, T, F].
    """

    def __init__(self, d_in: int, heads: int, per_head: int):
        super().__init__()
        self.heads, self.per_head = heads, per_head
        self.weight = nn.Parameter(torch.empty(heads * per_head, d_in))
        self.bias = nn.Parameter(torch.empty(heads * per_head))
        self.prelu = nn.Parameter(torch.full((heads,), 0.25))
        self.norm_weight = nn.Parameter(torch.ones(heads, per_head, N_BINS))
        self.norm_bias = nn.Parameter(torch.zeros(heads, per_head, N_BINS))
        _uniform_(self.weight, d_in)
        _uniform_(self.bias, d_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t, f = x.shape
        y = torch.einsum("oi,bitf->botf", self.weight, x) + self.bias[:, None, None]
        # Fused PReLU (one slope per head: the channel axis) and LayerNorm over
        # (per_head, F) of each frame: a third of a large training step was the
        # elementwise passes these replace.
        y = F.prelu(y.reshape(b, self.heads, -1), self.prelu)
        y = y.view(b, self.heads, self.per_head, t, f).transpose(2, 3)
        # constant shape: the ONNX exporter cannot take one computed from x
        y = F.layer_norm(y, (self.per_head, N_BINS), eps=EPS).transpose(2, 3)
        return y * self.norm_weight[:, :, None, :] + self.norm_bias[:, :, None, :]


class FrameAttention(nn.Module):
    """Causal local multi-head attention over time frames.

    Each query frame (flattened E x 97 per head) attends to the key/value
    frames t-frames+1 .. t. Self-attention when queries and keys come from
    the same map; cross-attention (the boosting merge) otherwise. Returns the
    projected update; the caller adds it residually.
    """

    def __init__(self, dim: int, heads: int, e: int, frames: int):
        super().__init__()
        self.heads, self.e, self.frames = heads, e, frames
        self.query = Projection(dim, heads, e)
        self.key = Projection(dim, heads, e)
        self.value = Projection(dim, heads, dim // heads)
        self.out = Projection(dim, 1, dim)
        self.scale = 1.0 / math.sqrt(e * N_BINS)

    @staticmethod
    def _rows(x: torch.Tensor) -> torch.Tensor:
        """[B, h, c, T, F] -> [B, h, T, c*F]."""
        b, h, c, t, f = x.shape
        return x.permute(0, 1, 3, 2, 4).reshape(b, h, t, c * f)

    def _finish(self, weighted: torch.Tensor) -> torch.Tensor:
        """[B, h, T, Dv*F] -> projected [B, D, T, F]."""
        b, h, t, _ = weighted.shape
        y = weighted.view(b, h, t, -1, N_BINS).permute(0, 1, 3, 2, 4).reshape(b, -1, t, N_BINS)
        return self.out(y).squeeze(1)

    def forward(self, q_in: torch.Tensor, kv_in: torch.Tensor) -> torch.Tensor:
        q = self._rows(self.query(q_in))
        k = self._rows(self.key(kv_in))
        v = self._rows(self.value(kv_in))
        t = q.shape[2]
        lag = torch.arange(t)[:, None] - torch.arange(t)[None, :]
        allowed = (lag >= 0) & (lag < self.frames)
        scores = (q @ k.transpose(-1, -2)) * self.scale
        scores = scores.masked_fill(~allowed.to(scores.device), float("-inf"))
        return self._finish(torch.softmax(scores, dim=-1) @ v)

    def step(
        self, q_in: torch.Tensor, kv_in: torch.Tensor, cache: Cache
    ) -> tuple[torch.Tensor, Cache]:
        """One frame of queries and keys/values; `cache` holds up to frames-1 past frames."""
        q = self._rows(self.query(q_in))
        k = torch.cat([cache[0], self._rows(self.key(kv_in))], dim=2)
        v = torch.cat([cache[1], self._rows(self.value(kv_in))], dim=2)
        scores = (q @ k.transpose(-1, -2)) * self.scale
        y = self._finish(torch.softmax(scores, dim=-1) @ v)
        start = max(0, k.shape[2] - (self.frames - 1))
        return y, (k[:, :, start:], v[:, :, start:])

    def empty_cache(self, batch: int, dtype: torch.dtype) -> Cache:
        device = self.query.weight.device
        dv = self.value.per_head * N_BINS
        return (
            torch.zeros(batch, self.heads, 0, self.e * N_BINS, dtype=dtype, device=device),
            torch.zeros(batch, self.heads, 0, dv, dtype=dtype, device=device),
        )
