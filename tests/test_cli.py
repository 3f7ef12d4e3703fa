"""`kboost-rt models` and `kboost-rt info` print the cost tables."""

import pytest
import torch

from kboost_rt.cli import main
from kboost_rt.config import PAPER_SMALL
from kboost_rt.reference import build_model, save_model


def test_models_lists_presets_and_folders(tmp_path, capsys):
    torch.manual_seed(0)
    save_model(build_model(PAPER_SMALL), PAPER_SMALL, tmp_path / "separate-small")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{}")
    assert main(["models", "--dir", str(tmp_path)]) == 1  # the broken folder is reported
    out, err = capsys.readouterr()
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "2.18 M" in lines["paper-small"] and "2.67 M" in lines["paper-boosted"]
    assert "38.65 M" in lines["paper-large"] and "0.06 M" in lines["paper-boosted"]
    assert "2.18 M" in lines["separate-small"]
    assert "broken" in err and "'format' must be" in err


def test_info_on_folder_and_preset(tmp_path, capsys):
    save_model(build_model(PAPER_SMALL), PAPER_SMALL, tmp_path / "m")
    assert main(["info", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "weights OK" in out and "2,179,008" in out
    from kboost_rt import _native

    assert f"Native kernels: {_native.simd()} (" in out  # and why
    assert main(["info", "paper-large"]) == 0
    assert "38,654,112" in capsys.readouterr().out
    assert main(["info", "separate-boosted"]) == 0  # shipped, with its hint codec
    assert "hint codec OK (96 components: pca hints 23.1 kB/s keyed)" in capsys.readouterr().out


def test_info_on_missing_model(tmp_path, capsys):
    assert main(["info", str(tmp_path / "none")]) == 2
    assert "model folder not found" in capsys.readouterr().err


def test_unknown_command_exits_with_usage():
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_train_on_a_missing_gpu_is_refused(capsys):
    assert main(["train", "separate-large", "--device", "cuda"]) == 2
    assert "torch sees no CUDA GPU" in capsys.readouterr().err
    assert main(["train", "separate-large", "--workers", "-1"]) == 2
    assert "--workers" in capsys.readouterr().err


def test_train_names_a_missing_model_it_starts_from(tmp_path, capsys):
    out = ["--out", str(tmp_path)]
    assert main(["train", "separate-boosted", *out]) == 2
    assert "separate-boosted needs separate-large, which is not in" in capsys.readouterr().err
    (tmp_path / "separate-large").mkdir()
    assert main(["train", "separate-boosted", *out]) == 2
    err = capsys.readouterr().err
    assert "needs separate-boosted-d1" in err
    assert "kboost-rt train separate-boosted-d1 separate-boosted" in err


def test_train_list_marks_the_recipes_without_a_shipped_model(capsys):
    assert main(["train", "--list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines["separate-boosted-d1"].endswith("(not shipped)")
    assert "not shipped" not in lines["separate-boosted"] + lines["enhance-small"]
