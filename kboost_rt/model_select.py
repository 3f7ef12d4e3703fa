"""Which model a command runs: a folder, a shipped model's name, or the
model of a task (and hint delay) in the models folder.

The shipped models are `<task>-small`, `<task>-large` and `<task>-boosted`,
the any-delay model: it uses each hint at the age it arrives, 1-8 chunks, so
with a hint server it runs whatever the round trip. Without a server, the
small model.

Fixed-delay models `<task>-boosted-d<D>` (D in chunks of 8 ms) are no longer
shipped, but a models folder ($KBOOST_RT_MODELS) may hold them
(docs/model-files.md): `--delay D` runs one, and `--delay auto` picks the
smallest delay that covers a measured round trip where the folder has no
any-delay model.
"""

from __future__ import annotations

import re
from pathlib import Path

from .model_files import ModelFileError, shipped_models_dir

TASKS = ("separate", "enhance")
DEFAULT_TASK = "separate"
DEFAULT_DELAY = 3


def shipped_delays(task: str, root: Path | None = None) -> list[int]:
    """Delays (chunks) of the fixed-delay boosted models of `task` in the models
    folder, ascending (none are shipped)."""
    root = root or shipped_models_dir()
    pattern = re.compile(rf"^{re.escape(task)}-boosted-d(\d+)$")
    found = (pattern.match(p.name) for p in root.iterdir()) if root.is_dir() else ()
    return sorted(int(m.group(1)) for m in found if m)


def any_delay_model(task: str, root: Path | None = None) -> Path | None:
    """The shipped any-delay boosted model of `task`, or None."""
    folder = (root or shipped_models_dir()) / f"{task}-boosted"
    return folder if folder.is_dir() else None


def delay_for_round_trip(rtt_chunks: float, delays: list[int]) -> int:
    """The smallest delay >= the round trip; the largest one if none covers it."""
    if not delays:
        raise ModelFileError("no boosted models to choose a delay from")
    covering = [d for d in delays if d >= rtt_chunks]
    return min(covering) if covering else max(delays)


def resolve_model(
    model: str | None,
    task: str | None = None,
    delay: int | None = None,
    boosted: bool = False,
    root: Path | None = None,
) -> Path:
    """A model folder from --model (folder or shipped name) or --task/--delay."""
    root = root or shipped_models_dir()
    if model is not None:
        if task is not None or delay is not None:
            raise ValueError("--model excludes --task and --delay")
        path = Path(model)
        if path.is_dir():
            return path
        if (root / model).is_dir():
            return root / model
        names = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise ModelFileError(
            f"{model}: model folder not found, and no shipped model has that name"
            + (f" (shipped: {', '.join(names)})" if names else " (no models are shipped)")
        )
    task = task or DEFAULT_TASK
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r} (choose from {', '.join(TASKS)})")
    if delay is None and not boosted:
        name = f"{task}-small"
    elif delay is None and any_delay_model(task, root) is not None:
        name = f"{task}-boosted"
    else:
        delay = DEFAULT_DELAY if delay is None else delay
        name = f"{task}-boosted-d{delay}"
        if not (root / name).is_dir():
            have = shipped_delays(task, root)
            raise ModelFileError(
                f"no {task} model for a delay of {delay} chunks in {root}"
                + (
                    f" (delays there: {', '.join(map(str, have))})"
                    if have
                    else f": fixed-delay models are not shipped; {task}-boosted, the any-delay "
                    "model, runs at any delay without --delay (docs/model-files.md says how "
                    "to get the fixed ones back)"
                )
            )
    if not (root / name).is_dir():
        raise ModelFileError(f"{root / name}: the shipped model is missing")
    return root / name


def model_for_round_trip(
    server: tuple[str, int],
    task: str | None = None,
    key: tuple[int, bytes] | None = None,
    root: Path | None = None,
) -> tuple[Path, float]:
    """--delay auto: with an any-delay model there is nothing to choose: (it,
    nan), unprobed. Else probe `server` with the most patient fixed-delay model
    of `task` -> (the one trained for the smallest delay that covers the round
    trip, the measured round trip in chunks)."""
    from .client import measure_round_trip
    from .model_files import load_model_files

    task = task or DEFAULT_TASK
    if (any_delay := any_delay_model(task, root)) is not None:
        return any_delay, float("nan")
    delays = shipped_delays(task, root)
    if not delays:
        raise ModelFileError(f"no boosted {task} models in {root or shipped_models_dir()}")
    probe = load_model_files(resolve_model(None, task, max(delays), root=root))
    rtt = measure_round_trip(server, probe.name, probe.config.net.channels, max(delays), key)
    return resolve_model(None, task, delay_for_round_trip(rtt, delays), True, root), rtt


def models_to_serve(model: str | None, task: str | None, auto: bool) -> list[Path | str]:
    """What a local hint server must serve: for --delay auto the any-delay model,
    or every fixed delay of the task (the model is chosen after probing it);
    else the one model."""
    if auto:
        task = task or DEFAULT_TASK
        if (any_delay := any_delay_model(task)) is not None:
            return [any_delay]
        return [resolve_model(None, task, d, True) for d in shipped_delays(task)]
    return [model]
