"""The knowledge-boosting models: GridNet (small or large), the hint generator,
the boosted small model and an in-process pipeline of both.

Shapes: waveforms are [B, M, samples] in and [B, S, M, samples] out; spectra
and hints are [B, channels, frames, 97]. Feature channel 2m is the real part
of microphone m and 2m+1 its imaginary part; output channel 2(sM + m) + {0,1}
is the real/imag part of source s at microphone m.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..config import BoostConfig, NetConfig
from ..signal_path import CHUNK, LOOKAHEAD, N_BINS
from .layers import Cache, CausalConv, ChannelNorm, FrameAttention
from .stft import istft, istft_step, stft, stft_step

LstmState = tuple[torch.Tensor, torch.Tensor]


@dataclass
class BlockState:
    lstm: LstmState | None = None  # across-time LSTM (h, c), one per frequency bin
    attention: Cache | None = None  # last frames-1 keys and values


@dataclass
class NetState:
    stft_history: torch.Tensor  # [B, M, 64] input samples before the chunk
    encoder_history: torch.Tensor  # [B, 2M, 2, F]
    blocks: list[BlockState]
    decoder_history: torch.Tensor  # [B, D, 2, F]
    istft_tail: torch.Tensor  # [B, S*M, 64] overlap-add tail


class GridNetBlock(nn.Module):
    """Across-frequency BiLSTM, across-time LSTM, optional local self-attention."""

    def __init__(self, net: NetConfig):
        super().__init__()
        d, h = net.dim, net.hidden
        self.intra_norm = ChannelNorm(d, eps=1e-5)
        self.intra_lstm = nn.LSTM(d, h, batch_first=True, bidirectional=True)
        self.intra_proj = nn.Linear(2 * h, d)
        self.inter_norm = ChannelNorm(d, eps=1e-5)
        self.inter_lstm = nn.LSTM(d, h, batch_first=True)
        self.inter_proj = nn.Linear(h, d)
        self.attention = (
            FrameAttention(d, net.attention_heads, net.attention_e, net.attention_frames)
            if net.attention_heads
            else None
        )

    def _intra(self, x: torch.Tensor) -> torch.Tensor:
        b, d, t, f = x.shape
        y = self.intra_norm(x).permute(0, 2, 3, 1).reshape(b * t, f, d)
        y = self.intra_proj(self.intra_lstm(y)[0])
        return x + y.view(b, t, f, d).permute(0, 3, 1, 2)

    def _inter(self, x: torch.Tensor, state: LstmState | None) -> tuple[torch.Tensor, LstmState]:
        b, d, t, f = x.shape
        y = self.inter_norm(x).permute(0, 3, 2, 1).reshape(b * f, t, d)
        y, state = self.inter_lstm(y, state)
        y = self.inter_proj(y)
        return x + y.view(b, f, t, d).permute(0, 3, 2, 1), state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self._inter(self._intra(x), None)
        if self.attention is not None:
            x = x + self.attention(x, x)
        return x

    def step(self, x: torch.Tensor, state: BlockState) -> tuple[torch.Tensor, BlockState]:
        x, lstm = self._inter(self._intra(x), state.lstm)
        cache = None
        if self.attention is not None:
            assert state.attention is not None
            update, cache = self.attention.step(x, x, state.attention)
            x = x + update
        return x, BlockState(lstm, cache)

    def initial_state(self, batch: int, dtype: torch.dtype) -> BlockState:
        cache = None if self.attention is None else self.attention.empty_cache(batch, dtype)
        return BlockState(None, cache)


def _features(spec: torch.Tensor) -> torch.Tensor:
    """complex [B, M, T, F] -> real/imag maps [B, 2M, T, F]."""
    b, m, t, f = spec.shape
    return torch.view_as_real(spec).permute(0, 1, 4, 2, 3).reshape(b, 2 * m, t, f)


def _complex(maps: torch.Tensor, sources: int, channels: int) -> torch.Tensor:
    """real/imag maps [B, 2SM, T, F] -> complex [B, S, M, T, F]."""
    b, _, t, f = maps.shape
    parts = maps.view(b, sources, channels, 2, t, f).permute(0, 1, 2, 4, 5, 3)
    return torch.view_as_complex(parts.contiguous())


class GridNet(nn.Module):
    """The small model (no attention) or the large model (with self-attention)."""

    def __init__(self, net: NetConfig):
        super().__init__()
        net.validate()
        self.net = net
        self.encoder = CausalConv(2 * net.channels, net.dim)
        self.encoder_norm = ChannelNorm(net.dim, eps=1e-5)
        self.blocks = nn.ModuleList(GridNetBlock(net) for _ in range(net.blocks))
        self.decoder = CausalConv(net.dim, net.spec_channels, transposed=True)

    # The pieces, shared with BoostedModel.
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """waveform [B, M, samples] -> features [B, D, frames, F]."""
        self._check_input(x)
        return self.encoder_norm(self.encoder(_features(stft(x))))

    def decode(self, z: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """features -> (waveform [B, S, M, length], output maps [B, 2SM, frames, F])."""
        maps = self.decoder(z)
        return istft(_complex(maps, self.net.sources, self.net.channels), length), maps

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Offline: waveform [B, M, samples] -> (waveform [B, S, M, samples], maps)."""
        z = self.encode(x)
        for block in self.blocks:
            z = block(z)
        return self.decode(z, x.shape[-1])

    def encode_step(self, chunk: torch.Tensor, state: NetState) -> tuple[torch.Tensor, NetState]:
        self._check_input(chunk, streaming=True)
        bins, stft_history = stft_step(chunk, state.stft_history)
        z, encoder_history = self.encoder.step(_features(bins[:, :, None]), state.encoder_history)
        new = NetState(
            stft_history, encoder_history, state.blocks, state.decoder_history, state.istft_tail
        )
        return self.encoder_norm(z), new

    def decode_step(
        self, z: torch.Tensor, state: NetState
    ) -> tuple[torch.Tensor, torch.Tensor, NetState]:
        maps, decoder_history = self.decoder.step(z, state.decoder_history)
        bins = _complex(maps, self.net.sources, self.net.channels)[:, :, :, 0]
        b = bins.shape[0]
        out, tail = istft_step(bins.reshape(b, -1, N_BINS), state.istft_tail)
        out = out.view(b, self.net.sources, self.net.channels, CHUNK)
        new = NetState(
            state.stft_history, state.encoder_history, state.blocks, decoder_history, tail
        )
        return out, maps, new

    def step(
        self, chunk: torch.Tensor, state: NetState
    ) -> tuple[torch.Tensor, torch.Tensor, NetState]:
        """Streaming: chunk [B, M, 128] -> (output [B, S, M, 128], maps [B, 2SM, 1, F], state).

        The output lags the input by LOOKAHEAD samples.
        """
        z, state = self.encode_step(chunk, state)
        blocks = []
        for block, block_state in zip(self.blocks, state.blocks, strict=True):
            z, block_state = block.step(z, block_state)
            blocks.append(block_state)
        state.blocks = blocks
        return self.decode_step(z, state)

    def initial_state(self, batch: int = 1) -> NetState:
        p = self.encoder.weight
        dtype, device = p.dtype, p.device
        net = self.net
        return NetState(
            stft_history=torch.zeros(batch, net.channels, LOOKAHEAD, dtype=dtype, device=device),
            encoder_history=self.encoder.initial_history(batch, dtype),
            blocks=[blk.initial_state(batch, dtype) for blk in self.blocks],
            decoder_history=self.decoder.initial_history(batch, dtype),
            istft_tail=torch.zeros(
                batch, net.sources * net.channels, LOOKAHEAD, dtype=dtype, device=device
            ),
        )

    def _check_input(self, x: torch.Tensor, streaming: bool = False) -> None:
        if x.dim() != 3 or x.shape[1] != self.net.channels:
            raise ValueError(
                f"expected input [batch, {self.net.channels}, samples], got {tuple(x.shape)}"
            )
        if streaming and x.shape[-1] != CHUNK:
            raise ValueError(f"a streaming step takes {CHUNK} samples, got {x.shape[-1]}")


class HintGenerator(CausalConv):
    """Remote side: the large model's output maps [B, 2SM, T, F] -> hints [B, C_h, T, F]."""

    def __init__(self, net: NetConfig, boost: BoostConfig):
        super().__init__(net.spec_channels, boost.hint_channels)


@dataclass
class MergeState:
    features: torch.Tensor  # [B, D, d, F]: the block's own output of the last d frames
    attention: Cache


class Merge(nn.Module):
    """FiLM with alignment, then cross-attention onto the small model's features."""

    def __init__(self, net: NetConfig, boost: BoostConfig):
        super().__init__()
        self.delay = boost.delay
        self.scale = nn.Linear(boost.hint_channels, net.dim)
        self.shift = nn.Linear(boost.hint_channels, net.dim)
        nn.init.ones_(self.scale.bias)
        self.attention = FrameAttention(net.dim, boost.heads, boost.e, boost.frames)

    def _film(self, z: torch.Tensor, hint: torch.Tensor) -> torch.Tensor:
        h = hint.permute(0, 2, 3, 1)  # channels last for the 1x1 maps
        scale = self.scale(h).permute(0, 3, 1, 2)
        return z * scale + self.shift(h).permute(0, 3, 1, 2)

    def forward(self, z: torch.Tensor, hints: torch.Tensor) -> torch.Tensor:
        """z [B, D, T, F]; hints [B, C_h, T, F] already delayed: hints[t] describes frame t-d."""
        past = F.pad(z, (0, 0, self.delay, 0))[:, :, : z.shape[2]]
        return z + self.attention(z, self._film(past, hints))

    def step(
        self, z: torch.Tensor, hint: torch.Tensor, state: MergeState
    ) -> tuple[torch.Tensor, MergeState]:
        history = torch.cat([state.features, z], dim=2)  # frames t-d .. t
        aligned = self._film(history[:, :, :1], hint)
        update, cache = self.attention.step(z, aligned, state.attention)
        return z + update, MergeState(history[:, :, 1:], cache)

    def initial_state(self, batch: int, dim: int, dtype: torch.dtype) -> MergeState:
        device = self.scale.weight.device
        features = torch.zeros(batch, dim, self.delay, N_BINS, dtype=dtype, device=device)
        return MergeState(features, self.attention.empty_cache(batch, dtype))


@dataclass
class AgeMergeState:
    features: torch.Tensor  # [B, D, max_age, F]: the block's own output of frames t-max_age..t-1
    attention: Cache  # keys and values of the last frames-1 frames, one per frame


def hints_used(ages: torch.Tensor, max_age: int) -> torch.Tensor:
    """The any-delay rule. ages [B, T] int: hint j arrives ages[b, j] chunks after
    frame j (outside 1..max_age: never used). -> used [B, T, T] bool: query frame t
    sees key frame j with its hint (j's hint arrived by chunk t) or without it."""
    t = ages.shape[1]
    frame = torch.arange(t, device=ages.device)
    valid = (ages >= 1) & (ages <= max_age)
    arrival = frame[None, :] + ages  # [B, T]: the chunk hint j arrives at
    return valid[:, None, :] & (arrival[:, None, :] <= frame[None, :, None])


class AgeMerge(nn.Module):
    """The any-delay merge. Every frame of the block's output is a key/value frame
    of the cross-attention at its own position: FiLM'd by that frame's hint once
    the hint has arrived, and by no hint (the FiLM biases alone) until then. A
    hint therefore counts whatever its age, and one that arrives after a fresher
    one still fills its own frame. The queries are told each key frame's age by
    a learned score bias per head and lag."""

    def __init__(self, net: NetConfig, boost: BoostConfig):
        super().__init__()
        self.max_age = boost.max_age
        self.scale = nn.Linear(boost.hint_channels, net.dim)
        self.shift = nn.Linear(boost.hint_channels, net.dim)
        nn.init.ones_(self.scale.bias)
        self.attention = FrameAttention(net.dim, boost.heads, boost.e, boost.frames)
        self.age_bias = nn.Parameter(torch.zeros(boost.heads, boost.frames))

    def _film(self, z: torch.Tensor, hint: torch.Tensor | None) -> torch.Tensor:
        if hint is None:
            return z * self.scale.bias[:, None, None] + self.shift.bias[:, None, None]
        h = hint.permute(0, 2, 3, 1)
        return z * self.scale(h).permute(0, 3, 1, 2) + self.shift(h).permute(0, 3, 1, 2)

    def _keys(self, aligned: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        att = self.attention
        return att._rows(att.key(aligned)), att._rows(att.value(aligned))

    def forward(self, z: torch.Tensor, hints: torch.Tensor, used: torch.Tensor) -> torch.Tensor:
        """z [B, D, T, F]; hints [B, C_h, T, F], hints[:, :, j] made from frame j;
        used [B, T, T] from `hints_used`."""
        att = self.attention
        q = att._rows(att.query(z))
        k_hint, v_hint = self._keys(self._film(z, hints))
        k_none, v_none = self._keys(self._film(z, None))
        t = z.shape[2]
        lag = torch.arange(t)[:, None] - torch.arange(t)[None, :]
        allowed = ((lag >= 0) & (lag < att.frames)).to(z.device)
        sel = used[:, None]  # [B, 1, T, T]
        scores = torch.where(sel, q @ k_hint.transpose(-1, -2), q @ k_none.transpose(-1, -2))
        bias = self.age_bias[:, lag.clamp(0, att.frames - 1).to(z.device)]
        scores = (scores * att.scale + bias).masked_fill(~allowed, float("-inf"))
        p = torch.softmax(scores, dim=-1)
        weighted = (p * sel) @ v_hint + (p * ~sel) @ v_none
        return z + att._finish(weighted)

    def step(
        self, z: torch.Tensor, hints: list[tuple[torch.Tensor, int]], state: AgeMergeState
    ) -> tuple[torch.Tensor, AgeMergeState]:
        """z [B, D, 1, F]; hints: the (hint [B, C_h, F], age) pairs that arrived at this chunk."""
        att = self.attention
        keys, values = state.attention
        n = keys.shape[2]
        if hints:
            keys, values = keys.clone(), values.clone()
        for hint, age in hints:
            if not 1 <= age <= min(self.max_age, n):  # too old, or before the stream began
                continue
            past = state.features[:, :, self.max_age - age : self.max_age - age + 1]
            b, c = hint.shape[0], hint.shape[1]
            k, v = self._keys(self._film(past, hint.reshape(b, c, 1, N_BINS)))
            keys[:, :, n - age], values[:, :, n - age] = k[:, :, 0], v[:, :, 0]
        k_new, v_new = self._keys(self._film(z, None))
        keys, values = torch.cat([keys, k_new], dim=2), torch.cat([values, v_new], dim=2)
        q = att._rows(att.query(z))
        lag = torch.arange(keys.shape[2] - 1, -1, -1, device=z.device)
        scores = (q @ keys.transpose(-1, -2)) * att.scale + self.age_bias[:, lag][:, None]
        update = att._finish(torch.softmax(scores, dim=-1) @ values)
        start = max(0, keys.shape[2] - (att.frames - 1))
        features = torch.cat([state.features, z], dim=2)[:, :, 1:]
        return z + update, AgeMergeState(features, (keys[:, :, start:], values[:, :, start:]))

    def initial_state(self, batch: int, dim: int, dtype: torch.dtype) -> AgeMergeState:
        device = self.scale.weight.device
        features = torch.zeros(batch, dim, self.max_age, N_BINS, dtype=dtype, device=device)
        return AgeMergeState(features, self.attention.empty_cache(batch, dtype))


@dataclass
class BoostedState:
    net: NetState
    merges: list[MergeState | AgeMergeState] = field(default_factory=list)


class BoostedModel(nn.Module):
    """The small model with merge layers after its first B-1 blocks.

    Offline, `hints[:, :, j]` is the hint made from frame j and the model
    applies the delay itself. Streaming, `step` takes the hint that *arrives*
    at this chunk (made from chunk t-d) or None when none has arrived.

    An any-delay model (`boost.max_age` > 0) is given, offline, each hint's
    age on arrival (`ages`), and streaming, every hint that arrived at this
    chunk with its age (`hints`).
    """

    def __init__(self, net: NetConfig, boost: BoostConfig):
        super().__init__()
        boost.validate(net)
        self.boost = boost
        self.small = GridNet(net)
        kind = AgeMerge if boost.any_delay else Merge
        self.merges = nn.ModuleList(kind(net, boost) for _ in range(net.blocks - 1))
        self.hint_generator = HintGenerator(net, boost)

    @property
    def net(self) -> NetConfig:
        return self.small.net

    def make_hints(self, large_maps: torch.Tensor) -> torch.Tensor:
        """Remote side, offline: large model output maps -> hints, one per frame."""
        return self.hint_generator(large_maps)

    def forward(
        self,
        x: torch.Tensor,
        hints: torch.Tensor,
        arrived: torch.Tensor | None = None,
        ages: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, M, samples]; hints [B, C_h, frames, F]; arrived [B, frames] bool
        (False: hint j was lost and the model sees zeros in its place); ages
        [B, frames] int, any-delay models only: hint j arrives ages[b, j] chunks
        after frame j (outside 1..max_age: it is lost)."""
        z = self.small.encode(x)
        frames = z.shape[2]
        expected = (x.shape[0], self.boost.hint_channels, frames, N_BINS)
        if tuple(hints.shape) != expected:
            raise ValueError(f"hints must have shape {expected}, got {tuple(hints.shape)}")
        if arrived is not None:
            hints = hints * arrived[:, None, :, None].to(hints.dtype)
        if self.boost.any_delay:
            return self._forward_any_delay(x, z, hints, arrived, ages)
        if ages is not None:
            raise ValueError("ages are for any-delay models; this one has a fixed delay")
        delayed = F.pad(hints, (0, 0, self.boost.delay, 0))[:, :, :frames]
        for i, block in enumerate(self.small.blocks):
            z = block(z)
            if i < len(self.merges):
                z = self.merges[i](z, delayed)
        return self.small.decode(z, x.shape[-1])

    def _forward_any_delay(self, x, z, hints, arrived, ages):
        if ages is None:
            raise ValueError("an any-delay model needs the hints' ages")
        expected = (hints.shape[0], hints.shape[2])
        if tuple(ages.shape) != expected:
            raise ValueError(f"ages must have shape {expected}, got {tuple(ages.shape)}")
        if arrived is not None:
            ages = torch.where(arrived, ages, torch.zeros_like(ages))
        used = hints_used(ages, self.boost.max_age)
        for i, block in enumerate(self.small.blocks):
            z = block(z)
            if i < len(self.merges):
                z = self.merges[i](z, hints, used)
        return self.small.decode(z, x.shape[-1])

    def step(
        self,
        chunk: torch.Tensor,
        state: BoostedState,
        hint: torch.Tensor | None = None,
        hints: list[tuple[torch.Tensor, int]] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, BoostedState]:
        """chunk [B, M, 128]; hint [B, C_h, F] made from chunk t-d, or None; for an
        any-delay model instead `hints`, the (hint, age) pairs that arrived now."""
        z, net_state = self.small.encode_step(chunk, state.net)
        if self.boost.any_delay:
            if hint is not None:
                raise ValueError("an any-delay model takes `hints`: (hint, age) pairs")
            merge_input = hints or []
        elif hints is not None:
            raise ValueError("`hints` with ages are for any-delay models")
        elif hint is None:
            merge_input = z.new_zeros(z.shape[0], self.boost.hint_channels, 1, N_BINS)
        else:
            merge_input = hint.reshape(z.shape[0], self.boost.hint_channels, 1, N_BINS)
        blocks, merges = [], []
        for i, block in enumerate(self.small.blocks):
            z, block_state = block.step(z, net_state.blocks[i])
            blocks.append(block_state)
            if i < len(self.merges):
                z, merge_state = self.merges[i].step(z, merge_input, state.merges[i])
                merges.append(merge_state)
        net_state.blocks = blocks
        out, maps, net_state = self.small.decode_step(z, net_state)
        return out, maps, BoostedState(net_state, merges)

    def initial_state(self, batch: int = 1) -> BoostedState:
        dtype = self.small.encoder.weight.dtype
        merges = [m.initial_state(batch, self.net.dim, dtype) for m in self.merges]
        return BoostedState(self.small.initial_state(batch), merges)


@dataclass
class PipelineState:
    large: NetState
    hint_history: torch.Tensor
    boosted: BoostedState
    in_flight: tuple[torch.Tensor | None, ...]  # the d-chunk hint FIFO; None = lost


class BoostedPipeline(nn.Module):
    """Large model, hint generator, a d-chunk hint FIFO and the boosted small model
    in one process: the paper's simulation of the remote link."""

    def __init__(self, large: GridNet, boosted: BoostedModel):
        super().__init__()
        if (large.net.channels, large.net.sources) != (boosted.net.channels, boosted.net.sources):
            raise ValueError("large and boosted models differ in channels or sources")
        if boosted.boost.any_delay:
            raise ValueError("the in-process pipeline simulates a fixed delay, not any-delay")
        self.large = large
        self.boosted = boosted

    def forward(
        self, x: torch.Tensor, arrived: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (boosted small output, large output), both [B, S, M, samples]."""
        large_out, large_maps = self.large(x)
        hints = self.boosted.make_hints(large_maps)
        small_out, _ = self.boosted(x, hints, arrived)
        return small_out, large_out

    def step(
        self, chunk: torch.Tensor, state: PipelineState, arrived: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, PipelineState]:
        """One chunk through both; `arrived=False` loses this chunk's hint on the way."""
        large_out, maps, large_state = self.large.step(chunk, state.large)
        hint, hint_history = self.boosted.hint_generator.step(maps, state.hint_history)
        in_flight = (*state.in_flight, hint[:, :, 0] if arrived else None)
        delivered = None
        if len(in_flight) > self.boosted.boost.delay:  # hint t-d arrives now
            delivered, in_flight = in_flight[0], in_flight[1:]
        small_out, _, boosted_state = self.boosted.step(chunk, state.boosted, delivered)
        return (
            small_out,
            large_out,
            PipelineState(large_state, hint_history, boosted_state, in_flight),
        )

    def initial_state(self, batch: int = 1) -> PipelineState:
        dtype = self.large.encoder.weight.dtype
        return PipelineState(
            large=self.large.initial_state(batch),
            hint_history=self.boosted.hint_generator.initial_history(batch, dtype),
            boosted=self.boosted.initial_state(batch),
            in_flight=(),
        )
