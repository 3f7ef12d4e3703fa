"""MIDI: default map, 14-bit CCs, soft takeover, learn, channel filter, map files,
bad messages; and a real JACK MIDI port (jackd with the dummy backend)."""

import subprocess
import time

import pytest

from kboost_rt.midi import Binding, MidiController, MidiMapping, open_input
from kboost_rt.params import LiveParams, Params

CC, ON, OFF = 0xB0, 0x90, 0x80


def controller(**kw):
    return MidiController(LiveParams(), **kw)


def test_default_map_cc_and_notes():
    c = controller(soft_takeover=False)
    assert c.handle([CC, 7, 127]) and c.params.snapshot().gain_db == pytest.approx(12.0)
    assert c.handle([CC, 1, 0]) and c.params.snapshot().wet == 0.0
    assert c.handle([ON, 36, 100]) and c.params.snapshot().boost is False
    assert not c.handle([OFF, 36, 0])  # note off does nothing
    assert c.handle([ON, 37, 1]) and c.params.snapshot().bypass is True
    sources = []
    for _ in range(3):
        c.handle([ON | 3, 38, 64])  # any channel by default
        sources.append(c.params.snapshot().source)
    assert sources == [1, 2, 0]


def test_soft_takeover():
    c = controller()  # gain is 0 dB = position 60/72 of the knob's travel
    assert not c.handle([CC, 7, 10])  # far below: waits
    assert not c.handle([CC, 7, 30])
    assert c.params.snapshot().gain_db == 0.0 and c.counts["takeover_wait"] == 2
    assert c.handle([CC, 7, 110])  # crossed the current value: picked up
    assert c.handle([CC, 7, 20])  # now it follows freely
    assert c.params.snapshot().gain_db == pytest.approx(-60 + 72 * 20 / 127)
    c.params.set(gain_db=6.0)  # moved elsewhere (another control, the UI)
    assert not c.handle([CC, 7, 25])  # so the knob has to pick it up again


def test_14_bit_cc_pairs():
    mapping = MidiMapping([Binding("wet", "cc14", 2)])
    c = MidiController(LiveParams(Params(wet=0.0)), mapping, soft_takeover=False)
    assert not c.handle([CC, 34, 5])  # LSB before any MSB is ignored
    assert c.handle([CC, 2, 64])  # MSB: coarse
    assert c.params.snapshot().wet == pytest.approx((64 << 7) / 16383)
    assert c.handle([CC, 34, 100])  # LSB refines
    assert c.params.snapshot().wet == pytest.approx(((64 << 7) | 100) / 16383)


def test_learn_channel_filter_and_bad_messages():
    c = controller(channel=2, soft_takeover=False)
    c.learn("wet")
    assert c.learning == "wet"
    assert not c.handle([CC | 5, 20, 64])  # other channel: filtered, still learning
    assert c.handle([CC | 2, 20, 64]) and c.learning is None
    assert Binding("wet", "cc", 20, 2) in c.mapping.bindings
    assert not any(b.param == "wet" and b.number == 1 for b in c.mapping.bindings)
    assert c.handle([CC | 2, 20, 127]) and c.params.snapshot().wet == 1.0
    for bad in (
        [],
        [0x40, 1, 2],
        [CC | 2, 200, 1],
        [CC | 2, 7],
        ["x"],
        None,
        [0xF8],
        [0xE2, 0, 64],
        [CC | 2, 99, 1],
    ):
        assert not c.handle(bad)
    assert c.counts["malformed"] == 6 and c.counts["unknown"] == 2
    assert c.counts["unmapped"] == 1 and c.counts["other_channel"] == 1
    with pytest.raises(ValueError):
        c.learn("volume")


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_map_file_round_trip_and_errors(tmp_path, suffix):
    mapping = MidiMapping.default()
    mapping.bind(Binding("gain_db", "cc14", 3, channel=1))
    path = tmp_path / f"map{suffix}"
    mapping.save(path)
    assert MidiMapping.load(path) == mapping
    path.write_text(
        '{"bindings": [{"param": "volume", "kind": "cc", "number": 1}]}'
        if suffix == ".json"
        else '[[bindings]]\nparam = "wet"\nkind = "cc"\nnumber = 300\n'
    )
    with pytest.raises(ValueError, match="binding 0"):
        MidiMapping.load(path)
    path.write_text("{{{")
    with pytest.raises(ValueError, match="cannot read a MIDI map"):
        MidiMapping.load(path)


def test_map_files_are_validated_strictly(tmp_path):
    path = tmp_path / "map.json"
    cases = {
        '{"bindings": [{"param": "wet", "kind": "cc", "number": true}]}': "number must be",
        '{"bindings": [{"param": "wet", "kind": "cc", "number": 1, "channel": false}]}': "channel",
        '{"bindings": [{"param": "wet", "kind": "cc", "number": 1},'
        ' {"param": "wet", "kind": "cc", "number": 2}]}': "wet is bound twice",
        '{"bindings": [{"param": "wet", "kind": "cc", "number": 1},'
        ' {"param": "gain_db", "kind": "cc", "number": 1}]}': "drives two parameters",
        "[" * 100_000 + "]" * 100_000: "nested too deeply",
    }
    for text, message in cases.items():
        path.write_text(text)
        with pytest.raises(ValueError, match=message):
            MidiMapping.load(path)


def test_a_midi_map_without_a_port_is_an_error(tmp_path, capsys):
    from kboost_rt.cli import main

    MidiMapping.default().save(tmp_path / "map.json")
    assert main(["live", "--midi-map", str(tmp_path / "map.json"), "--seconds", "1"]) == 2
    assert "--midi-map needs --midi-port" in capsys.readouterr().err


def test_real_jack_midi_port_drives_the_parameters(jack_server, monkeypatch):
    rtmidi = pytest.importorskip("rtmidi")
    monkeypatch.setenv("JACK_DEFAULT_SERVER", jack_server)
    sender = rtmidi.MidiOut(rtmidi.API_UNIX_JACK)
    sender.open_virtual_port("kboost-knobs")
    c = controller(soft_takeover=False)
    port = open_input(c, "kboost-knobs", api=rtmidi.API_UNIX_JACK)
    try:
        # Connect the virtual output to our input, then move the knobs.
        import jack

        client = jack.Client("kboost-test-connect", servername=jack_server)
        outs = [
            p for p in client.get_ports(is_midi=True, is_output=True) if "kboost-knobs" in p.name
        ]
        ins = [p for p in client.get_ports(is_midi=True, is_input=True) if "RtMidiIn" in p.name]
        if outs and ins and not client.get_all_connections(outs[0]):
            client.connect(outs[0], ins[0])
        time.sleep(0.2)
        sender.send_message([CC, 1, 0])
        sender.send_message([ON, 37, 100])
        sender.send_message([CC, 7, 127])
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and c.counts["applied"] < 3:
            time.sleep(0.02)
        p = c.params.snapshot()
        assert (p.wet, p.bypass, p.gain_db) == (0.0, True, pytest.approx(12.0))
        client.close()
    finally:
        port.close_port()
        sender.close_port()


def test_midi_learn_command_binds_the_next_control(jack_server, tmp_path, monkeypatch):
    import sys
    from pathlib import Path

    rtmidi = pytest.importorskip("rtmidi")
    monkeypatch.setenv("JACK_DEFAULT_SERVER", jack_server)
    sender = rtmidi.MidiOut(rtmidi.API_UNIX_JACK)
    sender.open_virtual_port("kboost-learn")
    cli = str(Path(sys.executable).parent / "kboost-rt")
    learn = subprocess.Popen(
        [
            cli,
            "midi",
            "learn",
            "wet",
            "--port",
            "kboost-learn",
            "--map",
            str(tmp_path / "map.toml"),
            "--timeout",
            "10",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        import jack

        client = jack.Client("kboost-learn-connect", servername=jack_server)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and learn.poll() is None:
            outs = [
                p
                for p in client.get_ports(is_midi=True, is_output=True)
                if "kboost-learn" in p.name
            ]
            ins = [p for p in client.get_ports(is_midi=True, is_input=True) if "RtMidiIn" in p.name]
            if outs and ins:
                if not client.get_all_connections(outs[0]):
                    try:
                        client.connect(outs[0], ins[0])
                    except jack.JackErrorCode:  # `learn` connected it meanwhile
                        pass
                sender.send_message([CC | 4, 21, 90])
            time.sleep(0.1)
        client.close()
        out, err = learn.communicate(timeout=15)
    finally:
        sender.close_port()
    assert learn.returncode == 0, err
    assert "wet <- cc 21 on channel 4" in out
    assert Binding("wet", "cc", 21, 4) in MidiMapping.load(tmp_path / "map.toml").bindings
