"""Learning curves: validation SI-SDRi against hours of audio trained on.

    python tools/learning_curves.py [--campaign F.json ...] [--runs data/runs]
        [--out docs/results/learning-curves]

Points come from three places, each labelled in the JSON:
- `recorded`: the training-time validation (32 fixed 2 s val clips, offline
  forward pass) of the shipped models' earlier and final recipe segments, as
  docs/results.md and the model folders record them (the runs' own logs did
  not survive their machines);
- `train.log` files of `kboost-rt train` run folders, where there are any;
- the `<task>-campaign.json` files of `tools/gpu_run.sh` runs.
For each large and small model with two or more points, a straight line in
log10(hours) is fitted and solved for the issue's targets. Such a line is a
rough guide: curves flatten, the points mix learning-rate schedules, and the
targets are set on the test split, which scores below this validation.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

SECONDS = 1.0  # training clip length of every recorded run
# (model, steps, SI-SDRi dB on the training-time validation, what recorded it)
RECORDED = [
    ("separate-large", 900, 0.89, "v1 at 1e-3, docs/results.md"),
    ("separate-large", 2700, 2.44, "v3, docs/results.md"),
    ("separate-large", 4700, 2.93, "v4, docs/results.md"),
    ("separate-large", 7800, 3.67, "v5 (last 3100 steps at batch 32 on a GPU), config.json"),
    # The CPU campaign's stage 1 and its start, scored on the 2026-12-06 rebuilt
    # cache's val clips (other clips than the points above: v5 scores 3.91 there)
    ("separate-large", 7800, 3.91, "v5 on the rebuilt cache's clips (cpu_campaign start)"),
    ("separate-large", 8950, 4.117, "v6, CPU campaign stage 1 (bf16), docs/results/campaign"),
    ("enhance-large", 300, -0.31, "v1 at 1e-3, recipes.py"),
    ("enhance-large", 1300, 1.135, "v2, config.json at 26d2d2f"),
    ("enhance-large", 4500, None, "v3 (the CPU campaign; its best, at step 4100), config.json"),
    ("separate-small", 800, 1.53, "v1, docs/results.md"),
    ("separate-small", 1600, 1.88, "v1, docs/results.md"),
    ("separate-small", 3000, 2.23, "v2, docs/results.md"),
    ("separate-small", 5000, 2.33, "v3, config.json"),
    ("enhance-small", 1000, 0.39, "v1, docs/results.md"),
    ("enhance-small", 2000, 0.55, "v2, config.json"),
    ("separate-boosted-d1", 3000, 3.43, "v5, docs/results.md"),
    ("separate-boosted-d1", 5000, 3.44, "v6, config.json at 748851b"),
    ("separate-boosted-d3", 3000, 2.83, "v5, docs/results.md"),
    ("separate-boosted-d3", 5000, 3.01, "v6, config.json at 748851b"),
    ("separate-boosted-d6", 3000, 2.85, "v5, docs/results.md"),
    ("separate-boosted-d6", 5000, 3.01, "v6, config.json at 748851b"),
    ("enhance-boosted-d1", 2000, 0.78, "v2, config.json at 748851b"),
    ("enhance-boosted-d3", 2000, 0.69, "v2, config.json at 748851b"),
    ("enhance-boosted-d6", 2000, 0.66, "v2, config.json at 748851b"),
]
BATCH = {"separate-large": [(4700, 8), (math.inf, 32)]}  # (up to step, batch); else 8
# The targets (dB SI-SDRi on the test split).
TARGETS = {
    "separate-large": 8.0,
    "separate-small": 4.0,
    "enhance-large": 8.0,
    "enhance-small": 5.0,
}


def hours(model: str, steps: int) -> float:
    done, clips = 0, 0
    for upto, batch in BATCH.get(model, [(math.inf, 8)]):
        n = min(steps, upto) - done
        if n <= 0:
            break
        clips += n * batch
        done += n
    return clips * SECONDS / 3600


def recorded_points(models: Path) -> list[dict]:
    out = []
    for model, steps, value, source in RECORDED:
        if value is None:  # the shipped model's own validation
            notes = json.loads((models / model / "config.json").read_text())["notes"]
            value = notes["validation"]["si_sdr_i"]
        point = {"model": model, "audio_hours": round(hours(model, steps), 3), "steps": steps}
        out.append(point | {"si_sdr_i": value, "source": "recorded: " + source})
    return out


def log_points(runs: Path) -> list[dict]:
    out = []
    for log in sorted(runs.glob("*/train.log")):
        model = log.parent.name
        for line in log.read_text().splitlines():
            entry = json.loads(line)
            out.append(
                {
                    "model": model,
                    "steps": entry["step"],
                    "audio_hours": round(hours(model, entry["step"]), 3),
                    "si_sdr_i": entry["si_sdr_i"],
                    "source": f"{log} (batch 8 assumed)",
                }
            )
    return out


def campaign_points(path: Path) -> list[dict]:
    data = json.loads(path.read_text())
    out = []
    for model, run in data["models"].items():
        for entry in run["curve"]:
            out.append(
                {
                    "model": model,
                    "steps": entry["step"],
                    "audio_hours": entry["audio_hours"],
                    "si_sdr_i": entry["si_sdr_i"],
                    "source": f"campaign on {data['device']}: {path.name}",
                }
            )
    return out


def fit(points: list[dict]) -> dict | None:
    """SI-SDRi = a + b log10(hours), least squares, from two or more distinct amounts."""
    if len({p["audio_hours"] for p in points}) < 2:
        return None
    h = np.log10([p["audio_hours"] for p in points])
    v = np.array([p["si_sdr_i"] for p in points])
    b, a = np.polyfit(h, v, 1)
    return {"intercept_db": round(float(a), 3), "db_per_decade": round(float(b), 3)}


def hours_for(line: dict, target: float) -> float | None:
    if line["db_per_decade"] <= 0:
        return None
    return 10 ** ((target - line["intercept_db"]) / line["db_per_decade"])


def plot(report: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for ax, task in zip(axes, ("separate", "enhance"), strict=True):
        models = sorted({p["model"] for p in report["points"] if p["model"].startswith(task)})
        for model in models:
            pts = sorted(
                (p for p in report["points"] if p["model"] == model),
                key=lambda p: p["audio_hours"],
            )
            x = [p["audio_hours"] for p in pts]
            (line,) = ax.plot(x, [p["si_sdr_i"] for p in pts], "o-", label=model)
            est = report["models"].get(model, {})
            if est.get("fit"):
                f = est["fit"]
                xs = np.logspace(np.log10(min(x)), np.log10(max(x) * 100), 50)
                ax.plot(
                    xs,
                    f["intercept_db"] + f["db_per_decade"] * np.log10(xs),
                    ":",
                    color=line.get_color(),
                )
            if model in TARGETS:
                ax.axhline(TARGETS[model], ls="--", lw=0.8, color=line.get_color())
        ax.set_xscale("log")
        ax.set_xlabel("hours of audio trained on")
        ax.set_title(task)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("SI-SDRi (dB), training-time validation")
    fig.suptitle("dotted: log-linear fit; dashed: the test-split target", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="models", help="shipped model folders")
    p.add_argument("--runs", default="data/runs", help="kboost-rt train run folders")
    p.add_argument("--campaign", nargs="*", default=[], help="gpu_run campaign JSON files")
    p.add_argument("--out", default="docs/results/learning-curves", help="path without suffix")
    args = p.parse_args()
    points = recorded_points(Path(args.models)) + log_points(Path(args.runs))
    for path in args.campaign:
        points += campaign_points(Path(path))
    report: dict = {
        "metric": "SI-SDRi (dB), training-time validation: 32 fixed val clips of 2 s, offline",
        "targets_test_split_db": TARGETS,
        "points": points,
        "models": {},
    }
    print(f"{'model':<22}{'points':>7}{'hours':>8}{'best dB':>9}{'dB/decade':>10}  target")
    for model in sorted({p["model"] for p in points}):
        pts = [p for p in points if p["model"] == model]
        line = fit(pts) if model in TARGETS else None
        entry: dict = {"fit": line}
        needed = ""
        if line and model in TARGETS:
            need = hours_for(line, TARGETS[model])
            entry["hours_for_target"] = None if need is None else round(need, 1)
            if need is None:
                needed = "not reached: the line does not rise"
            elif need > 1e5:
                needed = f"{TARGETS[model]:g} dB beyond 100,000 h: the line is nearly flat"
            else:
                needed = f"{TARGETS[model]:g} dB at ~{need:,.0f} h"
        report["models"][model] = entry
        best = max(p["si_sdr_i"] for p in pts)
        most = max(p["audio_hours"] for p in pts)
        slope = f"{line['db_per_decade']:.2f}" if line else "-"
        print(f"{model:<22}{len(pts):>7}{most:>8.1f}{best:>9.2f}{slope:>10}  {needed}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    plot(report, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
