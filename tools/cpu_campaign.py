"""Train a shipped model further on this machine's CPU, in the background,
until a GPU run replaces it (issue 14's CPU campaign).

The model goes on under its recipe's next version: the same recipe with
more steps (and, if given, another peak learning rate), from the shipped
weights and step count with a fresh optimiser (`Run` does that when `--out`
holds an earlier version of the recipe's model and there is no checkpoint).
The run checkpoints into OUT/work/ every two minutes; the same command
resumes it, also in a later session. OUT/NAME/ is the best validation model
so far, never worse than the shipped one; the closing line says whether it
beats it. To ship it, give the recipe that version and step count in
`kboost_rt/training/recipes.py`, copy the folder into `models/`, and retrain
the boosted models on a new large model's hints.

    nice -n 19 python tools/cpu_campaign.py enhance-large --steps 4500 \\
        --out data/campaign > data/campaign/enhance-large.log 2>&1 &

Needs the training extras (torch) and the data cache (`kboost-rt data build`).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from pathlib import Path

from kboost_rt.model_files import shipped_models_dir
from kboost_rt.training.recipes import RECIPES, Recipe
from kboost_rt.training.trainer import Run


def campaign_recipe(
    name: str, steps: int, lr: float | None = None, autocast: str | None = None
) -> Recipe:
    """The shipped recipe's next version, trained to `steps` in all."""
    if name not in RECIPES:
        raise SystemExit(f"unknown recipe {name!r} (choose from {', '.join(RECIPES)})")
    shipped = RECIPES[name]
    if shipped.role == "boosted":
        raise SystemExit(f"{name}: a boosted model is retrained on its large model's hints, "
                         "not continued (kboost-rt train)")  # fmt: skip
    if steps <= shipped.steps:
        raise SystemExit(f"--steps {steps}: {name} has trained {shipped.steps} steps already")
    return dataclasses.replace(
        shipped,
        version=shipped.version + 1,
        steps=steps,
        lr=shipped.lr if lr is None else lr,
        autocast=shipped.autocast if autocast is None else autocast,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("recipe", help="a shipped large or small model, e.g. enhance-large")
    p.add_argument(
        "--steps", type=int, required=True, help="steps in all, the shipped ones included"
    )
    p.add_argument("--lr", type=float, help="peak learning rate (default: the recipe's)")
    p.add_argument(
        "--autocast",
        choices=["bfloat16", "float32"],
        help="bfloat16: forward passes under bfloat16 autocast (1.44x the large model's steps "
        "on an AVX-512 BF16 CPU; docs/training.md); default: the recipe's",
    )
    p.add_argument("--cache", default="data/cache", help="data cache (default: data/cache)")
    p.add_argument("--out", default="data/campaign", help="models and checkpoints go here")
    args = p.parse_args(argv)
    autocast = {"float32": "", None: None}.get(args.autocast, args.autocast)
    recipe = campaign_recipe(args.recipe, args.steps, args.lr, autocast)
    out = Path(args.out)
    folder, work = out / recipe.name, out / "work"
    if not (work / recipe.name / "checkpoint.pt").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(shipped_models_dir() / recipe.name, folder)
    run = Run(recipe, Path(args.cache), work, out)
    name = f"{recipe.name} v{recipe.version}"
    shipped = f"{run.shipped_score:.3f} dB"
    print(f"{name}: step {run.step} of {recipe.steps}; the shipped model scores {shipped} "
          "on the validation clips", flush=True)  # fmt: skip
    val = run.run(progress=True) if run.step < recipe.steps else run.export()
    verdict = "beats" if val["si_sdr_i"] > run.shipped_score else "does not beat"
    print(f"{name}: {run.step} steps, validation {val['si_sdr_i']:.3f} dB: {verdict} "
          f"the shipped model ({shipped}); wrote {folder}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
