"""`kboost-rt eval`: SI-SDR improvement of every model of a task, run through
the streaming path chunk by chunk with the native engines.

An evaluation set is a folder of examples `<id>/mixture.wav` and
`<id>/source1.wav` (and `source2.wav` for `separate`), 16 kHz, [samples,
channels], mixture = sum of sources (+ noise). Boosted models get the hints
of the large model at their delay through a d-chunk FIFO; hint loss p drops
each hint independently with probability p (seeded), exactly as the runtime
would (the model then runs without it).
"""

from __future__ import annotations

import itertools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import _native
from .audio_files import ProcessError, read_audio
from .config import MAX_DELAY
from .costs import macs_per_chunk
from .engine import NativeEngine
from .fallback import fallback_model
from .model_files import ModelFileError, ModelFiles, checksum, load_model_files
from .processor import Processor
from .signal_path import CHUNK, LOOKAHEAD

if TYPE_CHECKING:
    from .hint_codec import HintCodec

TASKS = {"separate": 2, "enhance": 1}  # sources per example


def si_sdr(estimate: np.ndarray, reference: np.ndarray, eps: float = 1e-8) -> float:
    """Scale-invariant SDR in dB of 1-D signals (both made zero-mean)."""
    estimate = estimate - estimate.mean()
    reference = reference - reference.mean()
    scale = np.dot(estimate, reference) / (np.dot(reference, reference) + eps)
    target = scale * reference
    noise = estimate - target
    return float(10 * np.log10((np.dot(target, target) + eps) / (np.dot(noise, noise) + eps)))


def si_sdr_improvement(estimates: np.ndarray, references: np.ndarray, mixture: np.ndarray) -> float:
    """estimates, references [S, M, samples]; mixture [M, samples]. Mean over sources
    and channels, under the best source permutation (PIT) when S > 1."""
    sources, channels = references.shape[:2]
    base = np.mean(
        [si_sdr(mixture[m], references[s, m]) for s in range(sources) for m in range(channels)]
    )
    best = max(
        np.mean(
            [
                si_sdr(estimates[perm[s], m], references[s, m])
                for s in range(sources)
                for m in range(channels)
            ]
        )
        for perm in itertools.permutations(range(sources))
    )
    return float(best - base)


@dataclass
class Example:
    name: str
    mixture: np.ndarray  # [M, samples]
    sources: np.ndarray  # [S, M, samples]


def load_examples(folder: Path, task: str, channels: int) -> list[Example]:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r} (choose from {', '.join(TASKS)})")
    dirs = (
        sorted(d for d in folder.iterdir() if (d / "mixture.wav").is_file())
        if folder.is_dir()
        else []
    )
    if not dirs:
        raise ProcessError(f"{folder}: no examples (<id>/mixture.wav, <id>/source1.wav, ...)")
    examples = []
    for d in dirs:
        mixture = read_audio(d / "mixture.wav", channels)
        sources = np.stack(
            [read_audio(d / f"source{s + 1}.wav", channels) for s in range(TASKS[task])]
        )
        if sources.shape[-1] != mixture.shape[-1]:
            raise ProcessError(f"{d}: sources and mixture differ in length")
        examples.append(Example(d.name, mixture, sources))
    return examples


def _stream(processor: Processor, mixture: np.ndarray, arriving=None) -> np.ndarray:
    """Whole example through the processor, chunk by chunk, from a fresh state;
    per-source output aligned to the input. `arriving[t]`: the hints that come
    in before chunk t runs, as [(chunk it was made from, hint), ...] (or None),
    filed into the processor's hint link as the network client would."""
    processor.reset()
    samples = mixture.shape[1]
    chunks = -(-(samples + LOOKAHEAD) // CHUNK)
    padded = np.zeros((mixture.shape[0], chunks * CHUNK), np.float32)
    padded[:, :samples] = mixture
    x = padded.reshape(mixture.shape[0], chunks, CHUNK).transpose(1, 0, 2)
    if arriving is None:
        out, _ = processor.run(x)
    else:
        link = processor.link
        out = np.zeros((chunks, processor.sources, processor.channels, CHUNK), np.float32)
        for t in range(chunks):
            for seq, hint in arriving[t] or ():
                link.deliver(seq, hint)
            out[t] = processor.process(x[t])[0]
    y = out.transpose(1, 2, 0, 3).reshape(processor.sources, processor.channels, -1)
    return y[:, :, LOOKAHEAD : LOOKAHEAD + samples]


def _scores(processor: Processor, examples: list[Example]) -> list[float]:
    """SI-SDRi of each example streamed through `processor` without hints."""
    return [
        si_sdr_improvement(_stream(processor, ex.mixture), ex.sources, ex.mixture)
        for ex in examples
    ]


def _large_hints(large: NativeEngine, mixture: np.ndarray) -> list[np.ndarray]:
    samples = mixture.shape[1]
    chunks = -(-(samples + LOOKAHEAD) // CHUNK)
    padded = np.zeros((mixture.shape[0], chunks * CHUNK), np.float32)
    padded[:, :samples] = mixture
    return [
        large.process_with_hint(padded[:, t * CHUNK : (t + 1) * CHUNK])[1] for t in range(chunks)
    ]


@dataclass(frozen=True)
class Jitter:
    """Hint ages drawn per hint, uniformly from lo..hi chunks (a hint of
    chunk j comes in before chunk j + age runs), or replayed from a schedule
    `kboost-rt process --hint-schedule` recorded (`recorded`: per chunk the
    age, None for a hint that never came; repeated over a longer example)."""

    lo: int
    hi: int
    recorded: tuple[int | None, ...] | None = None
    source: str = ""

    @classmethod
    def parse(cls, text: str) -> Jitter:
        if text.endswith(".json") or Path(text).is_file():
            return cls.load(Path(text))
        lo, sep, hi = text.partition("-")
        try:
            ages = (int(lo), int(hi if sep else lo))
        except ValueError:
            msg = f"--jitter takes ages in chunks as LO-HI, e.g. 1-6, not {text!r}"
            raise ValueError(msg) from None
        if not 1 <= ages[0] <= ages[1] <= 64:
            raise ValueError(f"--jitter {text}: ages must satisfy 1 <= LO <= HI <= 64")
        return cls(*ages)

    @classmethod
    def load(cls, path: Path) -> Jitter:
        if not path.is_file():
            raise ValueError(f"--jitter {path}: no such file")
        try:
            ages = json.loads(path.read_text())["hint_ages"]
            if not isinstance(ages, list) or not all(
                a is None or (type(a) is int and 1 <= a <= 64) for a in ages
            ):
                raise ValueError
        except (OSError, ValueError, KeyError, TypeError):
            raise ValueError(
                f"--jitter {path}: not a hint schedule (`kboost-rt process --hint-schedule` "
                'writes one: {"hint_ages": [age in chunks 1..64, or null, ...]})'
            ) from None
        known = [a for a in ages if a is not None]
        if not known:
            raise ValueError(f"--jitter {path}: no hint in it ever came")
        return cls(min(known), max(known), tuple(ages), path.name)

    def __str__(self) -> str:
        return self.source or f"{self.lo}-{self.hi}"


def hint_schedule(
    chunks: int, ages: int | Jitter, loss: float, rng: np.random.Generator
) -> list[int | None]:
    """The age at which each chunk's hint comes in (None: lost on the way)."""
    if isinstance(ages, Jitter) and ages.recorded is not None:
        drawn = [ages.recorded[j % len(ages.recorded)] for j in range(chunks)]
    elif isinstance(ages, Jitter):
        drawn = rng.integers(ages.lo, ages.hi + 1, chunks).tolist()
    else:
        drawn = [ages] * chunks
    kept = rng.random(chunks) >= loss
    return [a if k else None for a, k in zip(drawn, kept, strict=True)]


def _arrivals(sent: list[np.ndarray], schedule: list[int | None]) -> list[list]:
    """Per chunk t, the (j, hint) pairs that come in before it runs."""
    arriving: list[list] = [[] for _ in sent]
    for j, age in enumerate(schedule):
        if age is not None and j + age < len(sent):
            arriving[j + age].append((j, sent[j]))
    return arriving


@dataclass
class _Boosted:
    """A boosted model under evaluation, with its large-model hints per example."""

    name: str
    files: ModelFiles
    processor: Processor
    made: list
    codec: HintCodec | None
    fallback_after: int | None  # where the small-model fallback runs beside it


def evaluate(
    task: str,
    data: Path,
    models: Path,
    delays: list[int],
    hint_loss: list[float],
    seed: int = 0,
    progress=print,
    encodings: list[str] | None = None,
    fallback_after: int = 0,
    jitter: Jitter | None = None,
) -> dict:
    """Every model of `task` on the examples in `data`. Boosted models: each
    fixed-delay model `<task>-boosted-d<D>` for D in `delays` at its delay,
    and the any-delay model `<task>-boosted` at every age in `delays`; with
    `jitter`, instead, all of them on one schedule of hint ages drawn per
    hint (the same for every model: a fixed model uses a hint only if it is
    there by its delay). Each at every hint loss and hint encoding (the wire
    format's float32, float16 or int8, or pca with the boosted model's hint
    codec; packed and unpacked as the link does), the hints filed into the
    processor's hint link as the client would. With `fallback_after`, the
    boosted models run with the small-model fallback of `kboost-rt process`
    and `live` where it would run there (their cost then includes the small
    model's)."""
    from .hint_codec import CODEC_FILE, load_codec
    from .protocol import HintEncoding, pack_hint, unpack_hint

    encodings = encodings or ["float32"]
    small_dir, large_dir = models / f"{task}-small", models / f"{task}-large"
    small, large = load_model_files(small_dir), load_model_files(large_dir)
    channels = small.config.net.channels
    examples = load_examples(data, task, channels)
    results = []

    def add(name, role, cfg, delay, loss, scores, encoding=None, fallback=None):
        """`fallback`: the chunks after which the small-model fallback took over, if it ran."""
        macs = macs_per_chunk(cfg)["device"]
        if fallback is not None:
            macs += macs_per_chunk(small.config)["device"]
        results.append(
            {
                "model": name,
                "role": role,
                "delay": delay,
                "hint_loss": loss,
                "si_sdr_i": float(np.mean(scores)),
                "si_sdr_i_examples": [round(float(x), 4) for x in scores],
                "macs_per_chunk": macs,
            }
        )
        row = results[-1]
        if cfg.boost is not None and cfg.boost.any_delay:
            row["any_delay"] = True
        if jitter is not None and role == "boosted":
            row["jitter"] = str(jitter)
        if encoding is not None:
            row["hint_encoding"] = encoding
        if fallback is not None:
            row["fallback_after"] = fallback
        d = "-" if delay is None else str(delay)
        when = (
            f"ages {jitter}"
            if "jitter" in row
            else f"{'age' if 'any_delay' in row else 'delay'} {d:>2}"
        )
        p = "-" if loss is None else f"{loss:g}"
        e = "" if encoding is None else f" {encoding}"
        progress(f"  {name:<24} {role:<8} {when} loss {p:>4}{e}: {np.mean(scores):6.2f} dB")

    # What the folder cannot run is said before any model runs; a folder of a
    # small and a large model alone (a large model just trained) is scored as such.
    bad = [d for d in delays if not 1 <= d <= MAX_DELAY]
    if bad:
        raise ValueError(f"--delays: hint delays run 1..{MAX_DELAY} chunks, not {bad[0]}")
    any_folder = models / f"{task}-boosted"
    has_any_delay = any_folder.is_dir()
    fixed_folders = [models / f"{task}-boosted-d{d}" for d in range(1, MAX_DELAY + 1)]
    if not has_any_delay and not any(f.is_dir() for f in fixed_folders):
        progress(f"  {models}: no boosted {task} model; the small and large models only")
        delays = []
    missing = [d for d in delays if not (models / f"{task}-boosted-d{d}").is_dir()]
    if missing and not has_any_delay:
        raise ModelFileError(
            f"{models}: no {task}-boosted-d{missing[0]} and no any-delay {task}-boosted "
            f"to run at delay {missing[0]}"
        )

    for name, files in ((small.name, small), (large.name, large)):
        scores = _scores(Processor(files.config, files.tensors), examples)
        add(name, files.config.role, files.config, None, None, scores)

    def open_boosted(folder: Path, want) -> _Boosted:
        """`want(boost)`: None if the folder holds the model asked for, else why not."""
        files = load_model_files(folder)
        boost = files.config.boost
        why = "not a boosted model" if boost is None else want(boost)
        if why is not None:
            raise ModelFileError(f"{folder}: {why}")
        generator = {k: v for k, v in files.tensors.items() if k.startswith("hint_generator.")}
        hint_engine = NativeEngine(large.config, large.tensors, generator)
        fallback = fallback_model(folder, fallback_after)
        link = _native.HintLink(channels, boost.hint_channels, boost.delay, boost.max_age)
        processor = Processor(
            files.config, files.tensors, link, fallback, fallback_after=fallback_after
        )
        codec = load_codec(folder, boost.hint_channels)
        if "pca" in encodings and codec is None:
            raise ModelFileError(f"{folder}: pca hints need its {CODEC_FILE}")
        made = []
        for ex in examples:
            hint_engine.reset()
            made.append(_large_hints(hint_engine, ex.mixture))
        after = fallback_after if fallback is not None else None
        return _Boosted(files.name, files, processor, made, codec, after)

    fixed = []
    for delay in delays:
        folder = models / f"{task}-boosted-d{delay}"
        if folder.is_dir():
            b = open_boosted(
                folder,
                lambda boost, d=delay: (
                    None if boost.delay == d and not boost.any_delay else f"not the d{d} model"
                ),
            )
            fixed.append((delay, b))
    any_delay = None
    if has_any_delay:
        any_delay = open_boosted(
            any_folder,
            lambda boost: None if boost.any_delay else "not an any-delay boosted model",
        )
        if max(delays) > any_delay.files.config.boost.max_age:
            raise ValueError(
                f"--delays: {any_folder.name} takes hints up to "
                f"{any_delay.files.config.boost.max_age} chunks old, not {max(delays)}"
            )

    # Each model with the delays or ages it runs at (None: under jitter).
    runs = [(b, [d] if jitter is None else [None]) for d, b in fixed]
    if any_delay is not None:
        runs.append((any_delay, list(delays) if jitter is None else [None]))
    for b, ds in runs:
        h = b.files.config.boost.hint_channels
        for encoding in encodings:
            wire = HintEncoding[encoding.upper()]
            shown = None if encodings == ["float32"] else encoding
            # What the link makes of each hint, once for every delay and loss.
            sent = [
                [unpack_hint(pack_hint(x, wire, b.codec), h, wire, b.codec) for x in hints]
                for hints in b.made
            ]
            for d, loss in itertools.product(ds, hint_loss):
                # One seed per (age, loss): every model at an age, or all under
                # jitter, meets the same hints lost and the same ages.
                rng = np.random.default_rng([seed, d or 0, int(round(loss * 1000))])
                scores = []
                for ex, hints in zip(examples, sent, strict=True):
                    schedule = hint_schedule(len(hints), jitter or d, loss, rng)
                    estimate = _stream(b.processor, ex.mixture, _arrivals(hints, schedule))
                    scores.append(si_sdr_improvement(estimate, ex.sources, ex.mixture))
                add(b.name, "boosted", b.files.config, d, loss, scores, shown, b.fallback_after)
    return {
        "task": task,
        "n_examples": len(examples),
        **({"jitter": str(jitter)} if jitter else {}),
        "results": results,
    }


def compare_any_delay(report: dict) -> list[str]:
    """Lines comparing the any-delay model with each fixed-delay model on the
    same schedule (at that model's delay, or under the same jitter)."""
    rows = report["results"]
    lines = []
    for r in rows:
        if r.get("any_delay") or r["role"] != "boosted":
            continue
        twin = next(
            (
                a
                for a in rows
                if a.get("any_delay")
                and a["hint_loss"] == r["hint_loss"]
                and a.get("hint_encoding") == r.get("hint_encoding")
                and (a["delay"] == r["delay"] if "jitter" not in r else "jitter" in a)
            ),
            None,
        )
        if twin is None:
            continue
        when = f"ages {r['jitter']}" if "jitter" in r else f"age {r['delay']}"
        lines.append(
            f"{twin['model']} vs {r['model']} ({when}, {r['hint_loss']:.0%} lost): "
            f"{format_difference(twin, r, '+-')} dB"
        )
    return lines


def plot(report: dict, path: Path) -> bool:
    """SI-SDRi against delay (one line per hint loss), small and large as lines."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "matplotlib is not installed: no plot (pip install 'kboost-rt[eval]')", file=sys.stderr
        )
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in report["results"]:
        if r["role"] in ("small", "large"):
            ax.axhline(
                r["si_sdr_i"],
                linestyle="--",
                color="C0" if r["role"] == "small" else "C3",
                label=f"{r['role']} ({r['macs_per_chunk'] / 1e6:.1f} M MACs)",
            )
    boosted = [
        r
        for r in report["results"]
        if r["role"] == "boosted"
        and r.get("hint_encoding", "float32") == "float32"
        and r["delay"] is not None  # a jitter run has no one delay to plot it at
    ]
    lines = sorted({(bool(r.get("any_delay")), r["hint_loss"]) for r in boosted})
    for i, (any_delay, loss) in enumerate(lines):
        rows = sorted(
            (r for r in boosted if (bool(r.get("any_delay")), r["hint_loss"]) == (any_delay, loss)),
            key=lambda r: r["delay"],
        )
        kind = "any-delay model at each age" if any_delay else "fixed-delay models"
        ax.plot(
            [8 * r["delay"] for r in rows],
            [r["si_sdr_i"] for r in rows],
            "s--" if any_delay else "o-",
            color=f"C{i + 4}",  # C0 and C3 are the small and large lines
            label=f"{kind}, {loss:.0%} hints lost",
        )
    ax.set_xlabel("hint delay (ms)")
    ax.set_ylabel("SI-SDRi (dB)")
    ax.set_title(f"{report['task']}: {report['n_examples']} examples")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def fallback_verdict(boosted: Path, data: Path, progress=print) -> dict:
    """Whether the small-model fallback helps the boosted model in folder
    `boosted` (with `<task>-small` beside it), measured on the examples in
    `data` (the val split) through the streaming path: the small model
    against the boosted model with every hint lost. `fallback.helps` takes
    it, once recorded in the folder (`tools/fallback_verdict.py`), over the
    training-time scores."""
    files = load_model_files(boosted)
    cfg = files.config
    if cfg.boost is None:
        raise ModelFileError(f"{boosted}: not a boosted model")
    small = load_model_files(Path(boosted).parent / f"{cfg.task}-small")
    examples = load_examples(data, cfg.task, cfg.net.channels)
    boost = cfg.boost
    link = _native.HintLink(cfg.net.channels, boost.hint_channels, boost.delay, boost.max_age)
    rows = {}
    for key, processor in (
        ("small", Processor(small.config, small.tensors)),
        ("alone", Processor(cfg, files.tensors, link)),  # its link never gets a hint
    ):
        scores = _scores(processor, examples)
        rows[key] = {"si_sdr_i": float(np.mean(scores)), "si_sdr_i_examples": scores}
        progress(f"  {Path(boosted).name}: {key} {rows[key]['si_sdr_i']:.2f} dB")
    diff, half = paired_difference(rows["small"], rows["alone"])
    return {
        "helps": diff > 0,
        "small_si_sdr_i": round(rows["small"]["si_sdr_i"], 3),
        "no_hints_si_sdr_i": round(rows["alone"]["si_sdr_i"], 3),
        "small_minus_no_hints": [round(diff, 3), round(half, 3)],
        "examples": len(examples),
        "data": Path(data).name,
        "small_checksum": checksum(small.tensors),
    }


def paired_difference(row: dict, baseline: dict) -> tuple[float, float] | None:
    """Mean per-example difference of two result rows on the same examples, and the
    half-width of its 95 % confidence interval (normal approximation); None when a
    row has no per-example scores."""
    a, b = row.get("si_sdr_i_examples"), baseline.get("si_sdr_i_examples")
    if not a or not b or len(a) != len(b):
        return None
    diff = np.asarray(a) - np.asarray(b)
    half = 1.96 * diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
    return float(diff.mean()), float(half)


def format_difference(row: dict, baseline: dict, plus_minus: str = "±") -> str | None:
    """`paired_difference` as "+0.42 ± 0.17"; None without per-example scores."""
    paired = paired_difference(row, baseline)
    return None if paired is None else f"{paired[0]:+.2f} {plus_minus} {paired[1]:.2f}"


def format_table(report: dict) -> str:
    lines = [
        f"{'model':<26}{'role':<9}{'delay':>11}{'hint loss':>10}{'hints':>9}"
        f"{'SI-SDRi dB':>12}{'vs small (95% CI)':>19}{'MACs/chunk':>12}"
    ]
    small = next((r for r in report["results"] if r["role"] == "small"), None)
    lines.append("-" * len(lines[0]))
    for r in report["results"]:
        d = "-" if r["delay"] is None else f"{r['delay']} ({8 * r['delay']} ms)"
        if "jitter" in r:
            d = f"ages {r['jitter']}"
        p = "-" if r["hint_loss"] is None else f"{r['hint_loss']:.0%}"
        e = r.get("hint_encoding") or ("float32" if r["role"] == "boosted" else "-")
        role = r["role"] + "*" * ("fallback_after" in r)
        lines.append(
            f"{r['model']:<26}{role:<9}{d:>11}{p:>10}{e:>9}{r['si_sdr_i']:>12.2f}"
            f"{_versus(r, small):>19}"
            f"{r['macs_per_chunk'] / 1e6:>10.2f} M"
        )
    after = {r["fallback_after"] for r in report["results"] if "fallback_after" in r}
    if after:
        lines.append(
            f"*: with the small-model fallback after {after.pop()} chunks without a hint (MACs "
            "include the small model's); other boosted models run alone: their validation "
            "puts them above the small model without hints"
        )
    return "\n".join(lines)


def _versus(row: dict, small: dict | None) -> str:
    if small is None or row is small:
        return "-"
    return format_difference(row, small, "+-") or "-"


def write_json(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
