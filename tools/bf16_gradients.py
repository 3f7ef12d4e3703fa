"""How far bfloat16 autocast moves a training step's gradient, next to how far
the batch draw moves it anyway.

    python tools/bf16_gradients.py [--models enhance-large,enhance-small] [--batches 4]

For each shipped model (train mode, its shipped weights) and each of a few
training batches (8 x 1 s): the gradient of the training loss in float32 and
under bfloat16 autocast, their cosine and relative difference; then the
float32 gradients of consecutive batches against each other. Needs the
training extras (torch) and the data cache (`kboost-rt data build`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from kboost_rt.model_files import shipped_models_dir
from kboost_rt.reference.io import load_model
from kboost_rt.training.mixing import Mixer
from kboost_rt.training.trainer import pit_si_sdr


def gradient(model, x, y, bf16: bool) -> tuple[torch.Tensor, float]:
    model.zero_grad()
    if bf16:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            est = model(x)[0]
        loss = -pit_si_sdr(est.float(), y).mean()
    else:
        loss = -pit_si_sdr(model(x)[0], y).mean()
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()]), loss.item()


def compare(a: torch.Tensor, b: torch.Tensor) -> str:
    cos = torch.nn.functional.cosine_similarity(a, b, dim=0).item()
    return f"cosine {cos:.4f}, relative difference {((b - a).norm() / a.norm()).item():.3f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="enhance-large,enhance-small")
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--cache", default="data/cache")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    for name in args.models.split(","):
        model, cfg = load_model(shipped_models_dir() / name)
        model.train()
        mixer = Mixer(Path(args.cache), cfg.task, "train")
        rng = np.random.default_rng(5)
        plain = []
        for b in range(args.batches):
            x, y = (torch.from_numpy(a) for a in mixer.batch(8, 16000, rng))
            g32, loss32 = gradient(model, x, y, bf16=False)
            g16, loss16 = gradient(model, x, y, bf16=True)
            plain.append(g32)
            print(f"{name} batch {b}: loss {loss32:.4f} (float32) {loss16:.4f} (bfloat16); "
                  f"bfloat16 against float32: {compare(g32, g16)}", flush=True)  # fmt: skip
        for b in range(1, len(plain)):
            print(f"{name} float32, batch {b - 1} against batch {b}: "
                  f"{compare(plain[b - 1], plain[b])}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
