"""Markdown tables of `kboost-rt eval` JSON files, for docs/results.md.

    python tools/results_tables.py docs/results/separate-val.json [...]

Per file: small and large, then boosted SI-SDRi by model and delay (rows;
an any-delay model has a row per hint age) and hint loss or encoding
(columns), with the gain over the small model in parentheses: the mean
per-example difference and, where the file has per-example scores, the
half-width of its 95 % confidence interval.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from kboost_rt.evaluate import format_difference


def difference(row: dict, small: dict) -> str:
    """row minus small: the paired mean ± its 95 % half-width, or the plain difference."""
    return format_difference(row, small) or f"{row['si_sdr_i'] - small['si_sdr_i']:+.2f}"


def gain(row: dict, small: dict) -> str:
    return f"{row['si_sdr_i']:.2f} ({difference(row, small)})"


def _label(row: dict) -> tuple[str, bool, int]:
    """(row label, any-delay, delay): an any-delay model has a row per hint age."""
    if row.get("any_delay"):
        name = f"{row['model']}, age {row['delay']} ({8 * row['delay']} ms)"
        return name, True, row["delay"]
    return row["model"], False, row["delay"]


def table(report: dict) -> str:
    rows = report["results"]
    small = next(r for r in rows if r["role"] == "small")
    large = next(r for r in rows if r["role"] == "large")
    boosted = [r for r in rows if r["role"] == "boosted"]
    encodings = sorted({r.get("hint_encoding", "float32") for r in boosted})
    out = [
        f"{report['task']}, {report['n_examples']} examples: small ({small['model']}) "
        f"**{small['si_sdr_i']:.2f} dB**, large ({large['model']}) "
        f"**{large['si_sdr_i']:.2f} dB** (large - small {difference(large, small)} dB)",
        "",
    ]
    labels = sorted({_label(r) for r in boosted}, key=lambda lab: lab[1:])
    if len(encodings) > 1:
        out += ["| boosted model | " + " | ".join(encodings) + " |"]
        out += ["|---" * (len(encodings) + 1) + "|"]
        for label in labels:
            cells = []
            for enc in encodings:
                r = next(
                    r
                    for r in boosted
                    if _label(r) == label and r.get("hint_encoding", "float32") == enc
                )
                cells.append(gain(r, small))
            out.append(f"| {label[0]} | " + " | ".join(cells) + " |")
        return "\n".join(out)
    losses = sorted({r["hint_loss"] for r in boosted})
    out += ["| boosted model | " + " | ".join(f"{p:.0%} hints lost" for p in losses) + " |"]
    out += ["|---" * (len(losses) + 1) + "|"]
    for label in labels:
        mine = [r for r in boosted if _label(r) == label]
        cells = [gain(next(r for r in mine if r["hint_loss"] == p), small) for p in losses]
        star = "\\*" * any("fallback_after" in r for r in mine)
        out.append(f"| {label[0]}{star} | " + " | ".join(cells) + " |")
    after = {r["fallback_after"] for r in boosted if "fallback_after" in r}
    if after:
        out += [
            "",
            f"\\*: with the small-model fallback after {after.pop()} chunks without a hint.",
        ]
    return "\n".join(out)


def main(paths: list[str]) -> None:
    for path in paths:
        print(f"### {Path(path).stem}\n")
        print(table(json.loads(Path(path).read_text())))
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
