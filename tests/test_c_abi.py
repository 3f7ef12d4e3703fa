"""The C ABI (kboost.h / libkboost.so) through cffi, and zero heap allocations
inside kb_engine_process and kb_processor_process, counted by an LD_PRELOADed
malloc counter."""

import numpy as np
import pytest
import torch

from kboost_rt.config import PAPER_BOOSTED, PAPER_BOOSTED_ANY_DELAY, PAPER_SMALL
from kboost_rt.costs import parameter_counts
from kboost_rt.engine import NativeEngine, native_library
from kboost_rt.reference import build_model

cffi = pytest.importorskip("cffi")

# The declarations of kboost.h, as cffi reads them (no preprocessor).
CDEF = """
typedef struct {
  int32_t role, channels, sources, dim, hidden, blocks;
  int32_t attention_heads, attention_e, attention_frames;
  int32_t hint_channels, delay, merge_heads, merge_e, merge_frames, max_age;
} kb_config;
typedef struct {
  const char* name; const float* data; int32_t ndim; const int64_t* shape;
} kb_tensor;
typedef struct kb_model kb_model;
typedef struct kb_engine kb_engine;
typedef struct { uint64_t chunks; uint64_t nonfinite_resets; } kb_stats;
int kb_abi_version(void);
const char* kb_simd(void);
kb_engine* kb_engine_create(const kb_config*, const kb_tensor*, int32_t, char*, size_t);
int kb_engine_process(kb_engine*, const float*, const float*, float*, float*);
int kb_engine_process_aged(kb_engine*, const float*, const float*, const int32_t*, int32_t, float*);
void kb_engine_reset(kb_engine*);
kb_stats kb_engine_stats(const kb_engine*);
void kb_engine_destroy(kb_engine*);
kb_model* kb_model_create(const kb_config*, const kb_tensor*, int32_t, char*, size_t);
kb_engine* kb_engine_create_from_model(const kb_model*, char*, size_t);
size_t kb_model_weight_bytes(const kb_model*);
size_t kb_engine_state_bytes(const kb_engine*);
void kb_model_destroy(kb_model*);
typedef struct kb_link kb_link;
typedef struct kb_processor kb_processor;
typedef struct { double gain_db; double wet; int32_t source, bypass, boost; } kb_params;
typedef struct {
  uint64_t chunks, hints_used, chunks_on_small, nonfinite_resets;
  uint64_t hints_on_time, hints_late, hints_lost, chunks_queued, chunks_dropped;
  uint64_t nonfinite_inputs;
} kb_processor_stats;
kb_link* kb_link_create(int32_t, int32_t, int32_t);
kb_link* kb_link_create_any_delay(int32_t, int32_t, int32_t);
int kb_processor_hint_ages(const kb_processor*, uint64_t*, int32_t);
int kb_link_next_chunk(kb_link*, int64_t*, float*);
int kb_link_deliver(kb_link*, int64_t, const float*);
int64_t kb_link_now(const kb_link*);
void kb_link_destroy(kb_link*);
kb_processor* kb_processor_create(kb_engine*, kb_link*, kb_engine*, int32_t, const kb_params*,
                                  char*, size_t);
void kb_processor_process(kb_processor*, const float*, float*, float*);
int kb_processor_set_params(kb_processor*, const kb_params*);
kb_processor_stats kb_processor_get_stats(const kb_processor*);
void kb_processor_reset(kb_processor*);
void kb_processor_destroy(kb_processor*);
"""

ROLES = {"small": 0, "large": 1, "boosted": 2}


def c_model_args(ffi, config, tensors, hint_channels=0):
    """(kb_config*, kb_tensor[], what must stay alive while they are used)."""
    from kboost_rt.engine import engine_config

    c = ffi.new("kb_config*")
    for key, value in engine_config(config, hint_channels).items():
        setattr(c, key, ROLES[value] if key == "role" else value)
    keep = []
    array = ffi.new("kb_tensor[]", len(tensors))
    for i, (name, t) in enumerate(tensors.items()):
        t = np.ascontiguousarray(t, np.float32)
        name_c, shape_c = ffi.new("char[]", name.encode()), ffi.new("int64_t[]", t.shape)
        keep += [t, name_c, shape_c]
        array[i] = {
            "name": name_c,
            "data": ffi.from_buffer("float[]", t),
            "ndim": t.ndim,
            "shape": shape_c,
        }
    return c, array, keep


class CEngine:
    """A kb_engine driven through cffi, built from a config and tensors."""

    def __init__(self, ffi, lib, config, tensors, hint_channels=0, model=None):
        error = ffi.new("char[512]")
        if model is not None:  # a stream of a shared kb_model
            self.ptr = lib.kb_engine_create_from_model(model, error, 512)
        else:
            c, array, _keep = c_model_args(ffi, config, tensors, hint_channels)
            self.ptr = lib.kb_engine_create(c, array, len(tensors), error, 512)
        self.error = ffi.string(error).decode()
        self.ffi, self.lib = ffi, lib

    def process(self, chunk, hint=None, out_shape=(2, 2, 128)):
        out = np.zeros(out_shape, np.float32)
        f = self.ffi
        h = f.NULL if hint is None else f.from_buffer("float[]", np.ascontiguousarray(hint))
        rc = self.lib.kb_engine_process(
            self.ptr, f.from_buffer("float[]", chunk), h, f.from_buffer("float[]", out), f.NULL
        )
        return rc, out


@pytest.fixture(scope="module")
def lib():
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    return ffi, ffi.dlopen(str(native_library()))


def tensors_of(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def test_c_abi_matches_the_python_binding(lib):
    ffi, c = lib
    assert c.kb_abi_version() == 4
    assert ffi.string(c.kb_simd()).decode() in ("generic", "avx2", "avx512")
    torch.manual_seed(0)
    tensors = tensors_of(build_model(PAPER_BOOSTED))
    engine = CEngine(ffi, c, PAPER_BOOSTED, tensors)
    assert engine.ptr != ffi.NULL, engine.error
    reference = NativeEngine(PAPER_BOOSTED, tensors)
    rng = np.random.default_rng(0)
    for t in range(50):
        chunk = (0.1 * rng.standard_normal((2, 128))).astype(np.float32)
        hint = rng.standard_normal((8, 97)).astype(np.float32) if t % 4 else None
        rc, out = engine.process(chunk, hint)
        assert rc == 0
        assert np.array_equal(out, reference.process(chunk, hint))
    nan_chunk = np.full((2, 128), np.nan, np.float32)
    rc, out = engine.process(nan_chunk)
    assert rc == 1 and not out.any()
    stats = c.kb_engine_stats(engine.ptr)
    assert (stats.chunks, stats.nonfinite_resets) == (51, 1)
    c.kb_engine_reset(engine.ptr)
    c.kb_engine_destroy(engine.ptr)
    assert c.kb_engine_process(ffi.NULL, ffi.NULL, ffi.NULL, ffi.NULL, ffi.NULL) == -1


def test_engines_of_one_c_model_share_it_and_outlive_it(lib):
    ffi, c = lib
    torch.manual_seed(1)
    tensors = tensors_of(build_model(PAPER_BOOSTED))
    error = ffi.new("char[512]")
    config, array, _keep = c_model_args(ffi, PAPER_BOOSTED, tensors)
    model = c.kb_model_create(config, array, len(tensors), error, 512)
    assert model != ffi.NULL, ffi.string(error).decode()
    # The device's parameters, packed (the LSTMs' two biases become one).
    floats = parameter_counts(PAPER_BOOSTED)["device"]
    assert 0.9 * 4 * floats <= c.kb_model_weight_bytes(model) <= 1.2 * 4 * floats
    engines = [CEngine(ffi, c, None, None, model=model) for _ in range(2)]
    assert all(e.ptr != ffi.NULL for e in engines)
    assert c.kb_engine_state_bytes(engines[0].ptr) > 0
    c.kb_model_destroy(model)  # the engines keep the weights
    alone = [NativeEngine(PAPER_BOOSTED, tensors) for _ in range(2)]
    rng = np.random.default_rng(2)
    for _ in range(30):
        for engine, reference in zip(engines, alone, strict=True):
            chunk = (0.1 * rng.standard_normal((2, 128))).astype(np.float32)
            hint = rng.standard_normal((8, 97)).astype(np.float32)
            rc, out = engine.process(chunk, hint)
            assert rc == 0 and np.array_equal(out, reference.process(chunk, hint))
    for engine in engines:
        c.kb_engine_destroy(engine.ptr)
    assert c.kb_engine_create_from_model(ffi.NULL, error, 512) == ffi.NULL
    assert "model is NULL" in ffi.string(error).decode()
    config.role = 7
    assert c.kb_model_create(config, array, len(tensors), error, 512) == ffi.NULL
    assert "unknown role" in ffi.string(error).decode()


def test_c_abi_gives_an_any_delay_model_hints_with_their_ages(lib):
    ffi, c = lib
    torch.manual_seed(2)
    cfg = PAPER_BOOSTED_ANY_DELAY
    model = build_model(cfg)
    with torch.no_grad():
        for merge in model.merges:
            merge.age_bias.normal_()
    tensors = tensors_of(model)
    engine = CEngine(ffi, c, cfg, tensors)
    assert engine.ptr != ffi.NULL, engine.error
    reference = NativeEngine(cfg, tensors)
    rng = np.random.default_rng(3)
    for t in range(40):
        chunk = (0.1 * rng.standard_normal((2, 128))).astype(np.float32)
        k = t % 3
        hints = rng.standard_normal((k, 8, 97)).astype(np.float32)
        ages = np.array([1, 4, 12][:k], np.int32)  # 12: too old, ignored
        out = np.zeros((2, 2, 128), np.float32)
        rc = c.kb_engine_process_aged(
            engine.ptr,
            ffi.from_buffer("float[]", chunk),
            ffi.from_buffer("float[]", hints) if k else ffi.NULL,
            ffi.from_buffer("int32_t[]", ages) if k else ffi.NULL,
            k,
            ffi.from_buffer("float[]", out),
        )
        assert rc == 0 and np.array_equal(out, reference.process_aged(chunk, hints, ages))
    # A fixed-delay model has no ages to take.
    fixed = CEngine(ffi, c, PAPER_BOOSTED, tensors_of(build_model(PAPER_BOOSTED)))
    zeros = np.zeros((2, 128), np.float32)
    out = np.zeros((2, 2, 128), np.float32)
    x, y = ffi.from_buffer("float[]", zeros), ffi.from_buffer("float[]", out)
    assert c.kb_engine_process_aged(fixed.ptr, x, ffi.NULL, ffi.NULL, 0, y) == -1
    assert c.kb_engine_process_aged(engine.ptr, x, ffi.NULL, ffi.NULL, 2, y) == -1
    # ...and the plain call cannot tell an any-delay model a hint's age
    h = ffi.from_buffer("float[]", np.zeros((8, 97), np.float32))
    assert c.kb_engine_process(engine.ptr, x, h, y, ffi.NULL) == -1
    assert c.kb_engine_process(engine.ptr, x, ffi.NULL, y, ffi.NULL) == 0
    c.kb_engine_destroy(engine.ptr)
    c.kb_engine_destroy(fixed.ptr)


def test_c_abi_reports_bad_weights(lib):
    ffi, c = lib
    torch.manual_seed(0)
    tensors = tensors_of(build_model(PAPER_SMALL))
    del tensors["decoder.bias"]
    engine = CEngine(ffi, c, PAPER_SMALL, tensors)
    assert engine.ptr == ffi.NULL
    assert engine.error == "missing tensor 'decoder.bias'"


def test_c_abi_processor_matches_the_python_processor(lib):
    """A plugin host's view: engines handed to a processor, hints filed through the
    link by chunk number, parameters set between chunks."""
    from kboost_rt import _native
    from kboost_rt.model_files import ModelFiles, random_weights
    from kboost_rt.params import LiveParams
    from kboost_rt.processor import Processor

    ffi, c = lib
    boosted_t, small_t = random_weights(PAPER_BOOSTED, 3), random_weights(PAPER_SMALL, 4)
    boosted, small = (
        CEngine(ffi, c, PAPER_BOOSTED, boosted_t),
        CEngine(ffi, c, PAPER_SMALL, small_t),
    )
    link = c.kb_link_create(2, 8, PAPER_BOOSTED.boost.delay)
    error = ffi.new("char[512]")
    bad = ffi.new("kb_params*", {"gain_db": 30.0, "wet": 1.0, "boost": 1})
    assert c.kb_processor_create(boosted.ptr, link, small.ptr, 4, bad, error, 512) == ffi.NULL
    assert "out of range" in ffi.string(error).decode()  # and the engines are still ours:
    processor = c.kb_processor_create(boosted.ptr, link, small.ptr, 4, ffi.NULL, error, 512)
    assert processor != ffi.NULL, ffi.string(error).decode()

    py_link = _native.HintLink(2, 8, PAPER_BOOSTED.boost.delay)
    live = LiveParams()
    reference = Processor(
        PAPER_BOOSTED, boosted_t, py_link, ModelFiles(None, PAPER_SMALL, small_t), live, 4
    )
    rng = np.random.default_rng(5)
    d = PAPER_BOOSTED.boost.delay
    mix, sources = np.zeros((2, 128), np.float32), np.zeros((2, 2, 128), np.float32)
    chunk_out, seq = np.zeros((2, 128), np.float32), ffi.new("int64_t*")
    for t in range(60):
        chunk = (0.1 * rng.standard_normal((2, 128))).astype(np.float32)
        hint = rng.standard_normal((8, 97)).astype(np.float32)
        if t == 20:
            params = {"gain_db": -6.0, "wet": 0.5, "source": 2, "bypass": 0, "boost": 1}
            assert c.kb_processor_set_params(processor, ffi.new("kb_params*", params)) == 0
            live.set(gain_db=-6.0, wet=0.5, source=2)
        if t >= d and not 10 <= t < 30:  # hints 10..29 lost: the fallback plays
            assert c.kb_link_deliver(link, t - d, ffi.from_buffer("float[]", hint)) == 1
            py_link.deliver(t - d, hint)
        buffers = [ffi.from_buffer("float[]", a) for a in (chunk, mix, sources)]
        c.kb_processor_process(processor, *buffers)
        want_sources, want_mix = reference.process(chunk)
        assert np.array_equal(mix, want_mix) and np.array_equal(sources, want_sources), t
        assert c.kb_link_next_chunk(link, seq, ffi.from_buffer("float[]", chunk_out)) == 1
        assert seq[0] == t and np.array_equal(chunk_out, chunk)  # the input, queued for the server
        assert c.kb_link_now(link) == t
    stats = c.kb_processor_get_stats(processor)
    assert (stats.chunks, stats.hints_on_time, stats.hints_lost) == (60, 60 - d - 20, 20)
    assert stats.chunks_on_small == reference.chunks_on_small > 0
    bad_params = ffi.new("kb_params*", {"gain_db": 0.0, "wet": 2.0, "boost": 1})
    assert c.kb_processor_set_params(processor, bad_params) == -1
    c.kb_processor_destroy(processor)
    c.kb_link_destroy(link)


def test_c_abi_processor_runs_an_any_delay_model_on_hints_of_every_age(lib):
    from kboost_rt import _native
    from kboost_rt.config import PAPER_BOOSTED_ANY_DELAY as cfg
    from kboost_rt.model_files import random_weights
    from kboost_rt.processor import Processor

    ffi, c = lib
    tensors = random_weights(cfg, 7)
    engine = CEngine(ffi, c, cfg, tensors)
    hc, max_age = cfg.boost.hint_channels, cfg.boost.max_age
    fixed_link = c.kb_link_create(2, hc, 3)
    error = ffi.new("char[512]")
    assert c.kb_processor_create(engine.ptr, fixed_link, ffi.NULL, 4, ffi.NULL, error, 512) == (
        ffi.NULL
    )
    assert "max_age" in ffi.string(error).decode()
    c.kb_link_destroy(fixed_link)
    assert c.kb_link_create_any_delay(2, hc, 0) == ffi.NULL
    assert c.kb_link_create_any_delay(2, hc, 9) == ffi.NULL
    link = c.kb_link_create_any_delay(2, hc, max_age)
    processor = c.kb_processor_create(engine.ptr, link, ffi.NULL, 4, ffi.NULL, error, 512)
    assert processor != ffi.NULL, ffi.string(error).decode()
    py_link = _native.HintLink(2, hc, 0, max_age=max_age)
    reference = Processor(cfg, tensors, py_link)
    rng = np.random.default_rng(8)
    hints = rng.standard_normal((40, hc, 97)).astype(np.float32)
    arrives = {j: j + int(rng.integers(1, 10)) for j in range(40)}
    mix, sources = np.zeros((2, 128), np.float32), np.zeros((2, 2, 128), np.float32)
    for t in range(40):
        chunk = (0.1 * rng.standard_normal((2, 128))).astype(np.float32)
        for j in (j for j, when in arrives.items() if when == t):
            c.kb_link_deliver(link, j, ffi.from_buffer("float[]", hints[j]))
            py_link.deliver(j, hints[j])
        c.kb_processor_process(
            processor, *[ffi.from_buffer("float[]", a) for a in (chunk, mix, sources)]
        )
        want_sources, _ = reference.process(chunk)
        assert np.array_equal(sources, want_sources), t
    ages = ffi.new("uint64_t[9]")
    assert c.kb_processor_hint_ages(processor, ages, 9) == 9
    assert list(ages) == reference.stats()["hints_by_age"] and sum(ages) > 0
    assert c.kb_processor_hint_ages(processor, ffi.NULL, 9) == -1
    c.kb_processor_destroy(processor)
    c.kb_link_destroy(link)


def test_process_allocates_nothing():
    from kboost_rt.alloc_check import count_allocations

    counts = count_allocations(
        ["paper-small", "paper-boosted", "paper-boosted-any-delay", "paper-large"], chunks=3000
    )
    assert counts is not None, "the malloc counter library is not installed"
    for name in ("paper-small", "paper-boosted", "paper-boosted-any-delay", "paper-large"):
        # The counter works: building an engine allocates...
        assert counts[f"{name}.create"] > 0
        # ...and 3000 chunks, with hints lost and one NaN reset, allocate nothing.
        assert counts[f"{name}.process"] == 0, counts
        assert counts[f"{name}.chunks"] == 3000 and counts[f"{name}.resets"] == 1
    counts = count_allocations(["processor", "processor-any-delay"], chunks=10000)
    # The processor as an audio callback runs it, the fallback taking over on the
    # way, the network side draining and filing on the same thread: nothing either.
    for name in ("processor", "processor-any-delay"):
        assert counts[f"{name}.process"] == 0, counts
        assert counts[f"{name}.chunks"] == 10000 and counts[f"{name}.chunks_on_small"] > 0
        assert counts[f"{name}.hints_on_time"] > 0 and counts[f"{name}.hints_lost"] > 0
