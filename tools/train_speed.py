"""Training throughput on this CPU: audio seconds trained per wall second, side by side.

    python tools/train_speed.py [--cache data/cache] [--steps 12] [--models small,large]
        [--variants ...] [--profile] [--json out/train-speed.json]

Each variant runs the whole training step of `kboost-rt train` (mix a batch,
forward, loss, backward, clip, Adam) on the same model and batch shape; the
variants are interleaved round by round so that a change in the machine's
load hits them all alike, and each reports its median step. `--profile`
prints where a baseline step's time goes, by operator. Pause any background
training while this runs: it measures the machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from kboost_rt.reference import layers
from kboost_rt.reference.io import build_model
from kboost_rt.training.campaign import campaign_recipes
from kboost_rt.training.mixing import Mixer
from kboost_rt.training.recipes import RECIPES
from kboost_rt.training.torch_mixing import TorchMixer
from kboost_rt.training.trainer import pit_si_sdr

VARIANTS = {
    "baseline": "as `kboost-rt train` today: scipy mixing, float32, torch's default threads",
    "torch-mix": "batch mixed by TorchMixer (batched FFT convolution) instead of scipy",
    "bf16": "torch-mix + bfloat16 autocast of forward and loss",
    "threads-1": "torch-mix with one intra-op thread",
    "compile": "torch-mix + torch.compile of the model (compile time not counted)",
    "batch-16": "torch-mix with 16 clips a step instead of 8 (fewer steps per audio hour)",
    "bf16-batch-16": "bf16 with 16 clips a step",
    "unfused-norm": "torch-mix with the attention projections' PReLU and LayerNorm as they "
    "were before (elementwise torch ops): the before of that change",
}


def _projection_unfused(self, x: torch.Tensor) -> torch.Tensor:
    """layers.Projection.forward before PReLU and LayerNorm were fused."""
    b, _, t, f = x.shape
    y = torch.einsum("oi,bitf->botf", self.weight, x) + self.bias[:, None, None]
    y = y.view(b, self.heads, self.per_head, t, f)
    y = torch.where(y >= 0, y, self.prelu[:, None, None, None] * y)
    mean = y.mean(dim=(2, 4), keepdim=True)
    var = y.var(dim=(2, 4), keepdim=True, unbiased=False)
    y = (y - mean) / torch.sqrt(var + layers.EPS)
    return y * self.norm_weight[:, :, None, :] + self.norm_bias[:, :, None, :]


def _model(kind: str) -> tuple[torch.nn.Module, int, float]:
    """small / large: the shipped recipes' models; paper-large: the GPU campaign's."""
    recipe = (
        campaign_recipes("separate")["separate-large"]
        if kind == "paper-large"
        else RECIPES[f"separate-{kind}"]
    )
    torch.manual_seed(0)
    return build_model(recipe.model_config()), 8, recipe.seconds


class Bench:
    def __init__(self, kind: str, variant: str, cache: Path):
        self.kind, self.variant = kind, variant
        model, self.batch, self.seconds = _model(kind)
        if variant.endswith("batch-16"):
            self.batch = 16
        self.model = copy.deepcopy(model).train()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.samples = int(self.seconds * 16000)
        self.rng = np.random.default_rng(0)
        self.mixer = Mixer(cache, "separate", "train")
        self.torch_mixer = None
        if variant != "baseline":
            speech = [np.asarray(c, np.float32) / 32768 for c in self.mixer.speech.clips]
            noise = [np.asarray(c, np.float32) / 32768 for c in self.mixer.noise.clips]
            self.torch_mixer = TorchMixer(
                "separate", speech, noise, np.asarray(self.mixer.rooms), "cpu", seed=0
            )
        self.forward = self.model
        self.compile_seconds = 0.0
        if variant == "compile":
            self.forward = torch.compile(self.model)

    def batch_(self):
        if self.torch_mixer is None:
            x, y = self.mixer.batch(self.batch, self.samples, self.rng)
            return torch.from_numpy(x), torch.from_numpy(y)
        return self.torch_mixer.batch(self.batch, self.samples)

    def step(self) -> float:
        threads = torch.get_num_threads()
        if self.variant == "threads-1":
            torch.set_num_threads(1)
        fused = layers.Projection.forward
        if self.variant == "unfused-norm":
            layers.Projection.forward = _projection_unfused
        start = time.perf_counter()
        x, y = self.batch_()
        if self.variant.startswith("bf16"):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                est = self.forward(x)[0]
            loss = -pit_si_sdr(est.float(), y).mean()
        else:
            loss = -pit_si_sdr(self.forward(x)[0], y).mean()
        self.opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.opt.step()
        took = time.perf_counter() - start
        torch.set_num_threads(threads)
        layers.Projection.forward = fused
        return took


def profile(kind: str, cache: Path) -> list[dict]:
    bench = Bench(kind, "baseline", cache)
    bench.step()
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    mix_start = time.perf_counter()
    bench.batch_()
    mix = time.perf_counter() - mix_start
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        bench.step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    rows = []
    for e in events[:12]:
        ms = e.self_cpu_time_total / 1e3
        rows.append({"op": e.key, "self_ms": ms, "share": e.self_cpu_time_total / total})
    print(f"\n{kind}: one baseline step, {total / 1e3:.0f} ms of operator time "
          f"(mixing the batch alone: {mix * 1e3:.0f} ms)")  # fmt: skip
    for r in rows:
        print(f"  {r['op']:<44}{r['self_ms']:>9.1f} ms {r['share']:>6.1%}")
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", default="data/cache")
    p.add_argument("--steps", type=int, default=12, help="timed steps per variant")
    p.add_argument("--models", default="small,large", help="small, large, paper-large")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--profile", action="store_true")
    p.add_argument("--json", default="out/train-speed.json")
    args = p.parse_args()
    cache = Path(args.cache)
    report = {"threads": torch.get_num_threads(), "torch": torch.__version__, "results": []}
    for kind in args.models.split(","):
        benches = [Bench(kind, v, cache) for v in args.variants.split(",")]
        for b in benches:  # warm-up (and compilation)
            start = time.perf_counter()
            b.step()
            b.step()
            b.compile_seconds = time.perf_counter() - start
        times: dict[str, list[float]] = {b.variant: [] for b in benches}
        for _ in range(args.steps):
            for b in benches:
                times[b.variant].append(b.step())
        base = None
        if "baseline" in times:
            b0 = next(b for b in benches if b.variant == "baseline")
            base = b0.batch * b0.seconds / statistics.median(times["baseline"])
        print(f"\nseparate-{kind}: batch {benches[0].batch} x {benches[0].seconds:g} s, "
              f"median of {args.steps} steps, interleaved")  # fmt: skip
        print(f"{'variant':<15}{'step ms':>9}{'audio s/s':>11}{'vs baseline':>13}")
        for b in benches:
            med = statistics.median(times[b.variant])
            rate = b.batch * b.seconds / med
            ratio = rate / base if base else float("nan")  # audio trained per second
            print(f"{b.variant:<15}{med * 1e3:>9.0f}{rate:>11.1f}{ratio:>12.2f}x")
            report["results"].append(
                {
                    "model": f"separate-{kind}",
                    "variant": b.variant,
                    "what": VARIANTS[b.variant],
                    "batch": b.batch,
                    "clip_seconds": b.seconds,
                    "median_step_s": med,
                    "audio_seconds_per_second": rate,
                    "speedup_vs_baseline": ratio,
                    "steps": times[b.variant],
                    "warmup_s": b.compile_seconds,
                }
            )
        if args.profile:
            report.setdefault("profile", {})[kind] = profile(kind, cache)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
