"""Decide, from a streaming evaluation, where the small-model fallback runs.

For every boosted model of a task in a models folder, the task's small model
and the boosted model with every hint lost run through the streaming path on
an evaluation set (the val split: the test split stays for reporting), and
the verdict (does the small model score above it?) goes into the boosted
folder's config.json notes as `fallback_verdict`, with the small model's
weight checksum. `process`, `live` and `eval` take it over the training-time
scores (32 clips of 2 s), as long as the small model is the same
(`kboost_rt/fallback.py`); retraining the boosted model drops it.

    kboost-rt data write-set --task enhance --split val --out data/eval/enhance-val
    python tools/fallback_verdict.py --task enhance --data data/eval/enhance-val

Then reinstall (`make setup`) for the shipped models to take it.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from kboost_rt.evaluate import TASKS, fallback_verdict
from kboost_rt.model_files import (
    ModelFileError,
    load_model_files,
    save_model_files,
    shipped_models_dir,
)


def boosted_folders(models: Path, task: str) -> list[Path]:
    """The task's boosted model folders: the any-delay one and fixed-delay ones."""
    found = [f for f in sorted(models.glob(f"{task}-boosted*")) if (f / "config.json").is_file()]
    return [f for f in found if load_model_files(f).config.boost is not None]


def record(folder: Path, verdict: dict) -> None:
    files = load_model_files(folder)
    notes = {**files.config.notes, "fallback_verdict": verdict}
    save_model_files(folder, dataclasses.replace(files.config, notes=notes), files.tensors)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", required=True, choices=sorted(TASKS))
    p.add_argument("--data", required=True, type=Path, help="evaluation set of the val split")
    p.add_argument(
        "--models",
        type=Path,
        default=None,
        help="models folder (default: the shipped models, in the source tree)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the verdicts, write nothing")
    args = p.parse_args(argv)
    models = args.models or Path(__file__).resolve().parents[1] / "models"
    if not models.is_dir():
        models = shipped_models_dir()
    if "test" in args.data.name:
        raise SystemExit(f"--data {args.data}: decide on the val split; test is for reporting")
    folders = boosted_folders(models, args.task)
    if not folders:
        raise SystemExit(f"{models}: no boosted {args.task} model")
    for folder in folders:
        try:
            verdict = fallback_verdict(folder, args.data)
        except (ModelFileError, OSError, ValueError) as e:
            raise SystemExit(f"{folder}: {e}") from None
        diff, half = verdict["small_minus_no_hints"]
        said = "runs" if verdict["helps"] else "does not run"
        print(
            f"{folder.name}: small {verdict['small_si_sdr_i']:.2f} dB, without hints "
            f"{verdict['no_hints_si_sdr_i']:.2f} dB (small {diff:+.2f} ± {half:.2f}, "
            f"{verdict['examples']} examples of {verdict['data']}): the fallback {said}"
        )
        if not args.dry_run:
            record(folder, verdict)
    return 0


if __name__ == "__main__":
    sys.exit(main())
