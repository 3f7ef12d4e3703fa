"""The any-delay model through a jittery link, against the eval's replay of it.

    python tools/any_delay_relay.py --task separate --data data/eval/separate-test \
        [--examples 5] [--delay-ms 10] [--jitter-ms 8] [--json F]

For each of the first N examples: a `kboost-rt serve` process, the fault
relay in front of it (`--delay-ms` each way, +- `--jitter-ms`: a round trip
of about 4-36 ms at the defaults), and `process_file` with the shipped
any-delay model through the relay, paced at real time, recording when each
hint came in (`--hint-schedule`). Then `kboost-rt eval --jitter` replays that
schedule for the same example, with the same hint encoding. Prints per
example the SI-SDRi of both, the ages of the hints used, and the mean
difference; writes it all as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from kboost_rt.audio_files import read_audio
from kboost_rt.evaluate import TASKS, Jitter, evaluate, load_examples, si_sdr_improvement
from kboost_rt.model_files import shipped_models_dir
from kboost_rt.process import output_paths, process_file
from kboost_rt.processor import hint_age_stats
from kboost_rt.protocol import HintEncoding
from kboost_rt.relay import FaultRelay, Impairment
from kboost_rt.server import LocalServer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=list(TASKS), default="separate")
    ap.add_argument("--data", required=True, help="an eval set (kboost-rt data write-set)")
    ap.add_argument("--models", type=Path, default=shipped_models_dir())
    ap.add_argument("--examples", type=int, default=5)
    ap.add_argument("--delay-ms", type=float, default=10.0)
    ap.add_argument("--jitter-ms", type=float, default=8.0)
    ap.add_argument("--hints", choices=["pca", "int8", "float32"], default="pca")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    model = args.models / f"{args.task}-boosted"
    sources = TASKS[args.task]
    examples = load_examples(Path(args.data), args.task, 2)[: args.examples]
    wire = HintEncoding[args.hints.upper()]
    rows = []
    with LocalServer([model]) as server, tempfile.TemporaryDirectory() as tmp:
        impairment = Impairment(delay_ms=args.delay_ms, jitter_ms=args.jitter_ms)
        for i, ex in enumerate(examples):
            relay = FaultRelay(server.address, impairment, seed=i).start()  # one per stream
            try:
                folder = Path(tmp) / f"set{i}" / ex.name
                folder.mkdir(parents=True)
                source = Path(args.data) / ex.name
                for f in source.iterdir():
                    (folder / f.name).symlink_to(f.resolve())
                out = Path(tmp) / f"out{i}.wav"
                result = process_file(
                    source / "mixture.wav", out, model, relay.address, encoding=wire,
                    progress=False,
                )  # fmt: skip
                estimates = np.stack([read_audio(p, 2) for p in output_paths(out, sources)])
                live = si_sdr_improvement(estimates, ex.sources, ex.mixture)
                schedule = Path(tmp) / f"schedule{i}.json"
                schedule.write_text(json.dumps({"hint_ages": result.hint_schedule}))
                report = evaluate(
                    args.task, folder.parent, args.models, [1], [0.0], progress=lambda _: None,
                    encodings=[args.hints], jitter=Jitter.load(schedule),
                )  # fmt: skip
                replay = next(r for r in report["results"] if r.get("any_delay"))["si_sdr_i"]
                ages = hint_age_stats(result.hint_ages) or {}
                row = {
                    "example": ex.name,
                    "process_si_sdr_i": round(live, 4),
                    "eval_replay_si_sdr_i": round(replay, 4),
                    "difference": round(live - replay, 4),
                    "hint_age_median": ages.get("median"),
                    "hint_age_p95": ages.get("p95"),
                    "hints_by_age": result.hint_ages,
                    "on_time": result.link.on_time,
                    "late": result.link.late,
                    "lost": result.link.lost,
                }
                rows.append(row)
                print(
                    f"{ex.name}: process {live:6.2f} dB, eval replay {replay:6.2f} dB "
                    f"(diff {live - replay:+.3f}); hint age median {row['hint_age_median']}, "
                    f"p95 {row['hint_age_p95']}; {row['on_time']} on time, {row['late']} late",
                    flush=True,
                )
            finally:
                relay.stop()
    diffs = np.array([r["difference"] for r in rows])
    summary = {
        "task": args.task,
        "model": model.name,
        "delay_ms": args.delay_ms,
        "jitter_ms": args.jitter_ms,
        "hint_encoding": args.hints,
        "examples": rows,
        "mean_difference": float(diffs.mean()),
        "max_abs_difference": float(np.abs(diffs).max()),
    }
    print(
        f"mean process - eval replay: {diffs.mean():+.3f} dB "
        f"(max |diff| {np.abs(diffs).max():.3f}) over {len(rows)} examples"
    )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
