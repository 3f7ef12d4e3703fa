"""`kboost-rt bench`: one streaming step per chunk, batch 1, one thread, for
each model and backend in the same run, against the PyTorch eager reference.

Backends:
- native: the C++ engine (`NativeEngine.process_into`, timed from Python).
- eager: the PyTorch reference `model.step` (the reference for max_abs_err).
- torchscript: `torch.jit.trace` + `torch.jit.freeze` of the fixed-state step
  (kboost_rt.reference.export.FixedStateStep).
- onnxruntime: the same fixed-state step exported to ONNX (opset 17), run by
  ONNX Runtime with one intra-op thread and its state fed back each chunk.

Weights are random (seeded): timing does not depend on them. The audio is a
generated two-talker mixture; boosted models get a hint on 2 of 3 chunks.
"""

from __future__ import annotations

import io
import json
import os
import platform
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .config import PRESETS
from .signal_path import CHUNK, N_BINS, SAMPLE_RATE

BACKENDS = ("native", "eager", "torchscript", "onnxruntime")
# The native engine is also timed with each slower kernel set this CPU runs,
# as "native-<set>" (e.g. native-avx2), so machines without AVX-512 can be judged.
CONFIGS = {"small": "paper-small", "boosted": "paper-boosted", "large": "paper-large"}
WARMUP = 30

Step = Callable[[np.ndarray, np.ndarray | None], np.ndarray]


def synth_mixture(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Two harmonic 'talkers' with gliding pitch and syllable-rate envelopes at two
    microphones 0.18 m apart, plus faint noise: [2, samples] float32. Timing input
    only (the models' speed does not depend on what they hear)."""
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    mics = np.zeros((2, n))
    for f0, lag in ((120.0, 3), (210.0, -4)):
        pitch = f0 * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
        phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
        voice = sum(np.sin(k * phase) / k for k in range(1, 20))
        envelope = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6)), 0, 1)
        talker = 0.1 * voice * envelope
        mics[0] += talker
        mics[1] += np.roll(talker, lag)
    mics += 0.003 * rng.standard_normal(mics.shape)
    return mics.astype(np.float32)


def _machine() -> dict[str, str]:
    from . import _native

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "native_simd": _native.simd(),
        "threads": "1",
    }


def _native_step(model, tensors, config, kernels: str | None = None) -> Step:
    from . import _native
    from .engine import NativeEngine

    _native.select_kernels(kernels or _native.kernel_sets()[-1])
    engine = NativeEngine(config, tensors)
    out = np.zeros((config.net.sources, config.net.channels, CHUNK), np.float32)

    def step(chunk, hint):
        engine.process_into(chunk, hint, out)
        return out

    return step


def _eager_step(model, tensors, config) -> Step:
    import torch

    state = [model.initial_state()]
    boosted = config.role == "boosted"

    def step(chunk, hint):
        x = torch.from_numpy(chunk)[None]
        with torch.no_grad():
            if boosted:
                h = None if hint is None else torch.from_numpy(hint)[None]
                out, _, state[0] = model.step(x, state[0], h)
            else:
                out, _, state[0] = model.step(x, state[0])
        return out[0].numpy()

    return step


def _fixed(model, config):
    import torch

    from .reference.export import FixedStateStep

    fixed = FixedStateStep(model).eval()
    chunk = torch.zeros(1, config.net.channels, CHUNK)
    no_hint = torch.zeros(1, fixed.hint_channels, N_BINS)
    return fixed, chunk, no_hint


def _torchscript_step(model, tensors, config) -> Step:
    import torch

    fixed, chunk0, no_hint = _fixed(model, config)
    state = fixed.initial_state()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.freeze(torch.jit.trace(fixed, (chunk0, no_hint, *state)))

    def step(chunk, hint):
        h = no_hint if hint is None else torch.from_numpy(hint)[None]
        with torch.no_grad():
            out, *state[:] = traced(torch.from_numpy(chunk)[None], h, *state)
        return out[0].numpy()

    return step


def _onnx_step(model, tensors, config) -> Step:
    import onnxruntime as ort
    import torch

    fixed, chunk0, no_hint = _fixed(model, config)
    state = fixed.initial_state()
    names = ["chunk", "hint"] + [f"state_in{i}" for i in range(len(state))]
    outputs = ["out"] + [f"state_out{i}" for i in range(len(state))]
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            fixed,
            (chunk0, no_hint, *state),
            buffer,
            input_names=names,
            output_names=outputs,
            opset_version=17,
            dynamo=False,
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
    used = {i.name for i in session.get_inputs()}  # the exporter drops unused inputs
    feeds = {n: s.numpy() for n, s in zip(names[2:], state, strict=True)}
    zero_hint = no_hint.numpy()

    def step(chunk, hint):
        feeds["chunk"] = chunk[None]
        feeds["hint"] = zero_hint if hint is None else hint[None]
        result = session.run(None, {k: v for k, v in feeds.items() if k in used})
        for i in range(len(state)):
            feeds[f"state_in{i}"] = result[1 + i]
        return result[0][0]

    return step


MAKERS = {
    "native": _native_step,
    "eager": _eager_step,
    "torchscript": _torchscript_step,
    "onnxruntime": _onnx_step,
}


def _makers(backends: list[str]) -> dict[str, Callable]:
    """Backend name -> step maker, eager first (the reference), native per kernel set."""
    from . import _native

    makers = {"eager": _eager_step}
    for b in backends:
        makers[b] = MAKERS[b]
        if b == "native":
            for k in reversed(_native.kernel_sets()[:-1]):
                makers[f"native-{k}"] = lambda m, t, c, k=k: _native_step(m, t, c, k)
    return makers


def _time(step: Step, chunks: np.ndarray, hints: list) -> tuple[np.ndarray, np.ndarray]:
    outs = np.zeros((len(chunks), *step(chunks[0], hints[0]).shape), np.float32)
    times = np.zeros(len(chunks))
    for i in range(len(chunks)):
        start = time.perf_counter_ns()
        out = step(chunks[i], hints[i])
        times[i] = time.perf_counter_ns() - start
        outs[i] = out
    return times / 1e3, outs


def run_bench(
    seconds: float,
    json_path: Path | None,
    configs: list[str],
    backends: list[str],
    progress: Callable[[str], None] = print,
) -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import gc

    import torch

    from .alloc_check import count_allocations
    from .model_files import random_weights
    from .reference import build_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    mixture = synth_mixture(seconds, rng)
    n = mixture.shape[1] // CHUNK
    results = []
    for name in configs:
        config = PRESETS[CONFIGS[name]]
        tensors = random_weights(config)
        model = build_model(config).eval()
        model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()})
        m = config.net.channels
        chunks = np.ascontiguousarray(
            mixture[:m, : n * CHUNK].reshape(m, n, CHUNK).transpose(1, 0, 2)
        )
        warm = np.ascontiguousarray(chunks[:WARMUP])
        hints: list = [None] * n
        if config.boost is not None:
            h = rng.standard_normal((n, config.boost.hint_channels, N_BINS)).astype(np.float32)
            hints = [h[i] if i % 3 else None for i in range(n)]
        reference = None
        for backend, make in _makers(backends).items():
            progress(f"  {name:<8} {backend:<14} building")
            try:
                _time(make(model, tensors, config), warm, hints[:WARMUP])
                step = make(model, tensors, config)  # fresh state
            except Exception as e:  # a backend that cannot run here is reported, not fatal
                progress(f"  {name:<8} {backend:<14} unavailable: {type(e).__name__}: {e}")
                results.append({"config": name, "backend": backend, "error": str(e)})
                continue
            progress(f"  {name:<8} {backend:<14} timing {n} chunks")
            gc.collect()
            gc.disable()
            try:
                times, outs = _time(step, chunks, hints)
            finally:
                gc.enable()
            if backend == "eager":
                reference = outs
            results.append(
                {
                    "config": name,
                    "backend": backend,
                    "median_us": float(np.median(times)),
                    "p99_us": float(np.percentile(times, 99)),
                    "p999_us": float(np.percentile(times, 99.9)),
                    "max_us": float(times.max()),
                    "max_abs_err": float(np.abs(outs - reference).max()),
                }
            )
    from . import _native

    _native.select_kernels(_native.kernel_sets()[-1])
    progress("  counting allocations in the native step")
    counts = count_allocations([CONFIGS[c] for c in configs], chunks=2000)
    allocations = None
    if counts is not None:
        allocations = {
            c: counts[f"{CONFIGS[c]}.process"] / counts[f"{CONFIGS[c]}.chunks"] for c in configs
        }
    report = {
        "machine": _machine(),
        "seconds": seconds,
        "chunks": n,
        "results": results,
        "allocations_per_chunk": allocations,
    }
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + "\n")
    return report


def format_table(report: dict) -> str:
    rows = [r for r in report["results"] if "median_us" in r]
    eager = {r["config"]: r["median_us"] for r in rows if r["backend"] == "eager"}
    lines = [
        f"{'config':<9}{'backend':<16}{'median us':>10}{'p99 us':>9}{'p99.9 us':>10}"
        f"{'max us':>9}{'x eager':>9}{'max |err|':>11}"
    ]
    lines.append("-" * len(lines[0]))
    for r in rows:
        speedup = eager.get(r["config"], float("nan")) / r["median_us"]
        lines.append(
            f"{r['config']:<9}{r['backend']:<16}{r['median_us']:>10.1f}"
            f"{r['p99_us']:>9.1f}{r['p999_us']:>10.1f}{r['max_us']:>9.1f}"
            f"{speedup:>9.1f}{r['max_abs_err']:>11.1e}"
        )
    for r in report["results"]:
        if "error" in r:
            lines.append(f"{r['config']:<9}{r['backend']:<16}unavailable: {r['error'][:60]}")
    m = report["machine"]
    lines.append(
        f"\n{report['chunks']} chunks ({report['seconds']:g} s of audio at "
        f"{SAMPLE_RATE} Hz), batch 1, one thread; {m['cpu']}, native kernels: "
        f"{m['native_simd']}, torch {m['torch']}."
    )
    alloc = report["allocations_per_chunk"]
    if alloc is None:
        lines.append("Allocations per chunk: not measured (malloc counter unavailable).")
    else:
        lines.append(
            "Heap allocations per chunk in the native step: "
            + ", ".join(f"{k} {v:g}" for k, v in alloc.items())
        )
    return "\n".join(lines)
