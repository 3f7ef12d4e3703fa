"""The equal-audio control of an any-delay boosted model: its small model,
trained on as much audio as the boosted model.

The any-delay model starts from the task's fixed 8 ms model, which trained as
many steps as the small model, and trains more steps on top; its gain over
the shipped small model is then partly that extra training. This continues
the shipped small model for the same steps, at the same learning rate and
warm-up, and writes a models folder (the new small model beside copies of
the shipped large and boosted ones) that `kboost-rt eval --models` takes:

    python tools/equal_audio_small.py --task separate --out out/equal-audio
    kboost-rt eval --task separate --data data/eval/separate-test \\
        --models out/equal-audio/separate --json out/equal-audio/separate-test.json

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


def control_recipe(task: str) -> Recipe:
    """The small model's recipe, continued for the steps the any-delay model
    trained beyond the model it started from."""
    small, boosted = RECIPES[f"{task}-small"], RECIPES[f"{task}-boosted"]
    start = RECIPES[boosted.init]
    if start.steps != small.steps:
        raise SystemExit(
            f"{boosted.init} trained {start.steps} steps, {small.name} {small.steps}: "
            "the control assumes they trained as long"
        )
    return dataclasses.replace(
        small,
        version=small.version + 1,
        steps=boosted.steps,
        lr=boosted.lr,
        warmup=boosted.warmup,
        init=small.name,
        notes={"control": f"{small.name} continued for the steps of {boosted.name}"},
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=["separate", "enhance"], required=True)
    p.add_argument("--cache", default="data/cache", help="data cache (default: data/cache)")
    p.add_argument("--out", default="out/equal-audio", help="writes OUT/TASK/ (a models folder)")
    p.add_argument("--steps", type=int, help="train this many steps instead (a quick check)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    recipe = control_recipe(args.task)
    if args.steps:
        recipe = dataclasses.replace(recipe, steps=args.steps, val_every=max(1, args.steps))
    shipped = shipped_models_dir()
    models = Path(args.out) / args.task
    # A new run starts from the shipped models; a resumed one from its checkpoint.
    fresh = not (models / "work").is_dir()
    for role in ("small", "large", "boosted"):
        name = f"{args.task}-{role}"
        if fresh or not (models / name).is_dir():
            shutil.rmtree(models / name, ignore_errors=True)
            shutil.copytree(shipped / name, models / name)
    print(
        f"{recipe.name}: the shipped model continued {recipe.steps} steps at lr {recipe.lr:g}, "
        f"as {args.task}-boosted trained beyond {RECIPES[f'{args.task}-boosted'].init}",
        file=sys.stderr,
    )
    val = Run(recipe, Path(args.cache), models / "work", models, args.device).run()
    scores = ", ".join(f"{k} {v:.2f} dB" for k, v in val.items())
    print(f"{recipe.name} (equal audio): validation {scores}; wrote {models / recipe.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
