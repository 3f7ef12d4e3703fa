"""tools/hint_value.py: the stale-mask arithmetic and the tool on random models."""

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_evaluate import setup  # noqa: E402, F401  (the eval fixture: data and models)

from kboost_rt.reference.stft import stft  # noqa: E402

spec = importlib.util.spec_from_file_location(
    "hint_value", Path(__file__).parents[1] / "tools" / "hint_value.py"
)
hint_value = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hint_value)


def test_stale_mask_shares_each_bin_and_arrives_late():
    rng = np.random.default_rng(0)
    sources = stft(torch.from_numpy(rng.standard_normal((2, 2, 4000))).float())
    mix = sources.sum(0)
    fresh = hint_value.stale_mask(sources, mix, 0)
    # Exact sources leave nothing of the mixture: the shares add up to 1.
    assert torch.allclose(fresh.sum(0), torch.ones_like(mix.real), atol=1e-5)
    late = hint_value.stale_mask(sources, mix, 3)
    assert torch.equal(late[..., :3, :], torch.zeros_like(late[..., :3, :]))
    assert torch.equal(late[..., 3:, :], fresh[..., :-3, :])
    # A wrong estimate leaves part of every bin to the rest of the mixture.
    assert hint_value.stale_mask(0.5 * sources, mix, 0).sum(0).max() < 1


def test_tool_prints_every_estimate_and_delay(setup, capsys):  # noqa: F811
    models = setup / "models"
    assert hint_value.main([
        "--task", "separate", "--data", str(setup / "data"), "--delays", "0,2",
        "--small", str(models / "separate-small"), "--large", str(models / "separate-large"),
    ]) == 0  # fmt: skip
    rows = dict(re.findall(r"^\| ([^|]+) \| (-?[\d.]+) \|$", capsys.readouterr().out, re.M))
    assert set(rows) == {
        "small output", "small mask, fresh", "large output",
        "large mask, 0 chunks old", "large mask, 2 chunks old",
    }  # fmt: skip
    assert all(np.isfinite(float(v)) for v in rows.values())
