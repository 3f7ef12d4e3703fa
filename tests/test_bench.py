"""`kboost-rt bench` runs every backend and writes the documented JSON.
(Timings are printed, never asserted.)"""

import json

import pytest

from kboost_rt.cli import main

pytest.importorskip("onnxruntime")


def test_bench_writes_the_documented_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--seconds", "0.5", "--configs", "boosted", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert set(report) >= {"machine", "results", "allocations_per_chunk"}
    backends = {r["backend"] for r in report["results"]}
    assert {"native", "eager", "torchscript", "onnxruntime"} <= backends
    for r in report["results"]:
        assert "error" not in r, r
        assert set(r) >= {
            "config",
            "backend",
            "median_us",
            "p99_us",
            "p999_us",
            "max_us",
            "deadline_misses",
            "max_abs_err",
        }
        assert r["max_us"] >= r["p999_us"] >= r["p99_us"] >= r["median_us"] > 0
        assert r["max_abs_err"] < 1e-4  # every backend computes the reference's step
    assert report["allocations_per_chunk"] == {"boosted": 0.0}
    assert "boosted" in table and "onnxruntime" in table
    floor = report["floor"]
    assert floor["peak_gflops"] > 0 and floor["kernels"] == report["machine"]["native_simd"]
    (row,) = floor["configs"]
    from kboost_rt.config import PAPER_BOOSTED
    from kboost_rt.costs import macs_per_chunk

    assert row["macs"] == macs_per_chunk(PAPER_BOOSTED)["device"]
    assert row["floor_us"] == pytest.approx(2 * row["macs"] / floor["peak_gflops"] / 1e3)
    median = {r["backend"]: r["median_us"] for r in report["results"]}
    assert row["native_x_floor"] == pytest.approx(median["native"] / row["floor_us"])
    best = min((b for b in median if not b.startswith("native")), key=median.get)
    assert row["best_other"] == best and row["tenfold_us"] == pytest.approx(median[best] / 10)
    assert "Compute floor" in table and f"10x {best} would be" in table
    assert (tmp_path / "bench.png").stat().st_size > 10_000  # the latency CDFs


def test_bench_times_a_model_folder_with_its_own_weights(tmp_path, capsys):
    from kboost_rt.config import PAPER_SMALL
    from kboost_rt.model_files import random_weights, save_model_files

    save_model_files(tmp_path / "my-small", PAPER_SMALL, random_weights(PAPER_SMALL, 11))
    out = tmp_path / "b.json"
    args = ["bench", "--model", str(tmp_path / "my-small"), "--backends", "native,eager",
            "--seconds", "0.3", "--json", str(out)]  # fmt: skip
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert {r["config"] for r in report["results"]} == {"my-small"}  # no preset unless asked
    assert all(r["max_abs_err"] < 1e-4 for r in report["results"])
    assert report["allocations_per_chunk"] == {"my-small": 0.0}
    assert "my-small" in capsys.readouterr().out


def test_bench_breakdown_times_every_stage_of_the_real_step(tmp_path, capsys):
    out = tmp_path / "b.json"
    args = ["bench", "--configs", "boosted,large", "--backends", "native", "--seconds", "0.3",
            "--breakdown", "--json", str(out)]  # fmt: skip
    assert main(args) == 0
    report = json.loads(out.read_text())
    by_config = {b["config"]: b for b in report["breakdown"]}
    boosted, large = by_config["boosted"], by_config["large"]
    names = [s["stage"] for s in boosted["stages"]]
    # Every stage of the boosted step, in order, once per chunk.
    assert names[:2] == ["STFT", "encoder"] and names[-2:] == ["decoder", "iSTFT"]
    assert names.count("frequency BiLSTM [0]") == 1 and "merge: scores [1]" in names
    assert "merge: FiLM [2]" not in names  # 3 blocks, 2 merges
    assert "attention: scores [2]" in [s["stage"] for s in large["stages"]]
    for b in (boosted, large):
        assert sum(s["share"] for s in b["stages"]) == pytest.approx(1.0)
        assert sum(k["median_us"] for k in b["by_kind"]) == pytest.approx(
            sum(s["median_us"] for s in b["stages"])
        )
        assert b["step_median_us"] > 0 and b["step_median_us_unclocked"] > 0
    assert "the native step by stage" in capsys.readouterr().out


def test_bench_rejects_unknown_names(capsys):
    assert main(["bench", "--configs", "huge"]) == 2
    assert "unknown config 'huge'" in capsys.readouterr().err


def test_backends_take_turns_and_each_turns_first_chunk_is_untimed():
    import numpy as np

    from kboost_rt.bench import BLOCK, _time

    calls = []

    def backend(name):
        def step(chunk, hint):
            calls.append((name, int(chunk[0])))
            return np.full(2, chunk[0], np.float32)

        step.prepare = lambda: calls.append((name, "prepare"))
        return step

    n = 2 * BLOCK + 7
    chunks = np.arange(n, dtype=np.float32)[:, None]
    timed = _time({"a": backend("a"), "b": backend("b")}, chunks, [None] * n)
    turns = [c for c in calls if c[1] == "prepare"]
    assert turns == [("a", "prepare"), ("b", "prepare")] * 3  # a, b, a, b, a, b
    assert [i for name, i in calls if name == "b" and i != "prepare"] == list(range(n))
    for times, outs in timed.values():
        assert np.isnan(times[[0, BLOCK, 2 * BLOCK]]).all()  # first of each turn
        assert np.isfinite(np.delete(times, [0, BLOCK, 2 * BLOCK])).all()
        assert (outs[:, 0] == np.arange(n)).all()  # every chunk ran, in order
