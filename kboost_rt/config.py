"""Model configurations: what `config.json` in a model folder holds.

Pure Python (no torch), so the device side can validate and cost a model
without the training stack.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .signal_path import N_BINS

FORMAT = "kboost-rt-model"
FORMAT_VERSION = 1
ROLES = ("small", "large", "boosted")
MAX_DELAY = 8


class ConfigError(ValueError):
    """A model configuration that is malformed or out of range."""


@dataclass(frozen=True)
class NetConfig:
    """A GridNet body: the small model (no attention) or the large one."""

    channels: int = 2  # M, input microphones
    sources: int = 2  # S, output sources
    dim: int = 16  # D, feature channels
    hidden: int = 16  # H, LSTM hidden size per direction
    blocks: int = 3  # B
    attention_heads: int = 0  # 0: no self-attention (the small model)
    attention_qk_dim: int = 512  # E = ceil(attention_qk_dim / 97)
    attention_frames: int = 50  # frames each query sees, itself included

    @property
    def spec_channels(self) -> int:
        """Real/imag maps of every (source, channel) pair the decoder emits."""
        return 2 * self.sources * self.channels

    @property
    def attention_e(self) -> int:
        return math.ceil(self.attention_qk_dim / N_BINS)

    def validate(self) -> None:
        _check_choice("net.channels", self.channels, (1, 2))
        _check_choice("net.sources", self.sources, (1, 2))
        for name in ("dim", "hidden", "blocks"):
            _check_range(f"net.{name}", getattr(self, name), 1, 1024)
        _check_range("net.attention_heads", self.attention_heads, 0, 64)
        if self.attention_heads:
            if self.dim % self.attention_heads:
                raise ConfigError(
                    f"net.dim ({self.dim}) must be divisible by "
                    f"net.attention_heads ({self.attention_heads})"
                )
            _check_range("net.attention_qk_dim", self.attention_qk_dim, 1, 65536)
            _check_range("net.attention_frames", self.attention_frames, 1, 1000)


@dataclass(frozen=True)
class BoostConfig:
    """The hint path: hint generator (remote side) and merge layers (device)."""

    hint_channels: int = 8  # C_h
    delay: int = 3  # d, chunks between a hint's frame and its use (fixed-delay models)
    # 0: a fixed-delay model. N: an any-delay model, which uses each hint at its
    # real age 1..N (told the age) and has delay 0.
    max_age: int = 0
    heads: int = 4  # cross-attention heads
    qk_dim: int = 256  # E = ceil(qk_dim / 97)
    frames: int = 50  # aligned frames each query sees

    @property
    def e(self) -> int:
        return math.ceil(self.qk_dim / N_BINS)

    @property
    def any_delay(self) -> bool:
        return self.max_age > 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if not self.max_age:  # fixed-delay configs read as they always have
            del out["max_age"]
        return out

    def validate(self, net: NetConfig) -> None:
        _check_range("boost.hint_channels", self.hint_channels, 1, 256)
        _check_range("boost.delay", self.delay, 0, MAX_DELAY)
        _check_range("boost.heads", self.heads, 1, 64)
        _check_range("boost.qk_dim", self.qk_dim, 1, 65536)
        _check_range("boost.frames", self.frames, 1, 1000)
        _check_range("boost.max_age", self.max_age, 0, MAX_DELAY)
        if self.max_age:
            if self.delay:
                raise ConfigError("an any-delay model (boost.max_age > 0) needs boost.delay 0")
            if self.frames <= self.max_age:
                raise ConfigError("boost.frames must exceed boost.max_age: a hint fills its frame")
        if net.dim % self.heads:
            raise ConfigError(
                f"net.dim ({net.dim}) must be divisible by boost.heads ({self.heads})"
            )
        if net.blocks < 2:
            raise ConfigError("a boosted model needs net.blocks >= 2 (merges follow blocks 1..B-1)")


@dataclass(frozen=True)
class ModelConfig:
    role: str  # "small", "large" or "boosted"
    net: NetConfig
    boost: BoostConfig | None = None
    task: str = ""  # e.g. "separate", "enhance"; informational
    large_model: str = ""  # boosted: name of the large model its hints come from
    notes: dict[str, Any] = field(default_factory=dict)  # free-form: training recipe etc.

    def validate(self) -> ModelConfig:
        _check_choice("role", self.role, ROLES)
        self.net.validate()
        if self.role == "boosted":
            if self.boost is None:
                raise ConfigError("role 'boosted' needs a 'boost' section")
            if self.net.attention_heads:
                raise ConfigError("a boosted model's small net has no self-attention")
            self.boost.validate(self.net)
        elif self.boost is not None:
            raise ConfigError(f"role {self.role!r} must not have a 'boost' section")
        if self.role == "large" and not self.net.attention_heads:
            raise ConfigError("role 'large' needs net.attention_heads > 0")
        name = self.large_model
        if name and (name in (".", "..") or "/" in name or "\\" in name or "\0" in name):
            raise ConfigError(f"large_model must be a model folder's name, not a path: {name!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION}
        out["role"] = self.role
        out["task"] = self.task
        out["net"] = asdict(self.net)
        if self.boost is not None:
            out["boost"] = self.boost.to_dict()
        if self.large_model:
            out["large_model"] = self.large_model
        if self.notes:
            out["notes"] = self.notes
        return out

    @classmethod
    def from_dict(cls, data: Any) -> ModelConfig:
        if not isinstance(data, dict):
            raise ConfigError("config must be a JSON object")
        if data.get("format") != FORMAT:
            raise ConfigError(f"'format' must be {FORMAT!r}, got {data.get('format')!r}")
        if data.get("format_version") != FORMAT_VERSION:
            raise ConfigError(
                f"unsupported format_version {data.get('format_version')!r} "
                f"(this kboost-rt reads version {FORMAT_VERSION})"
            )
        known = {"format", "format_version", "role", "task", "net", "boost", "large_model", "notes"}
        _reject_unknown("config", data, known)
        if "role" not in data or "net" not in data:
            raise ConfigError("config needs 'role' and 'net'")
        boost = data.get("boost")
        cfg = cls(
            role=data["role"],
            net=_section(NetConfig, "net", data["net"]),
            boost=None if boost is None else _section(BoostConfig, "boost", boost),
            task=_typed("task", data.get("task", ""), str),
            large_model=_typed("large_model", data.get("large_model", ""), str),
            notes=_typed("notes", data.get("notes", {}), dict),
        )
        return cfg.validate()


def _section(cls: type, name: str, data: Any) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"'{name}' must be a JSON object")
    names = {f.name for f in fields(cls)}
    _reject_unknown(name, data, names)
    for key, value in data.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}.{key} must be an integer, got {value!r}")
    return cls(**data)


def _reject_unknown(where: str, data: dict, known: set[str]) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) in {where}: {', '.join(unknown)}")


def _typed(name: str, value: Any, kind: type) -> Any:
    if not isinstance(value, kind):
        raise ConfigError(f"'{name}' must be a {kind.__name__}, got {value!r}")
    return value


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {list(choices)}, got {value!r}")


def _check_range(name: str, value: int, lo: int, hi: int) -> None:
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be in [{lo}, {hi}], got {value}")


# Sizes of the paper (binaural 2-speaker separation), for cost checks and demos.
PAPER_SMALL = ModelConfig(role="small", task="separate", net=NetConfig(dim=16, hidden=16))
PAPER_LARGE = ModelConfig(
    role="large", task="separate", net=NetConfig(dim=64, hidden=64, attention_heads=8)
)
PAPER_BOOSTED = ModelConfig(
    role="boosted",
    task="separate",
    net=NetConfig(dim=16, hidden=16),
    boost=BoostConfig(hint_channels=8, delay=3),
    large_model="paper-large",
)
PAPER_BOOSTED_ANY_DELAY = ModelConfig(
    role="boosted",
    task="separate",
    net=NetConfig(dim=16, hidden=16),
    boost=BoostConfig(hint_channels=8, delay=0, max_age=8),
    large_model="paper-large",
)
PRESETS = {
    "paper-small": PAPER_SMALL,
    "paper-large": PAPER_LARGE,
    "paper-boosted": PAPER_BOOSTED,
    "paper-boosted-any-delay": PAPER_BOOSTED_ANY_DELAY,
}
