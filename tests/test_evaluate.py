"""`kboost-rt eval`: SI-SDR(i) arithmetic and the full tool on random models."""

import dataclasses
import json

import numpy as np
import pytest
import soundfile as sf

from kboost_rt.cli import main
from kboost_rt.config import PAPER_BOOSTED, PAPER_LARGE, PAPER_SMALL
from kboost_rt.costs import macs_per_chunk
from kboost_rt.evaluate import paired_difference, si_sdr, si_sdr_improvement
from kboost_rt.model_files import random_weights, save_model_files
from kboost_rt.signal_path import CHUNK, LOOKAHEAD

RNG = np.random.default_rng(0)


def test_si_sdr_values():
    ref = RNG.standard_normal(16000)
    ref -= ref.mean()
    noise = RNG.standard_normal(16000)
    noise -= noise.mean()
    noise -= np.dot(noise, ref) / np.dot(ref, ref) * ref  # orthogonal to the reference
    noise *= np.sqrt(np.dot(ref, ref) / np.dot(noise, noise)) / 10  # 20 dB below
    assert si_sdr(ref + noise, ref) == pytest.approx(20.0, abs=1e-6)
    assert si_sdr(3.0 * (ref + noise), ref) == pytest.approx(20.0, abs=1e-6)  # scale-free
    assert si_sdr(ref, ref) > 70


def test_si_sdr_improvement_is_permutation_invariant():
    refs = RNG.standard_normal((2, 2, 8000))
    mixture = refs.sum(axis=0)
    assert si_sdr_improvement(mixture[None].repeat(2, 0), refs, mixture) == pytest.approx(0.0)
    good = refs + 0.01 * RNG.standard_normal(refs.shape)
    assert si_sdr_improvement(good, refs, mixture) == pytest.approx(
        si_sdr_improvement(good[::-1], refs, mixture)
    )
    assert si_sdr_improvement(good, refs, mixture) > 30


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    models = root / "models"
    small = dataclasses.replace(PAPER_SMALL, net=dataclasses.replace(PAPER_SMALL.net))
    save_model_files(models / "separate-small", small, random_weights(small, 1))
    save_model_files(models / "separate-large", PAPER_LARGE, random_weights(PAPER_LARGE, 2))
    for d in (1, 3):
        cfg = dataclasses.replace(
            PAPER_BOOSTED, boost=dataclasses.replace(PAPER_BOOSTED.boost, delay=d)
        )
        save_model_files(models / f"separate-boosted-d{d}", cfg, random_weights(cfg, 3 + d))
    data = root / "data"
    for i in range(2):
        ex = data / f"ex{i}"
        ex.mkdir(parents=True)
        sources = 0.1 * RNG.standard_normal((2, 6000, 2)).astype(np.float32)
        for s in range(2):
            sf.write(ex / f"source{s + 1}.wav", sources[s], 16000, subtype="FLOAT")
        sf.write(ex / "mixture.wav", sources.sum(0), 16000, subtype="FLOAT")
    return root


def test_eval_writes_the_documented_json_and_plot(setup, capsys):
    out = setup / "results.json"
    args = [
        "eval",
        "--task",
        "separate",
        "--data",
        str(setup / "data"),
        "--models",
        str(setup / "models"),
        "--delays",
        "1,3",
        "--hint-loss",
        "0,0.3",
        "--json",
        str(out),
    ]
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert report["task"] == "separate" and report["n_examples"] == 2
    rows = report["results"]
    assert [r["role"] for r in rows] == ["small", "large"] + ["boosted"] * 4
    assert [(r["delay"], r["hint_loss"]) for r in rows[2:]] == [
        (1, 0.0),
        (1, 0.3),
        (3, 0.0),
        (3, 0.3),
    ]
    assert rows[0]["macs_per_chunk"] == macs_per_chunk(PAPER_SMALL)["device"]
    for r in rows:  # per-example scores, for paired comparisons
        assert len(r["si_sdr_i_examples"]) == 2
        assert np.mean(r["si_sdr_i_examples"]) == pytest.approx(r["si_sdr_i"], abs=1e-3)
    assert all(np.isfinite(r["si_sdr_i"]) for r in rows)
    assert rows[2]["si_sdr_i"] != rows[3]["si_sdr_i"]  # losing hints changes the output
    assert out.with_suffix(".png").stat().st_size > 1000
    assert "separate-boosted-d3" in capsys.readouterr().out


def test_eval_reports_missing_data_and_models(setup, tmp_path, capsys):
    base = ["eval", "--task", "separate", "--json", str(tmp_path / "r.json")]
    assert main([*base, "--data", str(tmp_path), "--models", str(setup / "models")]) == 2
    assert "no examples" in capsys.readouterr().err
    assert main([*base, "--data", str(setup / "data"), "--models", str(tmp_path)]) == 2
    assert "model folder not found" in capsys.readouterr().err


def test_eval_compares_hint_encodings_through_the_wire_format(setup):
    out = setup / "enc.json"
    args = ["eval", "--task", "separate", "--data", str(setup / "data"), "--models",
            str(setup / "models"), "--delays", "1", "--hint-encodings", "float32,float16,int8",
            "--json", str(out)]  # fmt: skip
    assert main(args) == 0
    rows = [r for r in json.loads(out.read_text())["results"] if r["role"] == "boosted"]
    scores = {r["hint_encoding"]: r["si_sdr_i"] for r in rows}
    assert set(scores) == {"float32", "float16", "int8"}
    # Quantised hints change the output a little, not a lot.
    assert scores["float16"] != scores["float32"] or scores["int8"] != scores["float32"]
    assert abs(scores["int8"] - scores["float32"]) < 3.0
    assert main([*args[:-2], "--hint-encodings", "bf16", "--json", str(out)]) == 2


def test_eval_with_the_small_model_fallback(setup, capsys):
    out = setup / "fallback.json"
    args = ["eval", "--task", "separate", "--data", str(setup / "data"), "--models",
            str(setup / "models"), "--delays", "3", "--hint-loss", "0,1",
            "--json", str(out)]  # fmt: skip
    assert main(args) == 0
    alone = json.loads(out.read_text())["results"]
    assert main([*args, "--fallback-after", "4"]) == 0
    assert "small-model fallback after 4 chunks" in capsys.readouterr().out
    rows = json.loads(out.read_text())["results"]
    small, boosted = rows[0], rows[2:]
    assert all(r["fallback_after"] == 4 for r in boosted)
    assert boosted[0]["macs_per_chunk"] == alone[2]["macs_per_chunk"] + small["macs_per_chunk"]
    assert boosted[0]["si_sdr_i"] == alone[2]["si_sdr_i"]  # every hint: never falls back
    assert boosted[1]["si_sdr_i"] != alone[3]["si_sdr_i"]  # every hint lost: it falls back


def test_eval_streams_the_small_model_once_the_fallback_took_over(setup):
    from kboost_rt import _native
    from kboost_rt.evaluate import _stream
    from kboost_rt.model_files import load_model_files
    from kboost_rt.processor import Processor

    models = setup / "models"
    small_files = load_model_files(models / "separate-small")
    boosted_files = load_model_files(models / "separate-boosted-d3")
    small = Processor(small_files.config, small_files.tensors)
    link = _native.HintLink(2, boosted_files.config.boost.hint_channels, 3)
    boosted = Processor(boosted_files.config, boosted_files.tensors, link, small_files, None, 4)
    x = (0.1 * np.random.default_rng(5).standard_normal((2, 4000))).astype(np.float32)
    got = _stream(boosted, x, [None] * 40)
    want = _stream(small, x)
    order, gains = boosted.fallback_mapping()  # learnt over chunks 0-5, then held
    want = np.stack([(gains[i] * want[j]).astype(np.float32) for i, j in enumerate(order)])
    # Chunks 0-2 cannot have hints (d = 3); 3-6 are the 4 missing ones, the last
    # fading over; from chunk 7 on the small model plays. Output lags by the look-ahead.
    start = 7 * CHUNK - LOOKAHEAD
    assert np.array_equal(got[..., start:], want[..., start:])
    assert not np.allclose(got[..., :start], want[..., :start])


def test_paired_difference_and_its_confidence_interval():
    small = {"si_sdr_i_examples": [1.0, 2.0, 3.0, 4.0]}
    boosted = {"si_sdr_i_examples": [1.5, 2.3, 3.7, 4.5]}  # differences 0.5, 0.3, 0.7, 0.5
    mean, half = paired_difference(boosted, small)
    assert mean == pytest.approx(0.5)
    assert half == pytest.approx(1.96 * np.std([0.5, 0.3, 0.7, 0.5], ddof=1) / 2)
    assert paired_difference({"si_sdr_i": 1.0}, small) is None  # an older results file


def test_eval_runs_the_any_delay_model_at_every_age_and_under_jitter(setup, capsys):
    import shutil

    from kboost_rt.config import PAPER_BOOSTED_ANY_DELAY

    models = setup / "models-any"
    for name in ("separate-small", "separate-large", "separate-boosted-d3"):
        shutil.copytree(setup / "models" / name, models / name, dirs_exist_ok=True)
    cfg = PAPER_BOOSTED_ANY_DELAY
    save_model_files(models / "separate-boosted", cfg, random_weights(cfg, 9))
    out = setup / "any.json"
    base = ["eval", "--task", "separate", "--data", str(setup / "data"), "--models", str(models),
            "--json", str(out)]  # fmt: skip

    def rows(*extra):
        assert main([*base, *extra]) == 0
        found = json.loads(out.read_text())["results"]
        return {(r["model"], r["delay"], r.get("jitter")): r for r in found[2:]}

    at = rows("--delays", "1,3")  # no d1 model: the any-delay one still runs at age 1
    assert set(at) == {
        ("separate-boosted-d3", 3, None),
        ("separate-boosted", 1, None),
        ("separate-boosted", 3, None),
    }
    assert at[("separate-boosted", 1, None)]["any_delay"] is True
    assert "any_delay" not in at[("separate-boosted-d3", 3, None)]
    assert "separate-boosted vs separate-boosted-d3 (age 3, 0% lost)" in capsys.readouterr().out
    # A jitter of one age is that age's schedule: the same scores, hint for hint.
    same = rows("--delays", "3", "--jitter", "3-3")
    assert (
        same[("separate-boosted-d3", None, "3-3")]["si_sdr_i_examples"]
        == (at[("separate-boosted-d3", 3, None)]["si_sdr_i_examples"])
    )
    assert (
        same[("separate-boosted", None, "3-3")]["si_sdr_i_examples"]
        == (at[("separate-boosted", 3, None)]["si_sdr_i_examples"])
    )
    # ...and so is a recorded schedule that says 3 for every hint
    (setup / "three.json").write_text(json.dumps({"hint_ages": [3] * 10}))
    replayed = rows("--delays", "3", "--jitter", str(setup / "three.json"))
    assert (
        replayed[("separate-boosted", None, "three.json")]["si_sdr_i_examples"]
        == (at[("separate-boosted", 3, None)]["si_sdr_i_examples"])
    )
    wide = rows("--delays", "3", "--jitter", "1-6")
    # ages 4-6 come too late for the d3 model, not for the any-delay one
    assert (
        wide[("separate-boosted-d3", None, "1-6")]["si_sdr_i"]
        != (at[("separate-boosted-d3", 3, None)]["si_sdr_i"])
    )
    assert "ages 1-6" in capsys.readouterr().out
    (setup / "bad.json").write_text(json.dumps({"hint_ages": [0, 2]}))
    for bad in ("6-1", "0-3", "a-b", str(setup / "bad.json"), str(setup / "none.json")):
        assert main([*base, "--jitter", bad]) == 2
        assert "--jitter" in capsys.readouterr().err


def test_eval_refuses_delays_no_model_can_run(setup, capsys):
    base = ["eval", "--task", "separate", "--data", str(setup / "data"), "--json",
            str(setup / "r.json")]  # fmt: skip
    # no d2 model and no any-delay model in `models`: said before any model runs
    assert main([*base, "--models", str(setup / "models"), "--delays", "2"]) == 2
    said = capsys.readouterr()
    assert "no separate-boosted-d2 and no any-delay" in said.err
    assert "separate-small" not in said.err + said.out
    for bad in ("0", "9", "-1"):
        assert main([*base, "--models", str(setup / "models"), "--delays", bad]) == 2
        assert "hint delays run 1..8" in capsys.readouterr().err


def test_eval_scores_a_folder_of_a_small_and_a_large_model_alone(setup, tmp_path, capsys):
    import shutil

    models = tmp_path / "models"
    for name in ("separate-small", "separate-large"):
        shutil.copytree(setup / "models" / name, models / name)
    out = tmp_path / "r.json"
    args = ["eval", "--task", "separate", "--data", str(setup / "data"), "--models",
            str(models), "--json", str(out)]  # fmt: skip
    assert main(args) == 0
    assert "no boosted separate model; the small and large models only" in capsys.readouterr().err
    rows = json.loads(out.read_text())["results"]
    assert [r["role"] for r in rows] == ["small", "large"]


def test_a_recorded_fallback_verdict_decides_where_the_fallback_runs(setup, tmp_path, capsys):
    import importlib.util
    import shutil
    from pathlib import Path

    from kboost_rt.fallback import fallback_model
    from kboost_rt.model_files import load_model_files

    path = Path(__file__).parents[1] / "tools" / "fallback_verdict.py"
    spec = importlib.util.spec_from_file_location("fallback_verdict", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    models = tmp_path / "models"
    shutil.copytree(setup / "models", models)
    data = str(setup / "data")
    with pytest.raises(SystemExit, match="decide on the val split"):
        tool.main(["--task", "separate", "--data", str(tmp_path / "separate-test")])
    assert tool.main(["--task", "separate", "--data", data, "--models", str(models)]) == 0
    said = capsys.readouterr().out
    assert "separate-boosted-d1: small " in said and "separate-boosted-d3: small " in said
    # the same scores as `eval`: the small model, and the boosted one with every hint lost
    out = tmp_path / "eval.json"
    assert main(["eval", "--task", "separate", "--data", data, "--models", str(models),
                 "--delays", "3", "--hint-loss", "1", "--json", str(out)]) == 0  # fmt: skip
    small, _, alone = json.loads(out.read_text())["results"]
    folder = models / "separate-boosted-d3"
    verdict = load_model_files(folder).config.notes["fallback_verdict"]
    assert verdict["small_si_sdr_i"] == round(small["si_sdr_i"], 3)
    assert verdict["no_hints_si_sdr_i"] == round(alone["si_sdr_i"], 3)
    assert verdict["helps"] == (small["si_sdr_i"] > alone["si_sdr_i"])
    assert verdict["examples"] == 2 and verdict["data"] == "data"
    assert (fallback_model(folder) is not None) == verdict["helps"]
    # it decides, either way, while the small model is the one it was made with
    for helps in (True, False):
        tool.record(folder, {**verdict, "helps": helps})
        assert (fallback_model(folder) is not None) == helps
    tool.record(folder, {**verdict, "helps": False, "small_checksum": "another small model"})
    assert fallback_model(folder) is not None  # stale: no training scores either, so it runs
