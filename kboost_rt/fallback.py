"""Small-model fallback: when hints stop coming, the small model takes over.

A boosted model trained with hints on most of its clips is a worse small
model than the small model itself once every hint is lost (separate d1:
0.42 dB below it on val, docs/results.md). The fallback (in the native
processor, csrc/processor.h) runs the task's small model beside the boosted
one on every chunk, so its state is always warm, and crossfades to its
output over one chunk once `after` chunks in a row have come without a
hint; the first hint that arrives crossfades back. The price is the small
model's compute on every chunk. `fallback_model` picks the small model, and
only where it helps: where the two folders' validation scores put the small
model above the boosted model without hints, and only if both were made on
the same clips; otherwise the fallback runs. A rule on 32 training-time
clips is coarse: on 200 examples, the shipped fallback saves 0.06-0.17 dB
for `separate` and costs 0.03-0.15 dB for `enhance` (docs/results.md).

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

from .model_files import ModelFileError, ModelFiles, load_model_files

FALLBACK_AFTER = 25  # chunks (200 ms): far longer than any shipped delay (6)


def helps(boosted_notes: dict, small_notes: dict) -> bool:
    """Whether the small model scored above the boosted model without hints in
    the validation their training recorded, where both were scored on the same
    clips (`clips_sha256`, which `kboost-rt train` and the GPU run record).
    Scores of other clips (a rebuilt data cache, a GPU pack) or without that
    record say nothing about which is better: then yes, as without scores."""
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
    if not helps(cfg.notes, files.config.notes):
        return None
    return files
