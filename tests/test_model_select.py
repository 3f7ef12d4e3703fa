"""Choosing a model by folder, shipped name, or task and hint delay."""

from __future__ import annotations

import pytest

from kboost_rt.model_files import ModelFileError
from kboost_rt.model_select import delay_for_round_trip, resolve_model, shipped_delays


@pytest.fixture
def root(tmp_path):
    for name in ("separate-small", "separate-large", "separate-boosted-d1", "separate-boosted-d6",
                 "separate-boosted-d3", "enhance-small"):  # fmt: skip
        (tmp_path / name).mkdir()
    return tmp_path


def test_task_and_delay_pick_the_model_of_the_folder(root):
    assert resolve_model(None, root=root).name == "separate-small"
    assert resolve_model(None, boosted=True, root=root).name == "separate-boosted-d3"
    assert resolve_model(None, "separate", 6, root=root).name == "separate-boosted-d6"
    assert resolve_model(None, "enhance", root=root).name == "enhance-small"
    assert resolve_model("separate-boosted-d1", root=root).name == "separate-boosted-d1"
    assert resolve_model(str(root / "enhance-small"), root=root) == root / "enhance-small"


def test_the_any_delay_model_runs_with_a_server_unless_a_delay_is_asked_for(root):
    from kboost_rt.model_select import model_for_round_trip

    (root / "separate-boosted").mkdir()
    assert resolve_model(None, boosted=True, root=root).name == "separate-boosted"
    assert resolve_model(None, "separate", 3, True, root=root).name == "separate-boosted-d3"
    assert resolve_model(None, root=root).name == "separate-small"  # no server: small
    # --delay auto has nothing to measure: no probe is sent (nothing listens there)
    model, rtt = model_for_round_trip(("127.0.0.1", 9), "separate", root=root)
    assert model.name == "separate-boosted" and rtt != rtt


def test_bad_selections_name_what_exists(root):
    with pytest.raises(ModelFileError, match="delays there: 1, 3, 6"):
        resolve_model(None, "separate", 2, root=root)
    with pytest.raises(ModelFileError, match="shipped: enhance-small"):
        resolve_model("nope", root=root)
    with pytest.raises(ModelFileError, match="no enhance model for a delay of 3 chunks in "):
        resolve_model(None, "enhance", 3, root=root)
    with pytest.raises(ModelFileError, match="fixed-delay models are not shipped; enhance-boos"):
        resolve_model(None, "enhance", 3, root=root)
    (root / "enhance-small").rmdir()
    with pytest.raises(ModelFileError, match="enhance-small: the shipped model is missing"):
        resolve_model(None, "enhance", root=root)
    with pytest.raises(ValueError, match="excludes"):
        resolve_model("separate-small", "separate", root=root)
    with pytest.raises(ValueError, match="unknown task"):
        resolve_model(None, "dereverb", root=root)


def test_smallest_delay_that_covers_the_round_trip(root):
    delays = shipped_delays("separate", root)
    assert delays == [1, 3, 6]
    assert delay_for_round_trip(0.5, delays) == 1
    assert delay_for_round_trip(1, delays) == 1
    assert delay_for_round_trip(2.5, delays) == 3
    assert delay_for_round_trip(5, delays) == 6
    assert delay_for_round_trip(9, delays) == 6  # none covers it: the most patient one
    with pytest.raises(ModelFileError):
        delay_for_round_trip(1, [])


def test_delay_auto_measures_the_round_trip_and_picks_the_model(tmp_path):
    """`process --local-server --delay auto` over real loopback UDP: the probe's
    round trip decides which shipped boosted model runs."""
    import dataclasses
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    import numpy as np
    import soundfile as sf

    from kboost_rt.config import PAPER_BOOSTED, PAPER_LARGE
    from kboost_rt.model_files import random_weights, save_model_files

    root = tmp_path / "models"
    save_model_files(root / "separate-large", PAPER_LARGE, random_weights(PAPER_LARGE, 1))
    for d in (1, 3, 6):
        cfg = dataclasses.replace(
            PAPER_BOOSTED,
            boost=dataclasses.replace(PAPER_BOOSTED.boost, delay=d),
            large_model="separate-large",
        )
        save_model_files(root / f"separate-boosted-d{d}", cfg, random_weights(cfg, d))
    sf.write(tmp_path / "in.wav", np.zeros((8000, 2), np.float32), 16000)
    cli = Path(sys.executable).parent / "kboost-rt"
    run = subprocess.run(
        [cli, "process", tmp_path / "in.wav", tmp_path / "out.wav", "--local-server",
         "--delay", "auto", "--quiet"],
        capture_output=True, text=True, timeout=120,
        env=dict(os.environ, KBOOST_RT_MODELS=str(root)),
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    found = re.search(r"round trip ([\d.]+) chunks .*: using separate-boosted-d(\d)", run.stderr)
    assert found, run.stderr
    rtt, delay = float(found.group(1)), int(found.group(2))
    assert delay == min([d for d in (1, 3, 6) if d >= rtt] or [6])
    assert (tmp_path / "out_s1.wav").is_file()

    bad = subprocess.run(
        [cli, "process", tmp_path / "in.wav", tmp_path / "o.wav", "--delay", "auto"],
        capture_output=True, text=True, env=dict(os.environ, KBOOST_RT_MODELS=str(root)),
    )  # fmt: skip
    assert bad.returncode == 2 and "--server or --local-server" in bad.stderr
