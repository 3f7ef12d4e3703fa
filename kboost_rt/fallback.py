"""Small-model fallback: when hints stop coming, the small model takes over.

A boosted model trained with hints on most of its clips is a worse small
model than the small model itself once every hint is lost (separate d1:
0.42 dB below it on val, docs/results.md). The fallback (in the native
processor, csrc/processor.h) runs the task's small model beside the boosted
one on every chunk, so its state is always warm, and crossfades to its
output over one chunk once `after` chunks in a row have come without a
hint; the first hint that arrives crossfades back. The price is the small
model's compute on every chunk. `fallback_model` picks the small model, and
only where it helps (`helps`): where a streaming evaluation on the val split,
recorded in the boosted folder, puts the small model above the boosted
model without hints (without that record, the two folders' training-time
validation, if it was scored on the same clips; else it runs).

Both models were trained with a scale-invariant loss and, for `separate`, a
permutation-invariant one: each picks its own output level and talker order.
Spliced as they are, the output would jump in level and could swap talkers
between its channels. The fallback's aligner tracks, over about a second of
boosted output, the gain and the order that map the small model's outputs
onto the boosted model's, and the fallback plays the small model through
it, with the mapping held while it plays.
"""

from __future__ import annotations

import os
from pathlib import Path

from .model_files import ModelFileError, ModelFiles, checksum, load_model_files

FALLBACK_AFTER = 25  # chunks (200 ms): far longer than any shipped delay (6)


def helps(boosted_notes: dict, small_notes: dict, small_checksum: str | None = None) -> bool:
    """Whether the small model beats the boosted model without hints.

    First the verdict that `tools/fallback_verdict.py` records in a boosted
    folder from a streaming evaluation (200 val examples), if it was made
    with this small model (`small_checksum`, of its weights). Else the
    validation their training recorded, where both were scored on the same
    clips (`clips_sha256`, which `kboost-rt train` and the GPU run record;
    32 clips of 2 s, a coarse rule). Scores of other clips (a rebuilt data
    cache, a GPU pack) or without that record say nothing about which is
    better: then yes, as without scores."""
    verdict = boosted_notes.get("fallback_verdict") or {}
    if small_checksum is not None and verdict.get("small_checksum") == small_checksum:
        return bool(verdict["helps"])
    try:
        boosted, small = boosted_notes["validation"], small_notes["validation"]
        alone, own = boosted["si_sdr_i_no_hints"], small["si_sdr_i"]
        clips = boosted["clips_sha256"]
    except (KeyError, TypeError):
        return True
    if small.get("clips_sha256") != clips:
        return True
    return own > alone


def fallback_model(boosted: str | os.PathLike, after: int = FALLBACK_AFTER) -> ModelFiles | None:
    """The small model to fall back on beside a boosted model folder:
    `<task>-small` in the same parent folder; None if `after` is 0 (never), if
    there is none, or if it would not help (`helps`)."""
    if after == 0:
        return None
    cfg = load_model_files(boosted).config
    small = Path(boosted).parent / f"{cfg.task}-small"
    if cfg.boost is None or not small.is_dir():
        return None
    files = load_model_files(small)
    if (files.config.net.channels, files.config.net.sources) != (
        cfg.net.channels,
        cfg.net.sources,
    ):
        raise ModelFileError(f"{small}: other channels or sources than {boosted}")
    if files.config.role != "small":
        raise ModelFileError(f"{small}: not a small model")
    if not helps(cfg.notes, files.config.notes, checksum(files.tensors)):
        return None
    return files
