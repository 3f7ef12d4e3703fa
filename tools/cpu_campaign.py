"""Train shipped models further on this machine's CPU, in the background,
until a GPU run replaces them (issue 14's CPU campaign).

A large or small model goes on under its recipe's next version: the same
recipe with more steps (`--steps`, in all; `--lr` another peak learning
rate, `--autocast bfloat16` its precision), from the shipped weights and step
count with a fresh optimiser (`Run` does that when OUT holds an earlier
version of the recipe's model and there is no checkpoint). A boosted model
is retrained, its recipe's next version unchanged otherwise, on the hints of
the large model in OUT (which must be newer than the shipped one); the
any-delay model starts from the fixed one in OUT, so retrain that first.
Each run checkpoints into OUT/work/ every two minutes; the same command
resumes it in the same session; where OUT does not outlive a session,
commit OUT/NAME/ and let the next session's stage go on from it
(`--start`). OUT/NAME/ is the best validation model so far (a continued
model is never worse than the shipped one); the closing line compares it
with the shipped model. To ship the models, give their recipes these
versions in `kboost_rt/training/recipes.py` and copy the folders into
`models/`; a large model ships only with the boosted models retrained on
its hints.

    nice -n 19 sh -c 'python tools/cpu_campaign.py enhance-large --steps 4500 \\
        --autocast bfloat16 && python tools/cpu_campaign.py enhance-boosted-d1 \\
        && python tools/cpu_campaign.py enhance-boosted' > data/campaign/log 2>&1 &

Needs the training extras (torch) and the data cache (`kboost-rt data build`).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from pathlib import Path

from kboost_rt.model_files import load_model_files, shipped_models_dir
from kboost_rt.training.recipes import RECIPES, Recipe
from kboost_rt.training.trainer import Run


def campaign_recipe(
    name: str,
    steps: int | None = None,
    lr: float | None = None,
    autocast: str | None = None,
    start: Path | None = None,
) -> Recipe:
    """The shipped recipe's next version: trained to `steps` in all (large and
    small), or the same recipe again (boosted, retrained on a newer large model).
    `start`: a model folder of an earlier campaign stage to go on from instead
    of the shipped one; the recipe is then that folder's next version."""
    if name not in RECIPES:
        raise SystemExit(f"unknown recipe {name!r} (choose from {', '.join(RECIPES)})")
    shipped = RECIPES[name]
    version, trained = shipped.version, shipped.steps
    if start is not None:
        if shipped.role == "boosted":
            raise SystemExit(f"{name}: a boosted model is retrained from its start: no --start")
        notes = load_model_files(start).config.notes
        if notes.get("recipe", {}).get("name") != name or "trained_steps" not in notes:
            raise SystemExit(f"--start {start}: not a model folder of {name} with its recipe")
        version, trained = notes["recipe"]["version"], int(notes["trained_steps"])
        if version <= shipped.version:
            raise SystemExit(f"--start {start}: version {version} is not newer than shipped")
    if shipped.role == "boosted":
        if steps is not None or lr is not None:
            raise SystemExit(f"{name}: a boosted model is retrained as its recipe says, "
                             "on the newer large model's hints: no --steps or --lr")  # fmt: skip
        steps = shipped.steps
    elif steps is None or steps <= trained:
        raise SystemExit(f"--steps {steps}: {name} has trained {trained} steps already")
    return dataclasses.replace(
        shipped,
        version=version + 1,
        steps=steps,
        lr=shipped.lr if lr is None else lr,
        autocast=shipped.autocast if autocast is None else autocast,
    )


def _version(folder: Path) -> int:
    return load_model_files(folder).config.notes["recipe"]["version"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("recipe", help="a shipped model, e.g. enhance-large or enhance-boosted-d1")
    p.add_argument("--steps", type=int, help="large and small: steps in all, the shipped ones too")
    p.add_argument("--lr", type=float, help="peak learning rate (default: the recipe's)")
    p.add_argument(
        "--autocast",
        choices=["bfloat16", "float32"],
        help="bfloat16: forward passes under bfloat16 autocast (1.44x the large model's steps "
        "on an AVX-512 BF16 CPU; docs/training.md); default: the recipe's",
    )
    p.add_argument(
        "--start",
        type=Path,
        help="large and small: go on from this model folder of an earlier campaign stage "
        "(one committed before a session ended) instead of the shipped model",
    )
    p.add_argument("--cache", default="data/cache", help="data cache (default: data/cache)")
    p.add_argument("--out", default="data/campaign", help="models and checkpoints go here")
    args = p.parse_args(argv)
    autocast = {"float32": "", None: None}.get(args.autocast, args.autocast)
    recipe = campaign_recipe(args.recipe, args.steps, args.lr, autocast, args.start)
    out, shipped = Path(args.out), shipped_models_dir()
    folder, work = out / recipe.name, out / "work"
    resumed = (work / recipe.name / "checkpoint.pt").is_file()
    if recipe.role == "boosted":
        for needed in filter(None, (recipe.large, recipe.init)):
            if not (out / needed).is_dir():
                raise SystemExit(f"{recipe.name} needs {needed} in {out}: train it there first")
        if _version(out / recipe.large) <= RECIPES[recipe.large].version:
            raise SystemExit(f"{out / recipe.large} is the shipped version: continue it first")
    elif args.start is not None and args.start.resolve() == folder.resolve():
        raise SystemExit(f"--start {args.start}: OUT writes that folder; copy it elsewhere first")
    elif not resumed:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(args.start or shipped / recipe.name, folder)
    run = Run(recipe, Path(args.cache), work, out)
    name = f"{recipe.name} v{recipe.version}"
    if recipe.role == "boosted" and not (shipped / recipe.name).is_dir():
        against = "not shipped"  # a fixed-delay model the any-delay one starts from
    elif recipe.role == "boosted":
        shipped_score = load_model_files(shipped / recipe.name).config.notes["validation"]
        against = f"{shipped_score['si_sdr_i']:.3f} dB recorded when it was trained"
    else:
        against = f"{run.shipped_score:.3f} dB on these validation clips"
    began = "the shipped model" if args.start is None else f"the start, {args.start}"
    print(f"{name}: step {run.step} of {recipe.steps}; {began}: {against}", flush=True)
    val = run.run(progress=True) if run.step < recipe.steps else run.export()
    scores = ", ".join(f"{k} {v:.3f} dB" for k, v in val.items())
    print(f"{name}: {run.step} steps, validation {scores}; {began}: {against}; "
          f"wrote {folder}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
