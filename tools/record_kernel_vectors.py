"""Records the stored test vectors that `make test-aarch64` checks a cross-built
engine against (tests/native/kernel_check.c), computed here by the native
engine with this machine's best kernel set.

One file per model, `tests/data/kernel_vectors/{small,boosted,large,any-delay}.kbv`:
random weights (fixed seeds) of the paper's small and boosted models, of a
large model with its hint generator and of the paper-size any-delay boosted
model, and 24 chunks of input (and hints, with some missing; for the
any-delay model each at an age of 1-8 chunks) with the outputs they gave.
`tests/test_kernel_vectors.py` checks that every kernel set of this machine
still reproduces them, so the vectors cannot silently go stale. Rerun only on purpose:

    .venv/bin/python tools/record_kernel_vectors.py [NAME ...]   # default: all

Format (little-endian): "KBV1"; the 14 int32 fields of kb_config in its
order; u32 tensor count, then per tensor u32 name length, the name, u32
ndim, int64 shape[ndim], float32 data; u32 chunks; float32 input
[chunks][channels][128]; u8 has_hint[chunks] and float32 hints
[chunks][hint_channels][97] (boosted only); float32 output
[chunks][sources][channels][128]; float32 hint_out [chunks][hint_channels][97]
(large only). "KBV2" (the any-delay model): the same with kb_config's 15
fields (max_age last), and u8 hint_age[chunks] (0: no hint) in place of
has_hint.
"""

from __future__ import annotations

import dataclasses
import struct
import sys
from pathlib import Path

import numpy as np

from kboost_rt.config import PAPER_BOOSTED, PAPER_BOOSTED_ANY_DELAY, PAPER_LARGE, PAPER_SMALL
from kboost_rt.engine import NativeEngine, engine_config
from kboost_rt.model_files import random_weights
from kboost_rt.signal_path import CHUNK, N_BINS

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "kernel_vectors"
CHUNKS = 24
FIELDS = (
    "channels sources dim hidden blocks attention_heads attention_e attention_frames "
    "hint_channels delay merge_heads merge_e merge_frames"
).split()
ROLES = {"small": 0, "large": 1, "boosted": 2, "any-delay": 2}


def configs():
    boosted = dataclasses.replace(
        PAPER_BOOSTED, boost=dataclasses.replace(PAPER_BOOSTED.boost, delay=2)
    )
    large = dataclasses.replace(
        PAPER_LARGE, net=dataclasses.replace(PAPER_LARGE.net, dim=32, hidden=32, attention_heads=4)
    )
    return {
        "small": PAPER_SMALL,
        "boosted": boosted,
        "large": large,
        "any-delay": PAPER_BOOSTED_ANY_DELAY,
    }


def record(name: str, config, tensors: dict, generator: dict | None) -> bytes:
    engine = NativeEngine(config, tensors, generator)
    flat = engine_config(config, engine.hint_channels if generator else 0)
    rng = np.random.default_rng(len(name))
    t = np.arange(CHUNKS * CHUNK) / 16000
    voice = np.sin(2 * np.pi * (170 + 30 * np.sin(2 * np.pi * 4 * t)) * t)
    m = config.net.channels
    x = 0.3 * np.stack([np.roll(voice, 13 * i) for i in range(m)])
    x = (x + 0.05 * rng.standard_normal(x.shape)).astype(np.float32)
    chunks = x.reshape(m, CHUNKS, CHUNK).transpose(1, 0, 2).copy()
    hc = engine.hint_channels
    hints = (0.5 * rng.standard_normal((CHUNKS, hc, N_BINS))).astype(np.float32)
    has_hint = (rng.random(CHUNKS) > 0.25).astype(np.uint8)
    any_delay = name == "any-delay"
    ages = (has_hint * rng.integers(1, config.boost.max_age + 1, CHUNKS)).astype(np.uint8) if (
        any_delay
    ) else None  # fmt: skip
    outputs, made = [], []
    for i, chunk in enumerate(chunks):
        if generator:
            out, hint = engine.process_with_hint(chunk)
            made.append(hint)
        elif any_delay:
            k = int(ages[i] > 0)
            out = engine.process_aged(chunk, hints[i : i + k], ages[i : i + k].astype(np.int32))
        elif name == "boosted":
            out = engine.process(chunk, hints[i] if has_hint[i] else None)
        else:
            out = engine.process(chunk)
        outputs.append(out)
    fields = FIELDS + ["max_age"] if any_delay else FIELDS
    blob = bytearray(b"KBV2" if any_delay else b"KBV1")
    blob += struct.pack(f"<{len(fields) + 1}i", ROLES[name], *(int(flat.get(f, 0)) for f in fields))
    all_tensors = {**tensors, **(generator or {})}
    blob += struct.pack("<I", len(all_tensors))
    for key, value in all_tensors.items():
        arr = np.ascontiguousarray(value, np.float32)
        blob += struct.pack("<I", len(key)) + key.encode()
        blob += struct.pack("<I", arr.ndim) + struct.pack(f"<{arr.ndim}q", *arr.shape)
        blob += arr.astype("<f4").tobytes()
    blob += struct.pack("<I", CHUNKS) + chunks.astype("<f4").tobytes()
    if any_delay:
        blob += ages.tobytes() + hints.astype("<f4").tobytes()
    elif name == "boosted":
        blob += has_hint.tobytes() + hints.astype("<f4").tobytes()
    blob += np.stack(outputs).astype("<f4").tobytes()
    if generator:
        blob += np.stack(made).astype("<f4").tobytes()
    return bytes(blob)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    cfgs = configs()
    boosted_weights = random_weights(cfgs["boosted"], 21)
    generator = {k: v for k, v in boosted_weights.items() if k.startswith("hint_generator.")}
    any_delay = random_weights(cfgs["any-delay"], 23)
    rng = np.random.default_rng(24)
    for key in any_delay:
        if key.endswith(".age_bias"):  # 0 at init: make the lag path count
            any_delay[key] = rng.standard_normal(any_delay[key].shape).astype(np.float32)
    plans = {
        "small": (cfgs["small"], random_weights(cfgs["small"], 20), None),
        "boosted": (cfgs["boosted"], boosted_weights, None),
        "large": (cfgs["large"], random_weights(cfgs["large"], 22), generator),
        "any-delay": (cfgs["any-delay"], any_delay, None),
    }
    wanted = sys.argv[1:] or list(plans)
    for name, (config, tensors, gen) in plans.items():
        if name not in wanted:
            continue
        data = record(name, config, tensors, gen)
        (OUT / f"{name}.kbv").write_bytes(data)
        print(f"{name}: {len(data) / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
