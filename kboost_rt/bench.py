"""`kboost-rt bench`: one streaming step per chunk, batch 1, one thread, for
each model and backend in the same run, against the PyTorch eager reference.

Backends:
- native: the C++ engine (`NativeEngine.process_into`, timed from Python).
- eager: the PyTorch reference `model.step` (the reference for max_abs_err).
- torchscript: `torch.jit.trace` + `torch.jit.freeze` of the fixed-state step
  (kboost_rt.reference.export.FixedStateStep).
- onnxruntime: the same fixed-state step exported to ONNX (opset 17), run by
  ONNX Runtime with one intra-op thread and its state fed back each chunk.
- torch-compile: `torch.compile` of the fixed-state step (inductor; it takes
  minutes to compile, so it runs only when asked for).

The configs are the paper sizes with random (seeded) weights, or any model
folder (`--model`: shipped, trained by `kboost-rt train`) with its own
weights; timing does not depend on them. The audio is a generated
two-talker mixture; boosted models get a hint on 2 of 3 chunks. The
backends take turns over the audio, 125 chunks (1 s of audio) at a time, so
that a machine whose speed drifts (shared VMs do, by a third and more) slows
them alike; each turn's first chunk is run but not timed. Each
backend's misses of the 8 ms deadline are counted, and with `--json` a PNG
of the per-chunk latency distributions (CDF per backend) is written beside it.
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

BACKENDS = ("native", "eager", "torchscript", "onnxruntime", "torch-compile")
DEFAULT_BACKENDS = ("native", "eager", "torchscript", "onnxruntime")
DEADLINE_US = 1e6 * CHUNK / SAMPLE_RATE  # one chunk: 8 ms
# The native engine is also timed with each slower kernel set this CPU runs,
# as "native-<set>" (e.g. native-avx2), so machines without AVX-512 can be judged.
CONFIGS = {"small": "paper-small", "boosted": "paper-boosted", "large": "paper-large"}
WARMUP = 30
BLOCK = 125  # chunks per turn (1 s of audio) when the backends take turns

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

    name = kernels or _native.kernel_sets()[-1]
    engine = NativeEngine(config, tensors)
    out = np.zeros((config.net.sources, config.net.channels, CHUNK), np.float32)
    if config.boost is not None and config.boost.any_delay:  # each hint at age 1
        age = np.ones(1, np.int32)
        none = np.zeros((0, config.boost.hint_channels, N_BINS), np.float32)

        def step(chunk, hint):
            if hint is None:
                engine.process_aged_into(chunk, none, age[:0], out)
            else:
                engine.process_aged_into(chunk, hint[None], age, out)
            return out

    else:

        def step(chunk, hint):
            engine.process_into(chunk, hint, out)
            return out

    step.prepare = lambda: _native.select_kernels(name)  # the kernel set is process-wide
    return step


def _eager_step(model, tensors, config) -> Step:
    import torch

    state = [model.initial_state()]
    boosted = config.role == "boosted"
    any_delay = boosted and config.boost.any_delay

    def step(chunk, hint):
        x = torch.from_numpy(chunk)[None]
        with torch.no_grad():
            if any_delay:  # each hint at age 1, as the native step gets it
                h = [] if hint is None else [(torch.from_numpy(hint)[None], 1)]
                out, _, state[0] = model.step(x, state[0], hints=h)
            elif boosted:
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


def _compile_step(model, tensors, config) -> Step:
    import torch

    fixed, chunk0, no_hint = _fixed(model, config)
    state = fixed.initial_state()
    compiled = torch.compile(fixed, dynamic=False)

    def step(chunk, hint):
        h = no_hint if hint is None else torch.from_numpy(hint)[None]
        with torch.no_grad():
            out, *state[:] = compiled(torch.from_numpy(chunk)[None], h, *state)
        return out[0].numpy()

    return step


MAKERS = {
    "native": _native_step,
    "eager": _eager_step,
    "torchscript": _torchscript_step,
    "onnxruntime": _onnx_step,
    "torch-compile": _compile_step,
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


def _time(steps: dict[str, Step], chunks: np.ndarray, hints: list) -> dict[str, tuple]:
    """Every backend over the same chunks, taking turns a block at a time, so
    that a machine whose speed drifts (a shared VM) slows all of them alike.
    Each backend's first chunk of a turn runs untimed (NaN): its caches then
    hold another backend's data. -> backend: (times in us, outputs)."""
    n = len(chunks)
    times = {b: np.full(n, np.nan) for b in steps}
    outs: dict[str, np.ndarray] = {}
    for start in range(0, n, BLOCK):
        for backend, step in steps.items():
            prepare = getattr(step, "prepare", None)
            if prepare is not None:
                prepare()
            for i in range(start, min(start + BLOCK, n)):
                begin = time.perf_counter_ns()
                out = step(chunks[i], hints[i])
                if i > start:
                    times[backend][i] = (time.perf_counter_ns() - begin) / 1e3
                if backend not in outs:
                    outs[backend] = np.zeros((n, *out.shape), np.float32)
                outs[backend][i] = out
    return {b: (times[b], outs[b]) for b in steps}


def _subjects(configs: list[str], models: list[str]) -> list[tuple[str, object, dict, str]]:
    """(label, config, tensors, what the allocation counter builds) per subject:
    the paper-size presets with random weights, then the model folders asked for."""
    from .model_files import load_model_files, random_weights
    from .model_select import resolve_model

    subjects = []
    for name in configs:
        config = PRESETS[CONFIGS[name]]
        subjects.append((name, config, random_weights(config), CONFIGS[name]))
    for model in models:
        files = load_model_files(resolve_model(model))
        subjects.append((files.name, files.config, files.tensors, str(files.path)))
    return subjects


def run_bench(
    seconds: float,
    json_path: Path | None,
    configs: list[str],
    backends: list[str],
    progress: Callable[[str], None] = print,
    models: list[str] = (),
    breakdown: bool = False,
) -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import gc

    import torch

    from .alloc_check import count_allocations
    from .reference import build_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    mixture = synth_mixture(seconds, rng)
    n = mixture.shape[1] // CHUNK
    results = []
    latencies: dict[str, dict[str, np.ndarray]] = {}
    report_breakdown: list[dict] = []
    subjects = _subjects(configs, list(models))
    for name, config, tensors, _ in subjects:
        if config.role == "large":  # as the server runs it: without the hint generator
            tensors = {k: v for k, v in tensors.items() if not k.startswith("hint_generator.")}
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
        steps, unavailable = {}, []
        for backend, make in _makers(backends).items():
            progress(f"  {name:<8} {backend:<14} building")
            try:
                _time({backend: make(model, tensors, config)}, warm, hints[:WARMUP])
                steps[backend] = make(model, tensors, config)  # fresh state
            except Exception as e:  # a backend that cannot run here is reported, not fatal
                progress(f"  {name:<8} {backend:<14} unavailable: {type(e).__name__}: {e}")
                unavailable.append({"config": name, "backend": backend, "error": str(e)})
        progress(f"  {name:<8} timing {n} chunks, {len(steps)} backends taking turns")
        gc.collect()
        gc.disable()
        try:
            timed = _time(steps, chunks, hints)
        finally:
            gc.enable()
        reference = timed["eager"][1] if "eager" in timed else None
        for backend, (times, outs) in timed.items():
            times = times[~np.isnan(times)]
            latencies.setdefault(name, {})[backend] = times
            err = float("nan") if reference is None else float(np.abs(outs - reference).max())
            results.append(
                {
                    "config": name,
                    "backend": backend,
                    "median_us": float(np.median(times)),
                    "p99_us": float(np.percentile(times, 99)),
                    "p999_us": float(np.percentile(times, 99.9)),
                    "max_us": float(times.max()),
                    "deadline_misses": int((times > DEADLINE_US).sum()),
                    "max_abs_err": err,
                }
            )
        results.extend(unavailable)
        if breakdown:
            progress(f"  {name:<8} native         timing each stage")
            stages = stage_breakdown(config, tensors, chunks, hints)
            report_breakdown.append({"config": name, **stages})
    from . import _native

    _native.select_kernels(_native.kernel_sets()[-1])
    progress("  measuring this core's arithmetic peak")
    floor = compute_floor(subjects, results, _native.peak_gflops(0.2))
    progress("  counting allocations in the native step")
    built = [built for *_, built in subjects]
    counts = count_allocations(built, chunks=2000)
    allocations = None
    if counts is not None:
        allocations = {
            name: counts[f"{b}.process"] / counts[f"{b}.chunks"] for name, *_, b in subjects
        }
    report = {
        "machine": _machine(),
        "seconds": seconds,
        "chunks": n,
        "results": results,
        "allocations_per_chunk": allocations,
        "floor": floor,
    }
    if breakdown:
        report["breakdown"] = report_breakdown
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        png = json_path.with_suffix(".png")
        if plot_latencies(latencies, png):
            report["plot"] = str(png)
        json_path.write_text(json.dumps(report, indent=2) + "\n")
    return report


def compute_floor(subjects: list, results: list[dict], peak_gflops: float) -> dict:
    """How close the native step is to the arithmetic alone: each model's
    multiply-adds (`costs.macs_per_chunk`) at the peak rate of one core."""
    from .costs import macs_per_chunk

    rows = []
    medians = {(r["config"], r["backend"]): r["median_us"] for r in results if "median_us" in r}
    for name, config, *_ in subjects:
        macs = macs_per_chunk(config)["device"]
        floor_us = 2 * macs / (peak_gflops * 1e3)
        row = {"config": name, "macs": macs, "floor_us": floor_us}
        native = medians.get((name, "native"))
        others = {b: t for (c, b), t in medians.items()
                  if c == name and not b.startswith("native")}  # fmt: skip
        if native is not None:
            row["native_x_floor"] = native / floor_us
        if others:
            best = min(others, key=others.get)
            row["best_other"], row["best_other_us"] = best, others[best]
            row["tenfold_us"] = others[best] / 10  # what 10x that backend would need
            row["tenfold_x_floor"] = row["tenfold_us"] / floor_us
        rows.append(row)
    from . import _native

    return {"peak_gflops": peak_gflops, "kernels": _native.simd(), "configs": rows}


def stage_breakdown(config, tensors: dict, chunks: np.ndarray, hints: list) -> dict:
    """Where the native step's time goes: each stage timed inside the real step
    (the best kernel set, the caches as the whole step leaves them), with the
    step timed without the stage clock beside it for the clock's own cost."""
    from . import _native
    from .engine import NativeEngine

    _native.select_kernels(_native.kernel_sets()[-1])
    hint_arr = None
    if config.boost is not None:  # every chunk with a hint: the same work as without
        c_h = config.boost.hint_channels
        hint_arr = np.stack(
            [h if h is not None else np.zeros((c_h, N_BINS), np.float32) for h in hints]
        )
    engine = NativeEngine(config, tensors)
    engine.time_chunks(chunks[:WARMUP], None if hint_arr is None else hint_arr[:WARMUP])
    names, indices, ns = engine.time_stages(chunks, hint_arr)
    plain = engine.time_chunks(chunks, hint_arr)
    per_stage = np.median(ns, axis=0) / 1e3
    step = float(np.median(ns.sum(axis=1))) / 1e3
    stages = [
        {
            "stage": name if index < 0 else f"{name} [{index}]",
            "median_us": float(us),
            "share": float(us / per_stage.sum()),
        }
        for name, index, us in zip(names, indices, per_stage, strict=True)
    ]
    kinds: dict[str, float] = {}
    for name, us in zip(names, per_stage, strict=True):
        kinds[name] = kinds.get(name, 0.0) + float(us)
    return {
        "stages": stages,
        "by_kind": [
            {"stage": k, "median_us": v, "share": v / per_stage.sum()}
            for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])
        ],
        "step_median_us": step,
        "step_median_us_unclocked": float(np.median(plain)) / 1e3,
    }


def format_breakdown(report: dict) -> str:
    lines = []
    for b in report.get("breakdown", []):
        lines.append(
            f"\n{b['config']}: the native step by stage (median us; the stage clock "
            f"on: {b['step_median_us']:.1f} us a step, off: "
            f"{b['step_median_us_unclocked']:.1f} us)"
        )
        for row in b["by_kind"]:
            lines.append(f"  {row['stage']:<22}{row['median_us']:>9.1f}{row['share']:>8.1%}")
        detail = ", ".join(f"{s['stage']} {s['median_us']:.1f}" for s in b["stages"])
        lines.append(f"  each: {detail}")
    return "\n".join(lines)


def plot_latencies(latencies: dict[str, dict[str, np.ndarray]], path: Path) -> bool:
    """Per-chunk latency CDFs, one panel per config, one line per backend, the
    8 ms deadline marked; False (and a note) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no latency plot (pip install 'kboost-rt[eval]')")
        return False
    if not latencies:
        return False
    fig, axes = plt.subplots(1, len(latencies), figsize=(5 * len(latencies), 3.6), squeeze=False)
    for ax, (name, per_backend) in zip(axes[0], latencies.items(), strict=True):
        for backend, times in per_backend.items():
            x = np.sort(times)
            ax.plot(x, np.arange(1, len(x) + 1) / len(x), label=backend)
        ax.axvline(DEADLINE_US, color="k", linestyle="--", label="8 ms deadline")
        ax.set_xscale("log")
        ax.set_xlabel("step time per chunk (us)")
        ax.set_ylabel("share of chunks")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def format_table(report: dict) -> str:
    rows = [r for r in report["results"] if "median_us" in r]
    eager = {r["config"]: r["median_us"] for r in rows if r["backend"] == "eager"}
    lines = [
        f"{'config':<22}{'backend':<16}{'median us':>10}{'p99 us':>9}{'p99.9 us':>10}"
        f"{'max us':>9}{'misses':>8}{'x eager':>9}{'max |err|':>11}"
    ]
    lines.append("-" * len(lines[0]))
    for r in rows:
        speedup = eager.get(r["config"], float("nan")) / r["median_us"]
        lines.append(
            f"{r['config']:<22}{r['backend']:<16}{r['median_us']:>10.1f}"
            f"{r['p99_us']:>9.1f}{r['p999_us']:>10.1f}{r['max_us']:>9.1f}"
            f"{r['deadline_misses']:>8d}{speedup:>9.1f}{r['max_abs_err']:>11.1e}"
        )
    for r in report["results"]:
        if "error" in r:
            lines.append(f"{r['config']:<22}{r['backend']:<16}unavailable: {r['error'][:60]}")
    m = report["machine"]
    lines.append(
        f"\n{report['chunks']} chunks ({report['seconds']:g} s of audio at "
        f"{SAMPLE_RATE} Hz), batch 1, one thread; {m['cpu']}, native kernels: "
        f"{m['native_simd']}, torch {m['torch']}. misses: chunks over the "
        f"{DEADLINE_US / 1000:g} ms deadline."
    )
    floor = report.get("floor")
    if floor:
        lines.append(
            f"Compute floor: each step's multiply-adds at this core's measured peak, "
            f"{floor['peak_gflops']:.1f} GFLOP/s ({floor['kernels']} kernels):"
        )
        for f in floor["configs"]:
            line = f"  {f['config']}: {f['macs'] / 1e6:.2f} M MACs, {f['floor_us']:.1f} us"
            if "native_x_floor" in f:
                line += f"; native {f['native_x_floor']:.2f}x the floor"
            if "tenfold_us" in f:
                line += (
                    f"; 10x {f['best_other']} would be {f['tenfold_us']:.1f} us, "
                    f"{f['tenfold_x_floor']:.2f}x the floor"
                )
            lines.append(line)
    alloc = report["allocations_per_chunk"]
    if alloc is None:
        lines.append("Allocations per chunk: not measured (malloc counter unavailable).")
    else:
        lines.append(
            "Heap allocations per chunk in the native step: "
            + ", ".join(f"{k} {v:g}" for k, v in alloc.items())
        )
    return "\n".join(lines)
