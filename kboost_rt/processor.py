"""The real-time processor: one object for live audio, files, eval and plugins.

The work is native (csrc/processor.h): per 8 ms chunk it queues the input
for the hint server, takes from the lock-free hint link the hint of chunk
t - d (a fixed-delay model) or every hint of the last 8 chunks that came in
since the last chunk, each at its age (the any-delay model), runs the boosted
(or small) engine, lets the small-model fallback take over while hints stay
away, and mixes the sources with the latency-aligned input under the live
parameters, each change ramped over one chunk (no zipper noise or clicks).
It allocates nothing, takes no lock and never enters the interpreter, so the
same object runs in a PortAudio callback (`kboost_rt.audio`), a file loop
(`kboost-rt process`) and `kboost-rt eval`.
`kboost-rt process --mix` writes exactly the samples `live` would play.

    stream = open_stream("separate-boosted", server=("127.0.0.1", 7000))
    sources, mix = stream.processor.process(chunk)   # chunk [M, 128]
    stream.close()
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass

import numpy as np

from . import _native
from .client import HintClient, LinkError
from .config import ModelConfig
from .engine import engine_config
from .fallback import FALLBACK_AFTER, fallback_model
from .model_files import ModelFiles
from .params import LiveParams, Params
from .protocol import HintEncoding
from .signal_path import CHUNK

log = logging.getLogger("kboost_rt.processor")


class Processor:
    def __init__(
        self,
        config: ModelConfig,
        tensors: dict[str, np.ndarray],
        link: _native.HintLink | None = None,
        fallback: ModelFiles | None = None,
        params: LiveParams | None = None,
        fallback_after: int = FALLBACK_AFTER,
    ):
        """`link`: where hints come from (a `HintClient`'s, or a schedule's);
        `fallback`: the small model that takes over after `fallback_after`
        chunks without a hint (only with a link)."""
        config.validate()
        self.config = config
        self.sources, self.channels = config.net.sources, config.net.channels
        self.params = params or LiveParams(sources=self.sources)
        self.link = link
        small = (
            (None, None) if fallback is None else (engine_config(fallback.config), fallback.tensors)
        )
        self._native = _native.Processor(
            engine_config(config), tensors, link, *small,
            fallback_after if fallback is not None else 1,
            dataclasses.asdict(self.params.snapshot()),
        )  # fmt: skip
        self.params.listen(lambda p: self._native.set_params(dataclasses.asdict(p)))
        self._sources = np.zeros((self.sources, self.channels, CHUNK), np.float32)
        self._mix = np.zeros((self.channels, CHUNK), np.float32)

    @property
    def native(self) -> _native.Processor:
        """The native object, for an `AudioStream` to run."""
        return self._native

    @property
    def t(self) -> int:
        """Chunks processed."""
        return self._native.chunk

    @property
    def hints_used(self) -> int:
        return self._native.stats()["hints_used"]

    @property
    def chunks_on_small(self) -> int:
        return self._native.stats()["chunks_on_small"]

    def hint_ages(self) -> list[int]:
        """[a]: how many hints were used a chunks after their own chunk."""
        return self._native.stats()["hints_by_age"]

    def stats(self) -> dict:
        return self._native.stats()

    def fallback_mapping(self) -> tuple[tuple[int, ...], np.ndarray] | None:
        """The small model's (order, gains) onto the boosted model's outputs."""
        return self._native.fallback_mapping()

    def reset(self) -> None:
        """Start a new stream (not while an audio stream runs this processor)."""
        self._native.reset()

    def process(self, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """chunk [M, 128] float32 -> (sources [S, M, 128], mix [M, 128]); both arrays are
        reused by the next call (copy them to keep them)."""
        self._native.process(chunk, self._mix, self._sources)
        return self._sources, self._mix

    def run(self, chunks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """chunks [N, M, 128] -> (sources [N, S, M, 128], mixes [N, M, 128]), in C++."""
        chunks = np.ascontiguousarray(chunks, np.float32)
        n = chunks.shape[0]
        sources = np.zeros((n, self.sources, self.channels, CHUNK), np.float32)
        mixes = np.zeros((n, self.channels, CHUNK), np.float32)
        self._native.run(chunks, mixes, sources)
        return sources, mixes


def hint_age_stats(counts: list[int]) -> dict | None:
    """Median and 95th percentile (chunks) of the ages of the hints used, from
    `Processor.hint_ages()`; None before any hint was used."""
    total = sum(counts)
    if not total:
        return None
    cumulative = np.cumsum(counts)

    def quantile(q: float) -> int:
        return int(np.searchsorted(cumulative, q * total))

    return {"median": quantile(0.5), "p95": quantile(0.95), "used": total, "by_age": counts}


@dataclass
class Stream:
    """A model opened for streaming: its files, the processor and, with a
    server, the hint client feeding it."""

    files: ModelFiles
    processor: Processor
    client: HintClient | None = None

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


def open_stream(
    model: str | os.PathLike | ModelFiles,
    server: tuple[str, int] | None = None,
    key: tuple[int, bytes] | None = None,
    encoding: HintEncoding | None = None,
    params: Params | LiveParams | None = None,
    fallback_after: int = FALLBACK_AFTER,
) -> Stream:
    """Open a model folder (a shipped model's name, or its files already loaded)
    for streaming: with a
    `server`, connect the hint client and set up the small-model fallback
    where it helps (see `fallback.fallback_model`); `fallback_after` 0: never.
    `encoding` None: pca hints if the model has a hint codec, else int8.
    Raises ValueError for a model that cannot run on the device, LinkError
    when the server refuses or does not answer."""
    from .hint_codec import CODEC_FILE, default_encoding, load_codec
    from .model_files import load_model_files
    from .model_select import resolve_model

    if isinstance(model, ModelFiles):
        files, folder = model, model.path
    else:
        folder = resolve_model(str(model))
        files = load_model_files(folder)
    cfg = files.config
    if cfg.role == "large":
        raise ValueError(
            f"{model}: a large model runs on the server; use the small or boosted model"
        )
    live = params if isinstance(params, LiveParams) else LiveParams(params, sources=cfg.net.sources)
    client = None
    fallback = None
    if server is not None:
        if cfg.boost is None:
            raise ValueError(f"{model}: --server needs a boosted model")
        codec = load_codec(folder, cfg.boost.hint_channels)
        chosen = encoding is None
        encoding = default_encoding(folder) if encoding is None else encoding
        if encoding == HintEncoding.PCA and codec is None:
            raise ValueError(f"{model}: pca hints need the model's {CODEC_FILE}")

        def make_client(wire: HintEncoding) -> HintClient:
            return HintClient(
                server, files.name, cfg.net.channels, cfg.boost.delay, wire, key=key,
                codec=codec, max_age=cfg.boost.max_age,
            )  # fmt: skip

        client = make_client(encoding)
    try:
        if client is not None:
            try:
                client.connect()
            except LinkError as refused:
                if not (chosen and encoding == HintEncoding.PCA):
                    raise
                # A server without this model's codec (or older than pca hints)
                # refuses them; the default then falls back to int8.
                log.warning("%s; asking for int8 hints instead", refused)
                client.close()
                client = make_client(HintEncoding.INT8)
                client.connect()
            fallback = fallback_model(folder, fallback_after)
        processor = Processor(
            cfg, files.tensors, client.link if client else None, fallback, live, fallback_after
        )
    except BaseException:
        if client is not None:
            client.close()
        raise
    return Stream(files, processor, client)
