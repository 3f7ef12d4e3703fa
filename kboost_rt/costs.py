"""Parameter shapes and compute cost of a model, from its config alone.

Pure Python (no torch): the model-file loader validates weights against
`parameter_shapes`, and `kboost-rt models` / `kboost-rt info` print
`macs_per_chunk`. The torch reference models are tested to have exactly these
parameters.

MACs count multiply-accumulates of one 8 ms streaming step: convolutions,
1x1 maps, LSTMs (4*H*(in+H) per step and direction) and attention products.
Normalisation, activations and the STFT are not counted.
"""

from __future__ import annotations

from .config import BoostConfig, ModelConfig, NetConfig
from .signal_path import N_BINS

Shape = tuple[int, ...]
F = N_BINS


def _lstm(prefix: str, d_in: int, hidden: int, bidirectional: bool) -> dict[str, Shape]:
    shapes: dict[str, Shape] = {}
    for suffix in ("", "_reverse") if bidirectional else ("",):
        shapes[f"{prefix}.weight_ih_l0{suffix}"] = (4 * hidden, d_in)
        shapes[f"{prefix}.weight_hh_l0{suffix}"] = (4 * hidden, hidden)
        shapes[f"{prefix}.bias_ih_l0{suffix}"] = (4 * hidden,)
        shapes[f"{prefix}.bias_hh_l0{suffix}"] = (4 * hidden,)
    return shapes


def _projection(prefix: str, d_in: int, heads: int, per_head: int) -> dict[str, Shape]:
    """1x1 map d_in -> heads*per_head, PReLU per head, LayerNorm over (per_head, F)."""
    return {
        f"{prefix}.weight": (heads * per_head, d_in),
        f"{prefix}.bias": (heads * per_head,),
        f"{prefix}.prelu": (heads,),
        f"{prefix}.norm_weight": (heads, per_head, F),
        f"{prefix}.norm_bias": (heads, per_head, F),
    }


def _attention(prefix: str, dim: int, heads: int, e: int) -> dict[str, Shape]:
    return {
        **_projection(f"{prefix}.query", dim, heads, e),
        **_projection(f"{prefix}.key", dim, heads, e),
        **_projection(f"{prefix}.value", dim, heads, dim // heads),
        **_projection(f"{prefix}.out", dim, 1, dim),
    }


def net_shapes(net: NetConfig, prefix: str = "") -> dict[str, Shape]:
    d, h = net.dim, net.hidden
    shapes: dict[str, Shape] = {
        f"{prefix}encoder.weight": (d, 2 * net.channels, 3, 3),
        f"{prefix}encoder.bias": (d,),
        f"{prefix}encoder_norm.weight": (d,),
        f"{prefix}encoder_norm.bias": (d,),
    }
    for b in range(net.blocks):
        p = f"{prefix}blocks.{b}"
        shapes[f"{p}.intra_norm.weight"] = (d,)
        shapes[f"{p}.intra_norm.bias"] = (d,)
        shapes.update(_lstm(f"{p}.intra_lstm", d, h, bidirectional=True))
        shapes[f"{p}.intra_proj.weight"] = (d, 2 * h)
        shapes[f"{p}.intra_proj.bias"] = (d,)
        shapes[f"{p}.inter_norm.weight"] = (d,)
        shapes[f"{p}.inter_norm.bias"] = (d,)
        shapes.update(_lstm(f"{p}.inter_lstm", d, h, bidirectional=False))
        shapes[f"{p}.inter_proj.weight"] = (d, h)
        shapes[f"{p}.inter_proj.bias"] = (d,)
        if net.attention_heads:
            shapes.update(_attention(f"{p}.attention", d, net.attention_heads, net.attention_e))
    # Transposed-convolution layout: [in, out, time, freq].
    shapes[f"{prefix}decoder.weight"] = (d, net.spec_channels, 3, 3)
    shapes[f"{prefix}decoder.bias"] = (net.spec_channels,)
    return shapes


def merge_shapes(net: NetConfig, boost: BoostConfig, index: int) -> dict[str, Shape]:
    p = f"merges.{index}"
    return {
        f"{p}.scale.weight": (net.dim, boost.hint_channels),
        f"{p}.scale.bias": (net.dim,),
        f"{p}.shift.weight": (net.dim, boost.hint_channels),
        f"{p}.shift.bias": (net.dim,),
        **_attention(f"{p}.attention", net.dim, boost.heads, boost.e),
        **({f"{p}.age_bias": (boost.heads, boost.frames)} if boost.any_delay else {}),
    }


def hint_generator_shapes(net: NetConfig, boost: BoostConfig, prefix: str = "") -> dict[str, Shape]:
    return {
        f"{prefix}weight": (boost.hint_channels, net.spec_channels, 3, 3),
        f"{prefix}bias": (boost.hint_channels,),
    }


def parameter_shapes(cfg: ModelConfig) -> dict[str, Shape]:
    """Every tensor a model file of this config must hold, in a fixed order."""
    if cfg.role != "boosted":
        return net_shapes(cfg.net)
    assert cfg.boost is not None
    shapes = net_shapes(cfg.net, prefix="small.")
    for i in range(cfg.net.blocks - 1):
        shapes.update(merge_shapes(cfg.net, cfg.boost, i))
    shapes.update(hint_generator_shapes(cfg.net, cfg.boost, prefix="hint_generator."))
    return shapes


def _count(shapes: dict[str, Shape]) -> int:
    total = 0
    for shape in shapes.values():
        n = 1
        for s in shape:
            n *= s
        total += n
    return total


def _attention_macs(dim: int, heads: int, e: int, frames: int) -> int:
    """One query frame against `frames` key/value frames; one new K/V frame per step."""
    qk = 2 * dim * heads * e * F
    v_out = 2 * dim * dim * F
    scores = heads * e * F * frames
    weighted = dim * F * frames
    return qk + v_out + scores + weighted


def net_macs(net: NetConfig) -> dict[str, int]:
    d, h = net.dim, net.hidden
    lstm_step = 4 * h * (d + h)
    block = 2 * lstm_step * F + 2 * h * d * F + lstm_step * F + h * d * F
    attention = 0
    if net.attention_heads:
        attention = _attention_macs(d, net.attention_heads, net.attention_e, net.attention_frames)
    return {
        "encoder": 2 * net.channels * d * 9 * F,
        "blocks": net.blocks * block,
        "attention": net.blocks * attention,
        "decoder": d * net.spec_channels * 9 * F,
    }


def macs_per_chunk(cfg: ModelConfig) -> dict[str, int]:
    """MACs of one streaming step by part; 'device' is what runs where the model runs.

    For a boosted model the hint generator runs on the remote (large-model)
    side, so it is listed apart and not included in 'device'.
    """
    parts = net_macs(cfg.net)
    if cfg.role == "boosted":
        assert cfg.boost is not None
        b = cfg.boost
        film = 2 * b.hint_channels * cfg.net.dim * F
        merge = film + _attention_macs(cfg.net.dim, b.heads, b.e, b.frames)
        if b.any_delay:  # one hint a chunk: its FiLM and its frame's key and value again
            merge += film + cfg.net.dim * (b.heads * b.e + cfg.net.dim) * F
        parts["merges"] = (cfg.net.blocks - 1) * merge
    parts["device"] = sum(parts.values())
    if cfg.role == "boosted":
        assert cfg.boost is not None
        parts["hint_generator"] = cfg.boost.hint_channels * cfg.net.spec_channels * 9 * F
    return parts


def parameter_counts(cfg: ModelConfig) -> dict[str, int]:
    """Parameters on the device and (boosted) in the remote hint generator."""
    shapes = parameter_shapes(cfg)
    remote = {k: v for k, v in shapes.items() if k.startswith("hint_generator.")}
    device = {k: v for k, v in shapes.items() if k not in remote}
    counts = {"device": _count(device)}
    if remote:
        counts["hint_generator"] = _count(remote)
    return counts


# What one stream's native engine may hold; a config asking for more is
# refused at load (a 35 MB model folder could otherwise demand gigabytes).
MAX_ENGINE_BYTES = 256 * 2**20


def engine_bytes(cfg: ModelConfig) -> int:
    """About the memory one stream's native engine holds, float32: the weights
    (twice: the folder's and the engine's packed copy) plus the state that
    grows with the config, the attention key/value rings and the merges'
    aligned-frame rings."""
    net = cfg.net
    floats = 2 * sum(parameter_counts(cfg).values())
    if net.attention_heads:
        ring = net.attention_frames * F * (net.attention_heads * net.attention_e + net.dim)
        floats += net.blocks * ring
    if cfg.boost is not None:
        b = cfg.boost
        ring = b.frames * F * (b.heads * b.e + net.dim) + max(b.delay, b.max_age, 1) * F * net.dim
        floats += (net.blocks - 1) * ring
    return 4 * floats
