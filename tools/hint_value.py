"""How much is a stale large-model estimate worth next to the small model's fresh one?

    python tools/hint_value.py --task separate --data data/eval/separate-val \
        [--small models/separate-small] [--large models/separate-large] [--delays 0,1,3,6]

A hint reaches the small model d chunks late. This tool asks what the large
model's estimate is still worth by then, without any boosted model: it takes
the large model's mask of frame t-d (each source's share of every bin, per
microphone) and applies it to the mixture of frame t, then scores the result
(SI-SDRi, dB, permutation-invariant) next to the small model's own output and
its own mask of frame t. If the stale large mask does not beat the small
model's fresh mask, the hint carries little the small model does not already
have, and no merge layer can turn it into a large gain. Needs torch (offline
forward passes of the reference models).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kboost_rt.evaluate import TASKS, load_examples, si_sdr_improvement
from kboost_rt.reference.io import load_model
from kboost_rt.reference.models import _complex  # the output maps' layout, in one place
from kboost_rt.reference.stft import istft, stft


def spectra(model: torch.nn.Module, mixture: np.ndarray, sources: int) -> tuple:
    """The model's output and the mixture as complex spectra [S, M, T, F] and [M, T, F]."""
    x = torch.from_numpy(mixture).float()[None]
    with torch.no_grad():
        maps = model(x)[1][0]
    return _complex(maps[None], sources, x.shape[1])[0], stft(x[0])


def stale_mask(estimate: torch.Tensor, mix: torch.Tensor, delay: int) -> torch.Tensor:
    """Each source's share of every bin in frame t-d, for frame t (zeros before
    any frame has arrived). The shares are of the estimated sources plus what
    they leave of the mixture: which talker, or the noise, owns a bin changes
    slowly, while phase does not survive a delay."""
    rest = (mix - estimate.sum(0)).abs()
    mask = estimate.abs() / (estimate.abs().sum(0) + rest + 1e-8)
    return F.pad(mask, (0, 0, delay, 0))[..., : mask.shape[-2], :]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=sorted(TASKS), required=True)
    ap.add_argument("--data", type=Path, required=True, help="an eval-format folder")
    ap.add_argument("--small", type=Path, help="default models/<task>-small")
    ap.add_argument("--large", type=Path, help="default models/<task>-large")
    ap.add_argument("--delays", default="0,1,3,6", help="chunks, comma-separated")
    args = ap.parse_args(argv)
    delays = [int(d) for d in args.delays.split(",")]
    small, cfg = load_model(args.small or Path("models") / f"{args.task}-small")
    large, _ = load_model(args.large or Path("models") / f"{args.task}-large")
    small.eval(), large.eval()
    sources, channels = TASKS[args.task], cfg.net.channels
    examples = load_examples(args.data, args.task, channels)

    scores: dict[str, list[float]] = {}

    def score(key: str, spec: torch.Tensor, ex) -> None:
        audio = istft(spec, ex.mixture.shape[-1]).numpy()
        scores.setdefault(key, []).append(si_sdr_improvement(audio, ex.sources, ex.mixture))

    for i, ex in enumerate(examples):
        own, mix = spectra(small, ex.mixture, sources)
        big, _ = spectra(large, ex.mixture, sources)
        score("small output", own, ex)
        score("small mask, fresh", stale_mask(own, mix, 0) * mix, ex)
        score("large output", big, ex)
        for d in delays:
            score(f"large mask, {d} chunk{'s' * (d != 1)} old", stale_mask(big, mix, d) * mix, ex)
        print(f"\r{i + 1}/{len(examples)} examples", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    print(f"{args.task}, {len(examples)} examples from {args.data}: SI-SDRi, dB")
    print("| estimate | SI-SDRi |\n|---|---|")
    for key, values in scores.items():
        print(f"| {key} | {np.mean(values):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
