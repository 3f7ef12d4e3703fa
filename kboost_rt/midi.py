"""Live parameters from a MIDI controller.

A `MidiMapping` binds controls to parameters: CCs (7-bit, or 14-bit MSB/LSB
pairs n and n+32) for the continuous ones, notes (or CCs >= 64 as "on") for
the toggles, and notes that step through the sources. `MidiController`
turns raw messages into `LiveParams.set` calls, with a channel filter, MIDI
learn and soft takeover (a knob acts only once it reaches the current value,
so nothing jumps). Unknown or malformed messages are ignored and counted.
The rtmidi glue (`open_input`) only forwards messages to it.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from .params import GAIN_DB_RANGE, NAMES, LiveParams

CONTINUOUS = {"gain_db": GAIN_DB_RANGE, "wet": (0.0, 1.0)}
TOGGLES = ("boost", "bypass")
KINDS = ("cc", "cc14", "note")
CC, NOTE_ON, NOTE_OFF = 0xB0, 0x90, 0x80


@dataclass(frozen=True)
class Binding:
    param: str
    kind: str  # "cc", "cc14" (MSB number; LSB is number + 32) or "note"
    number: int
    channel: int | None = None  # 0..15, or None for any channel

    def validated(self) -> Binding:
        if self.param not in NAMES:
            raise ValueError(f"unknown parameter {self.param!r} (one of {', '.join(NAMES)})")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        top = 31 if self.kind == "cc14" else 127
        if type(self.number) is not int or not 0 <= self.number <= top:  # not True/False
            raise ValueError(f"{self.kind} number must be in 0..{top}, got {self.number!r}")
        if self.channel is not None and (
            type(self.channel) is not int or self.channel > 15 or self.channel < 0
        ):
            raise ValueError(f"channel must be 0..15 or absent, got {self.channel!r}")
        if self.kind == "cc14" and self.param not in CONTINUOUS:
            raise ValueError(f"14-bit CCs drive continuous parameters, not {self.param}")
        return self

    def matches(self, channel: int) -> bool:
        return self.channel is None or self.channel == channel


DEFAULT_MAP = (
    Binding("gain_db", "cc", 7),
    Binding("wet", "cc", 1),
    Binding("boost", "note", 36),
    Binding("bypass", "note", 37),
    Binding("source", "note", 38),
)


@dataclass
class MidiMapping:
    bindings: list[Binding]

    @classmethod
    def default(cls) -> MidiMapping:
        return cls(list(DEFAULT_MAP))

    def bind(self, binding: Binding) -> None:
        """Replace the parameter's bindings with this one; a control moves to the
        parameter it is bound to last (one parameter per control)."""
        binding.validated()
        control = (binding.kind, binding.number, binding.channel)
        self.bindings = [
            b
            for b in self.bindings
            if b.param != binding.param and (b.kind, b.number, b.channel) != control
        ] + [binding]

    def to_dict(self) -> dict:
        return {
            "bindings": [
                {k: v for k, v in asdict(b).items() if v is not None} for b in self.bindings
            ]
        }

    @classmethod
    def from_dict(cls, data: object) -> MidiMapping:
        if not isinstance(data, dict) or not isinstance(data.get("bindings"), list):
            raise ValueError("a MIDI map holds a list 'bindings'")
        bindings = []
        for i, item in enumerate(data["bindings"]):
            if not isinstance(item, dict) or set(item) - {"param", "kind", "number", "channel"}:
                raise ValueError(f"binding {i}: expected param, kind, number[, channel]")
            try:
                bindings.append(Binding(**item).validated())
            except TypeError:
                raise ValueError(f"binding {i}: expected param, kind, number[, channel]") from None
            except ValueError as e:
                raise ValueError(f"binding {i}: {e}") from None
        seen_params: dict[str, int] = {}
        seen_controls: dict[tuple, int] = {}
        for i, b in enumerate(bindings):
            if b.param in seen_params:
                raise ValueError(f"binding {i}: {b.param} is bound twice (also binding "
                                 f"{seen_params[b.param]})")  # fmt: skip
            control = (b.kind, b.number, b.channel)
            if control in seen_controls:
                raise ValueError(f"binding {i}: {b.kind} {b.number} drives two parameters "
                                 f"(also binding {seen_controls[control]})")  # fmt: skip
            seen_params[b.param], seen_controls[control] = i, i
        return cls(bindings)

    @classmethod
    def load(cls, path: str | os.PathLike) -> MidiMapping:
        """A .toml or .json file (`[[bindings]]` tables / a "bindings" list)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
            data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: cannot read a MIDI map ({e})") from None
        except RecursionError:
            raise ValueError(f"{path}: cannot read a MIDI map (nested too deeply)") from None
        try:
            return cls.from_dict(data)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        if path.suffix == ".toml":
            lines = []
            for b in self.to_dict()["bindings"]:
                lines.append("[[bindings]]")
                lines += [f"{k} = {json.dumps(v)}" for k, v in b.items()]
                lines.append("")
            text = "\n".join(lines)
        else:
            text = json.dumps(self.to_dict(), indent=2) + "\n"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)


class MidiController:
    def __init__(
        self,
        params: LiveParams,
        mapping: MidiMapping | None = None,
        channel: int | None = None,
        soft_takeover: bool = True,
    ):
        self.params = params
        self.mapping = mapping or MidiMapping.default()
        self.channel = channel
        self.soft_takeover = soft_takeover
        self.counts: Counter = Counter()
        self._learning: str | None = None
        self._msb: dict[tuple[int, int], int] = {}  # (channel, cc) -> last MSB of a 14-bit pair
        self._knob: dict[str, float] = {}  # param -> last knob position 0..1
        self._set_by_us: dict[str, float] = {}  # param -> the value this controller last set

    def learn(self, param: str) -> None:
        """Bind `param` to the next CC or note that arrives."""
        if param not in NAMES:
            raise ValueError(f"unknown parameter {param!r} (one of {', '.join(NAMES)})")
        self._learning = param

    @property
    def learning(self) -> str | None:
        return self._learning

    def handle(self, message) -> bool:
        """One raw MIDI message (a sequence of ints). True if it changed or bound something."""
        try:
            data = [int(b) for b in message]
        except (TypeError, ValueError):
            self.counts["malformed"] += 1
            return False
        if not data or not 0x80 <= data[0] <= 0xFF or any(not 0 <= b <= 0x7F for b in data[1:]):
            self.counts["malformed"] += 1
            return False
        kind, channel = data[0] & 0xF0, data[0] & 0x0F
        if kind not in (CC, NOTE_ON, NOTE_OFF) or data[0] >= 0xF0:
            self.counts["unknown"] += 1
            return False
        if len(data) != 3:
            self.counts["malformed"] += 1
            return False
        if self.channel is not None and channel != self.channel:
            self.counts["other_channel"] += 1
            return False
        number, value = data[1], data[2]
        pressed = kind == NOTE_ON and value > 0
        if self._learning is not None and (kind == CC or pressed):
            param, self._learning = self._learning, None
            self.mapping.bind(Binding(param, "cc" if kind == CC else "note", number, channel))
            self.counts["learned"] += 1
            return True
        if kind == CC:
            return self._cc(channel, number, value)
        if pressed:
            return self._press(channel, number)
        self.counts["ignored"] += 1  # note off, or note on with velocity 0
        return False

    def _cc(self, channel: int, number: int, value: int) -> bool:
        for b in self.mapping.bindings:
            if not b.matches(channel):
                continue
            if b.kind == "cc" and b.number == number:
                if b.param in CONTINUOUS:
                    return self._continuous(b.param, value / 127.0)
                return self._toggle_to(b.param, value >= 64)
            if b.kind == "cc14" and number == b.number:  # MSB: coarse value until the LSB
                self._msb[(channel, number)] = value
                return self._continuous(b.param, (value << 7) / 16383.0)
            if b.kind == "cc14" and number == b.number + 32:
                msb = self._msb.get((channel, b.number))
                if msb is None:
                    self.counts["lsb_without_msb"] += 1
                    return False
                return self._continuous(b.param, ((msb << 7) | value) / 16383.0)
        self.counts["unmapped"] += 1
        return False

    def _press(self, channel: int, number: int) -> bool:
        for b in self.mapping.bindings:
            if b.kind == "note" and b.number == number and b.matches(channel):
                current = self.params.snapshot()
                if b.param == "source":
                    self.params.set(source=(current.source + 1) % (self.params.sources + 1))
                elif b.param in TOGGLES:
                    self.params.set(**{b.param: not getattr(current, b.param)})
                else:
                    self.counts["unmapped"] += 1
                    return False
                self.counts["applied"] += 1
                return True
        self.counts["unmapped"] += 1
        return False

    def _toggle_to(self, param: str, on: bool) -> bool:
        if param == "source":
            self.counts["unmapped"] += 1
            return False
        self.params.set(**{param: on})
        self.counts["applied"] += 1
        return True

    def _continuous(self, param: str, position: float) -> bool:
        lo, hi = CONTINUOUS[param]
        current = getattr(self.params.snapshot(), param)
        here = (current - lo) / (hi - lo)
        last = self._knob.get(param)
        self._knob[param] = position
        if self.soft_takeover:
            moved_elsewhere = self._set_by_us.get(param) != current
            if moved_elsewhere:
                # Pick the knob up only when it reaches or crosses the current value.
                crossed = last is not None and (last - here) * (position - here) <= 0
                if not (crossed or abs(position - here) <= 1 / 127):
                    self.counts["takeover_wait"] += 1
                    return False
        value = lo + position * (hi - lo)
        self.params.set(**{param: value})
        self._set_by_us[param] = value
        self.counts["applied"] += 1
        return True


def midi_input(api: int | None = None):
    """An rtmidi.MidiIn on `api`, or on the first compiled API that works here (ALSA
    needs /dev/snd; JACK needs a running jackd)."""
    import rtmidi

    apis = [api] if api is not None else list(rtmidi.get_compiled_api())
    errors = []
    for candidate in apis:
        try:
            return rtmidi.MidiIn(candidate)
        except (rtmidi.SystemError, RuntimeError) as e:  # e.g. no ALSA sequencer
            errors.append(f"{rtmidi.get_api_display_name(candidate)}: {e}")
    raise ValueError("no MIDI API is usable here (" + "; ".join(errors) + ")")


def open_input(controller: MidiController, port: str, api: int | None = None):
    """Open the MIDI input port whose name contains `port` and feed `controller`.
    Returns the rtmidi.MidiIn (keep it alive; close_port() when done)."""
    midi_in = midi_input(api)
    names = midi_in.get_ports()
    matches = [i for i, name in enumerate(names) if port in name]
    if not matches:
        raise ValueError(f"no MIDI input port matching {port!r}; ports: {names or 'none'}")
    midi_in.open_port(matches[0])
    midi_in.set_callback(lambda event, _: controller.handle(event[0]))
    return midi_in
