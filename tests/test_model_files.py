"""Model folders: round trip and a clear error for every kind of bad file."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kboost_rt.config import PAPER_BOOSTED, PAPER_LARGE, PAPER_SMALL, ModelConfig
from kboost_rt.model_files import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    ModelFileError,
    load_model_files,
    save_model_files,
)
from kboost_rt.reference import build_model, load_model, save_model


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = build_model(PAPER_BOOSTED)
    folder = save_model(model, PAPER_BOOSTED, tmp_path / "boosted")
    return model, folder


def error_of(folder) -> str:
    with pytest.raises(ModelFileError) as info:
        load_model_files(folder)
    return str(info.value)


@pytest.mark.parametrize("cfg", [PAPER_SMALL, PAPER_LARGE, PAPER_BOOSTED])
def test_round_trip(tmp_path, cfg):
    torch.manual_seed(1)
    model = build_model(cfg).eval()
    save_model(model, cfg, tmp_path / "m")
    loaded, loaded_cfg = load_model(tmp_path / "m")
    assert loaded_cfg == cfg
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    x = torch.randn(1, 2, 1280)
    with torch.no_grad():
        if cfg.role == "boosted":
            hints = torch.randn(1, 8, 10, 97)
            assert torch.equal(model(x, hints)[0], loaded(x, hints)[0])
        else:
            assert torch.equal(model(x)[0], loaded(x)[0])


def test_config_is_readable_json(saved):
    _, folder = saved
    data = json.loads((folder / CONFIG_FILE).read_text())
    assert data["format"] == "kboost-rt-model" and data["role"] == "boosted"
    assert data["boost"]["delay"] == 3 and data["net"]["dim"] == 16
    assert ModelConfig.from_dict(data) == PAPER_BOOSTED


def test_missing_folder_and_files(tmp_path, saved):
    _, folder = saved
    assert "model folder not found" in error_of(tmp_path / "nope")
    (folder / WEIGHTS_FILE).unlink()
    assert f"{WEIGHTS_FILE}: missing" in error_of(folder)
    (folder / CONFIG_FILE).unlink()
    assert f"{CONFIG_FILE}: missing" in error_of(folder)


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda d: d.__setitem__("role", "medium"), "role must be one of"),
        (lambda d: d["net"].__setitem__("dim", 0), "net.dim must be in"),
        (lambda d: d["net"].__setitem__("dimm", 16), "unknown key(s) in net: dimm"),
        (lambda d: d["net"].__setitem__("dim", "16"), "net.dim must be an integer"),
        (lambda d: d["boost"].__setitem__("delay", 9), "boost.delay must be in [0, 8]"),
        (lambda d: d["boost"].__setitem__("heads", 3), "divisible by boost.heads"),
        (lambda d: d.pop("boost"), "needs a 'boost' section"),
        (lambda d: d.__setitem__("format_version", 99), "unsupported format_version 99"),
        (lambda d: d.__setitem__("format", "onnx"), "'format' must be"),
        (lambda d: d.__setitem__("large_model", "/etc"), "a model folder's name, not a path"),
        (
            lambda d: d["boost"].update(heads=16, qk_dim=65536, frames=250),
            "would hold about 2,074 MB (its attention rings), over the 256 MB",
        ),
        (lambda d: d.__setitem__("large_model", ".."), "a model folder's name, not a path"),
    ],
)
def test_wrong_config(saved, mutate, message):
    _, folder = saved
    data = json.loads((folder / CONFIG_FILE).read_text())
    mutate(data)
    (folder / CONFIG_FILE).write_text(json.dumps(data))
    err = error_of(folder)
    assert message in err and CONFIG_FILE in err


def test_config_not_json(saved):
    _, folder = saved
    (folder / CONFIG_FILE).write_text('{"role": "small",')
    assert "not valid JSON (line 1" in error_of(folder)
    (folder / CONFIG_FILE).write_bytes(b"\xff\xfe\x00garbage")
    assert "not UTF-8" in error_of(folder)
    (folder / CONFIG_FILE).write_text("[" * 100_000 + "]" * 100_000)
    assert "nested too deeply" in error_of(folder)


@pytest.mark.parametrize("keep", [0, 7, 100, -1, -1000])
def test_truncated_weights(saved, keep):
    _, folder = saved
    blob = (folder / WEIGHTS_FILE).read_bytes()
    (folder / WEIGHTS_FILE).write_bytes(blob[:keep] if keep >= 0 else blob[:keep])
    assert "corrupt or truncated safetensors file" in error_of(folder)


def test_garbage_weights(saved):
    _, folder = saved
    (folder / WEIGHTS_FILE).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!" * 3)
    assert "corrupt or truncated safetensors file" in error_of(folder)


def test_flipped_data_byte_fails_the_checksum(saved):
    _, folder = saved
    blob = bytearray((folder / WEIGHTS_FILE).read_bytes())
    blob[-5] ^= 0x01  # inside the last tensor's data; still a finite float
    (folder / WEIGHTS_FILE).write_bytes(bytes(blob))
    assert "checksum mismatch" in error_of(folder)


def _rewrite(folder, edit):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(folder / WEIGHTS_FILE)
    edit(tensors)
    save_file(tensors, folder / WEIGHTS_FILE)  # no checksum: plain safetensors


def test_weights_without_checksum_still_load(saved):
    _, folder = saved
    _rewrite(folder, lambda t: None)
    assert load_model_files(folder).config == PAPER_BOOSTED


def test_wrong_shape_names_the_tensor(saved):
    _, folder = saved
    name = "small.blocks.1.inter_lstm.weight_hh_l0"
    _rewrite(folder, lambda t: t.__setitem__(name, np.zeros((64, 15), np.float32)))
    err = error_of(folder)
    assert f"'{name}' has shape (64, 15), config wants (64, 16)" in err


def test_missing_tensor_names_the_first_one(saved):
    _, folder = saved

    def drop(t):
        del t["merges.1.attention.out.prelu"]
        del t["small.encoder.bias"]

    _rewrite(folder, drop)
    assert "missing tensor 'small.encoder.bias'" in error_of(folder)


def test_wrong_dtype_and_non_finite_and_extra(saved):
    _, folder = saved
    name = "small.decoder.bias"
    _rewrite(folder, lambda t: t.__setitem__(name, t[name].astype(np.float16)))
    assert f"'{name}' has dtype float16, expected float32" in error_of(folder)
    _rewrite(folder, lambda t: t.__setitem__(name, np.full(8, np.nan, np.float32)))
    assert f"'{name}' contains NaN or Inf" in error_of(folder)
    _rewrite(folder, lambda t: t.update({name: np.zeros(8, np.float32), "extra.w": t[name]}))
    assert "unexpected tensor 'extra.w'" in error_of(folder)


def test_config_that_does_not_match_the_weights(tmp_path):
    save_model(build_model(PAPER_SMALL), PAPER_SMALL, tmp_path / "m")
    (tmp_path / "m" / CONFIG_FILE).write_text(
        json.dumps(PAPER_LARGE.to_dict())
    )  # large config, small weights
    assert "'encoder.weight' has shape (16, 4, 3, 3), config wants (64, 4, 3, 3)" in error_of(
        tmp_path / "m"
    )


def test_save_refuses_tensors_that_do_not_match(tmp_path):
    with pytest.raises(ModelFileError, match="missing tensor"):
        save_model_files(tmp_path / "m", PAPER_SMALL, {})
    assert not (tmp_path / "m").exists()


def test_cli_reports_bad_file_without_traceback(saved):
    _, folder = saved
    (folder / WEIGHTS_FILE).write_bytes(b"short")
    cli = Path(sys.executable).parent / "kboost-rt"
    result = subprocess.run([cli, "info", str(folder)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "kboost-rt: error:" in result.stderr and "corrupt or truncated" in result.stderr
    assert "Traceback" not in result.stderr
