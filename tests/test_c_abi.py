"""The C ABI (kboost.h / libkboost.so) through cffi, and zero heap allocations
inside kb_engine_process, counted by an LD_PRELOADed malloc counter."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from kboost_rt.config import PAPER_BOOSTED, PAPER_LARGE, PAPER_SMALL
from kboost_rt.engine import NativeEngine, native_include_dir, native_library
from kboost_rt.reference import build_model, save_model

cffi = pytest.importorskip("cffi")

# The declarations of kboost.h, as cffi reads them (no preprocessor).
CDEF = """
typedef struct {
  int32_t role, channels, sources, dim, hidden, blocks;
  int32_t attention_heads, attention_e, attention_frames;
  int32_t hint_channels, delay, merge_heads, merge_e, merge_frames;
} kb_config;
typedef struct {
  const char* name; const float* data; int32_t ndim; const int64_t* shape;
} kb_tensor;
typedef struct kb_engine kb_engine;
typedef struct { uint64_t chunks; uint64_t nonfinite_resets; } kb_stats;
int kb_abi_version(void);
const char* kb_simd(void);
kb_engine* kb_engine_create(const kb_config*, const kb_tensor*, int32_t, char*, size_t);
int kb_engine_process(kb_engine*, const float*, const float*, float*, float*);
void kb_engine_reset(kb_engine*);
kb_stats kb_engine_stats(const kb_engine*);
void kb_engine_destroy(kb_engine*);
"""

ROLES = {"small": 0, "large": 1, "boosted": 2}


class CEngine:
    """A kb_engine driven through cffi, built from a config and tensors."""

    def __init__(self, ffi, lib, config, tensors, hint_channels=0):
        from kboost_rt.engine import engine_config

        flat = engine_config(config, hint_channels)
        c = ffi.new("kb_config*")
        for key, value in flat.items():
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
        error = ffi.new("char[512]")
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
    assert c.kb_abi_version() == 1
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


def test_c_abi_reports_bad_weights(lib):
    ffi, c = lib
    torch.manual_seed(0)
    tensors = tensors_of(build_model(PAPER_SMALL))
    del tensors["decoder.bias"]
    engine = CEngine(ffi, c, PAPER_SMALL, tensors)
    assert engine.ptr == ffi.NULL
    assert engine.error == "missing tensor 'decoder.bias'"


COUNT_SCRIPT = textwrap.dedent("""
    import json, sys
    import cffi, numpy as np
    sys.path.insert(0, {tests!r})
    from test_c_abi import CDEF, CEngine
    from kboost_rt.engine import native_library
    from kboost_rt.model_files import load_model_files

    ffi = cffi.FFI()
    ffi.cdef(CDEF + '''
        void kb_count_begin(void);
        long kb_count_end(void);
        long kb_count_process(kb_engine*, const float*, long, const float*, long, int,
                              float*, float*, int);''')
    lib = ffi.dlopen(str(native_library()))
    counter = ffi.dlopen({shim!r})
    rng = np.random.default_rng(0)
    chunks = 3000
    x = (0.1 * rng.standard_normal((chunks, 2, 128))).astype(np.float32)
    x[1234, 0, 5] = np.nan  # a reset on the way must not allocate either
    hints = rng.standard_normal((chunks, 8, 97)).astype(np.float32)
    out = np.zeros((2, 2, 128), np.float32)
    hint_out = np.zeros((8, 97), np.float32)
    counts = {{}}
    large = load_model_files({large!r})
    boosted = load_model_files({boosted!r})
    generator = {{k: v for k, v in boosted.tensors.items() if k.startswith("hint_generator.")}}
    for name, files, extra, with_hints in [
        ("small", load_model_files({small!r}), {{}}, False),
        ("boosted", boosted, {{}}, True),
        ("large", large, generator, False),
    ]:
        tensors = dict(files.tensors, **extra)
        counter.kb_count_begin()
        engine = CEngine(ffi, lib, files.config, tensors, 8 if extra else 0)
        counts[name + "_create"] = counter.kb_count_end()
        assert engine.ptr != ffi.NULL, engine.error
        n = chunks if name != "large" else 300
        counts[name] = counter.kb_count_process(
            engine.ptr, ffi.from_buffer("float[]", x), 256,
            ffi.from_buffer("float[]", hints) if with_hints else ffi.NULL, 8 * 97, 3,
            ffi.from_buffer("float[]", out),
            ffi.from_buffer("float[]", hint_out) if extra else ffi.NULL, n)
        counts[name + "_resets"] = lib.kb_engine_stats(engine.ptr).nonfinite_resets
    print(json.dumps(counts))
""")


def test_process_allocates_nothing(tmp_path):
    shim = tmp_path / "alloc_counter.so"
    here = str(native_library().parent)
    subprocess.run(
        [
            "gcc",
            "-O1",
            "-shared",
            "-fPIC",
            "-std=c99",
            "-Wall",
            "-Werror",
            f"-I{native_include_dir()}",
            "tests/alloc_counter.c",
            "-o",
            str(shim),
            f"-L{here}",
            "-lkboost",
            f"-Wl,-rpath,{here}",
        ],
        check=True,
        cwd=str(Path(__file__).parent.parent),
    )
    torch.manual_seed(0)
    for name, cfg in [("small", PAPER_SMALL), ("boosted", PAPER_BOOSTED), ("large", PAPER_LARGE)]:
        save_model(build_model(cfg), cfg, tmp_path / name)
    script = COUNT_SCRIPT.format(
        tests=str(Path(__file__).parent),
        shim=str(shim),
        small=str(tmp_path / "small"),
        boosted=str(tmp_path / "boosted"),
        large=str(tmp_path / "large"),
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"LD_PRELOAD": str(shim), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    # The counter works: building an engine allocates.
    assert counts["small_create"] > 0 and counts["large_create"] > 0
    # 3000 chunks each (300 for large), with hints lost and a NaN reset on the way: none.
    assert counts["small"] == counts["boosted"] == counts["large"] == 0, counts
    assert counts["small_resets"] == counts["boosted_resets"] == 1
