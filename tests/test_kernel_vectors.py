"""The stored test vectors that `make test-aarch64` checks the cross-built engine
against (tools/record_kernel_vectors.py): every kernel set of this machine must
still reproduce them, so they cannot go stale while the engine changes."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from kboost_rt import _native
from kboost_rt.signal_path import CHUNK, N_BINS

VECTORS = Path(__file__).parent / "data" / "kernel_vectors"
FIELDS = (
    "role channels sources dim hidden blocks attention_heads attention_e attention_frames "
    "hint_channels delay merge_heads merge_e merge_frames"
).split()
ROLES = {0: "small", 1: "large", 2: "boosted"}


def read_vectors(path: Path) -> dict:
    data = path.read_bytes()
    assert data[:4] in (b"KBV1", b"KBV2")  # KBV2: an any-delay model, max_age last
    fields = FIELDS + ["max_age"] if data[:4] == b"KBV2" else FIELDS
    at = 4
    values = struct.unpack_from(f"<{len(fields)}i", data, at)
    at += 4 * len(fields)
    config = dict(zip(fields, values, strict=True))
    config["role"] = ROLES[config["role"]]
    (count,) = struct.unpack_from("<I", data, at)
    at += 4
    tensors = {}
    for _ in range(count):
        (length,) = struct.unpack_from("<I", data, at)
        name = data[at + 4 : at + 4 + length].decode()
        at += 4 + length
        (ndim,) = struct.unpack_from("<I", data, at)
        shape = struct.unpack_from(f"<{ndim}q", data, at + 4)
        at += 4 + 8 * ndim
        n = int(np.prod(shape)) if ndim else 1
        tensors[name] = np.frombuffer(data, "<f4", n, at).reshape(shape).copy()
        at += 4 * n

    def floats(*shape):
        nonlocal at
        n = int(np.prod(shape))
        out = np.frombuffer(data, "<f4", n, at).reshape(shape)
        at += 4 * n
        return out

    (chunks,) = struct.unpack_from("<I", data, at)
    at += 4
    m, s, hc = config["channels"], config["sources"], config["hint_channels"]
    doc = {"config": config, "tensors": tensors, "input": floats(chunks, m, CHUNK)}
    if config["role"] == "boosted":
        ages = np.frombuffer(data, np.uint8, chunks, at).astype(np.int32)
        doc["has_hint"], doc["ages"] = ages > 0, ages  # KBV1: 1, the model's delay
        at += chunks
        doc["hints"] = floats(chunks, hc, N_BINS)
    doc["output"] = floats(chunks, s, m, CHUNK)
    if config["role"] == "large" and hc:
        doc["hint_out"] = floats(chunks, hc, N_BINS)
    assert at == len(data), f"{path}: {len(data) - at} bytes left over"
    return doc


@pytest.mark.parametrize("name", ["small", "boosted", "large", "any-delay"])
def test_every_kernel_set_reproduces_the_stored_vectors(name):
    doc = read_vectors(VECTORS / f"{name}.kbv")
    cfg = doc["config"]
    best = _native.kernel_sets()[-1]
    try:
        for kernels in _native.kernel_sets():
            assert _native.select_kernels(kernels)
            engine = _native.Engine(cfg, doc["tensors"])
            out = np.zeros((cfg["sources"], cfg["channels"], CHUNK), np.float32)
            made = np.zeros((cfg["hint_channels"], N_BINS), np.float32)
            for t, chunk in enumerate(doc["input"]):
                hint = doc["hints"][t] if "hints" in doc and doc["has_hint"][t] else None
                if cfg.get("max_age"):
                    k = int(hint is not None)
                    engine.process_aged_into(
                        chunk, doc["hints"][t : t + k], doc["ages"][t : t + k], out
                    )
                else:
                    engine.process_into(chunk, hint, out, made if "hint_out" in doc else None)
                assert np.abs(out - doc["output"][t]).max() <= 1e-4, (kernels, t)
                if "hint_out" in doc:
                    assert np.abs(made - doc["hint_out"][t]).max() <= 1e-4, (kernels, t)
    finally:
        _native.select_kernels(best)
