"""Counts heap allocations inside the native step (`kb_engine_process`).

`count_allocations()` starts a child Python with the package's malloc counter
(`libkboost_alloc_counter.so`) LD_PRELOADed. The child builds engines through
the C ABI (ctypes, random weights from the config's parameter shapes, no
torch), then runs thousands of chunks from a C loop, with hints lost and a
NaN reset on the way, and reports what it counted. Building an engine is
counted too, which shows the counter works.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from .config import PRESETS
from .engine import engine_config, native_library
from .model_files import random_weights
from .signal_path import CHUNK, N_BINS

COUNTER = Path(__file__).parent / "libkboost_alloc_counter.so"
ROLES = {"small": 0, "large": 1, "boosted": 2}
_CONFIG_FIELDS = [
    "role",
    "channels",
    "sources",
    "dim",
    "hidden",
    "blocks",
    "attention_heads",
    "attention_e",
    "attention_frames",
    "hint_channels",
    "delay",
    "merge_heads",
    "merge_e",
    "merge_frames",
    "max_age",
]


class KbConfig(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int32) for name in _CONFIG_FIELDS]


class KbTensor(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("data", ctypes.POINTER(ctypes.c_float)),
        ("ndim", ctypes.c_int32),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
    ]


class KbStats(ctypes.Structure):
    _fields_ = [("chunks", ctypes.c_uint64), ("nonfinite_resets", ctypes.c_uint64)]


def _ptr(a: np.ndarray):
    return a.ctypes.data_as(ctypes.POINTER(ctypes.c_float))


def _child(names: list[str], chunks: int) -> dict[str, float]:
    lib = ctypes.CDLL(str(native_library()))
    counter = ctypes.CDLL(str(COUNTER))
    lib.kb_engine_create.restype = ctypes.c_void_p
    lib.kb_engine_create.argtypes = [
        ctypes.POINTER(KbConfig),
        ctypes.POINTER(KbTensor),
        ctypes.c_int32,
        ctypes.c_char_p,
        ctypes.c_size_t,
    ]
    lib.kb_engine_stats.restype = KbStats
    lib.kb_engine_stats.argtypes = [ctypes.c_void_p]
    lib.kb_engine_destroy.argtypes = [ctypes.c_void_p]
    counter.kb_count_process_aged.restype = ctypes.c_long
    counter.kb_count_process_aged.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_float),
        ctypes.c_long,
        ctypes.POINTER(ctypes.c_float),
        ctypes.c_long,
        ctypes.POINTER(ctypes.c_float),
        ctypes.c_int,
    ]
    counter.kb_count_end.restype = ctypes.c_long
    counter.kb_count_process.restype = ctypes.c_long
    counter.kb_count_process.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_float),
        ctypes.c_long,
        ctypes.POINTER(ctypes.c_float),
        ctypes.c_long,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_float),
        ctypes.POINTER(ctypes.c_float),
        ctypes.c_int,
    ]
    rng = np.random.default_rng(0)
    report: dict[str, float] = {}
    for name in names:
        if name in ("processor", "processor-any-delay"):
            report.update(_count_processor(lib, counter, rng, chunks, name))
            continue
        if name in PRESETS:
            config = PRESETS[name]
        else:  # a model folder: its config (the weights do not change what is allocated)
            from .model_files import read_config

            config = read_config(Path(name))
        tensors = random_weights(config)
        hint_channels = 0
        if config.role == "large":  # with the hint generator, as the server runs it
            hint_channels = config.net.spec_channels
            shape = (hint_channels, config.net.spec_channels, 3, 3)
            tensors["hint_generator.weight"] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
            tensors["hint_generator.bias"] = np.zeros(hint_channels, np.float32)
        engine, report[f"{name}.create"] = _create_engine(
            lib, config, tensors, hint_channels, counter
        )
        m, s = config.net.channels, config.net.sources
        x = (0.1 * rng.standard_normal((chunks, m, CHUNK))).astype(np.float32)
        x[chunks // 2, 0, 3] = np.nan  # a reset on the way
        hc = config.boost.hint_channels if config.boost is not None else hint_channels
        hints = rng.standard_normal((chunks, max(hc, 1), N_BINS)).astype(np.float32)
        out = np.zeros((s, m, CHUNK), np.float32)
        hint_out = np.zeros((max(hc, 1), N_BINS), np.float32)
        boosted = config.role == "boosted"
        if boosted and config.boost.any_delay:
            # two hints a chunk, [age 1, age 5]: consecutive [C_h, 97] blocks
            pairs = np.ascontiguousarray(np.stack([hints, np.roll(hints, 4, 0)], 1))
            count = counter.kb_count_process_aged(
                engine, _ptr(x), m * CHUNK, _ptr(pairs), 2 * hc * N_BINS, _ptr(out), chunks
            )
        else:
            count = counter.kb_count_process(
                engine,
                _ptr(x),
                m * CHUNK,
                _ptr(hints) if boosted else None,
                hc * N_BINS,
                3,
                _ptr(out),
                _ptr(hint_out) if hint_channels else None,
                chunks,
            )
        stats = lib.kb_engine_stats(engine)
        report[f"{name}.process"] = count
        report[f"{name}.chunks"] = stats.chunks
        report[f"{name}.resets"] = stats.nonfinite_resets
        lib.kb_engine_destroy(engine)
    return report


class KbParams(ctypes.Structure):
    _fields_ = [
        ("gain_db", ctypes.c_double),
        ("wet", ctypes.c_double),
        ("source", ctypes.c_int32),
        ("bypass", ctypes.c_int32),
        ("boost", ctypes.c_int32),
    ]


class KbProcessorStats(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "chunks",
            "hints_used",
            "chunks_on_small",
            "nonfinite_resets",
            "hints_on_time",
            "hints_late",
            "hints_lost",
            "chunks_queued",
            "chunks_dropped",
            "nonfinite_inputs",
        )
    ]


def _create_engine(lib, config, tensors, hint_channels: int = 0, counter=None):
    """A kb_engine through the C ABI; with `counter`, also the allocations that
    creating it made: -> (engine, allocations or None)."""
    flat = engine_config(config, hint_channels)
    c = KbConfig(**{k: ROLES[v] if k == "role" else v for k, v in flat.items()})
    keep = []
    array = (KbTensor * len(tensors))()
    for i, (tname, t) in enumerate(tensors.items()):
        shape = (ctypes.c_int64 * t.ndim)(*t.shape)
        keep.append(shape)
        array[i] = KbTensor(tname.encode(), _ptr(t), t.ndim, shape)
    error = ctypes.create_string_buffer(512)
    if counter is not None:
        counter.kb_count_begin()
    engine = lib.kb_engine_create(ctypes.byref(c), array, len(tensors), error, 512)
    allocations = counter.kb_count_end() if counter is not None else None
    if not engine:
        raise RuntimeError(error.value.decode())
    return engine, allocations


def _count_processor(lib, counter, rng, chunks: int, name: str) -> dict[str, float]:
    """The processor (paper-size boosted model, fixed-delay or any-delay, with
    the small-model fallback and the hint link) as an audio callback runs it:
    see kb_count_processor."""
    from .config import PAPER_BOOSTED, PAPER_BOOSTED_ANY_DELAY, PAPER_SMALL

    config = PAPER_BOOSTED_ANY_DELAY if name == "processor-any-delay" else PAPER_BOOSTED
    for create in (lib.kb_link_create, lib.kb_link_create_any_delay):
        create.restype = ctypes.c_void_p
        create.argtypes = [ctypes.c_int32] * 3
    lib.kb_link_destroy.argtypes = [ctypes.c_void_p]
    lib.kb_processor_create.restype = ctypes.c_void_p
    lib.kb_processor_create.argtypes = [
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int32,
        ctypes.POINTER(KbParams),
        ctypes.c_char_p,
        ctypes.c_size_t,
    ]
    lib.kb_processor_get_stats.restype = KbProcessorStats
    lib.kb_processor_get_stats.argtypes = [ctypes.c_void_p]
    lib.kb_processor_destroy.argtypes = [ctypes.c_void_p]
    counter.kb_count_processor.restype = ctypes.c_long
    counter.kb_count_processor.argtypes = [
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_float),
        ctypes.c_long,
        ctypes.POINTER(ctypes.c_float),
        ctypes.c_long,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_float),
        ctypes.POINTER(ctypes.c_float),
        ctypes.POINTER(ctypes.c_float),
        ctypes.c_int,
    ]
    boosted, _ = _create_engine(lib, config, random_weights(config))
    small, _ = _create_engine(lib, PAPER_SMALL, random_weights(PAPER_SMALL))
    m, s = config.net.channels, config.net.sources
    hc, delay = config.boost.hint_channels, config.boost.delay
    if config.boost.any_delay:
        link, delay = lib.kb_link_create_any_delay(m, hc, config.boost.max_age), -1
    else:
        link = lib.kb_link_create(m, hc, delay)
    error = ctypes.create_string_buffer(512)
    processor = lib.kb_processor_create(boosted, link, small, 25, None, error, 512)
    if not processor:
        raise RuntimeError(error.value.decode())
    x = (0.1 * rng.standard_normal((chunks, m, CHUNK))).astype(np.float32)
    hints = rng.standard_normal((chunks, hc, N_BINS)).astype(np.float32)
    mix = np.zeros((m, CHUNK), np.float32)
    sources = np.zeros((s, m, CHUNK), np.float32)
    drained = np.zeros((m, CHUNK), np.float32)
    count = counter.kb_count_processor(
        processor, link, _ptr(x), m * CHUNK, _ptr(hints), hc * N_BINS, delay,
        _ptr(mix), _ptr(sources), _ptr(drained), chunks,
    )  # fmt: skip
    stats = lib.kb_processor_get_stats(processor)
    lib.kb_processor_destroy(processor)
    lib.kb_link_destroy(link)
    return {
        f"{name}.process": count,
        f"{name}.chunks": stats.chunks,
        f"{name}.chunks_on_small": stats.chunks_on_small,
        f"{name}.hints_on_time": stats.hints_on_time,
        f"{name}.hints_lost": stats.hints_lost,
    }


def count_allocations(names: list[str], chunks: int = 3000) -> dict[str, float] | None:
    """Run the count in a child process; None when the counter is not available."""
    if not COUNTER.is_file() or sys.platform != "linux":
        return None
    env = dict(os.environ, LD_PRELOAD=str(COUNTER))
    cmd = [sys.executable, "-m", "kboost_rt.alloc_check", str(chunks), *names]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd="/")
    if result.returncode != 0:
        raise RuntimeError(f"allocation count failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(_child(sys.argv[2:], int(sys.argv[1]))))
