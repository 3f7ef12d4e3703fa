"""Fit a boosted model's hint codec (`kboost_rt.hint_codec`) on the hints its
frozen large model and hint generator make from training-split mixtures, and
say how much of the hints' variance it keeps on the val split."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..engine import NativeModel
from ..hint_codec import HintCodec, fit_codec
from ..model_files import ModelFileError, load_model_files
from ..signal_path import CHUNK, SAMPLE_RATE
from .mixing import Mixer


def large_model_hints(
    boosted_dir: Path,
    cache: Path,
    split: str,
    clips: int,
    seconds: float,
    seed: int,
    progress: Callable[[str], None] = print,
) -> np.ndarray:
    """Hints [N, C_h, 97] of `clips` mixtures of `split`, as the server makes them."""
    boosted = load_model_files(boosted_dir)
    cfg = boosted.config
    if cfg.role != "boosted" or cfg.boost is None:
        raise ModelFileError(f"{boosted_dir}: not a boosted model (no hint generator)")
    if not cfg.large_model:
        raise ModelFileError(f"{boosted_dir}: config names no large_model")
    model = NativeModel.from_folder(Path(boosted_dir).parent / cfg.large_model, boosted_dir)
    mixer = Mixer(cache, cfg.task, split)
    rng = np.random.default_rng(seed)
    chunks = int(seconds * SAMPLE_RATE) // CHUNK
    hints = np.zeros((clips * chunks, cfg.boost.hint_channels, 97), np.float32)
    for i in range(clips):
        mixture, _ = mixer.example(chunks * CHUNK, rng)
        engine = model.engine()
        for t in range(chunks):
            _, hints[i * chunks + t] = engine.process_with_hint(
                np.ascontiguousarray(mixture[:, t * CHUNK : (t + 1) * CHUNK])
            )
        if (i + 1) % 8 == 0 or i + 1 == clips:
            progress(f"  {split}: {i + 1}/{clips} clips")
    return hints


def fit_model_codec(
    boosted_dir: Path,
    cache: Path,
    components: int,
    clips: int = 96,
    seconds: float = 4.0,
    progress: Callable[[str], None] = print,
) -> tuple[HintCodec, dict[str, float]]:
    """The codec fitted on train-split hints, and the share of variance it keeps
    on the train and val splits."""
    train = large_model_hints(boosted_dir, cache, "train", clips, seconds, 0, progress)
    val = large_model_hints(boosted_dir, cache, "val", max(8, clips // 4), seconds, 1, progress)
    codec = fit_codec(train, components)
    return codec, {"train": codec.kept_variance(train), "val": codec.kept_variance(val)}
