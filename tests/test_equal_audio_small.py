"""tools/equal_audio_small.py: the small model's control recipe gets the steps,
learning rate and warm-up that the any-delay model trained beyond its start."""

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("torch")

from kboost_rt.training.recipes import RECIPES  # noqa: E402

spec = importlib.util.spec_from_file_location(
    "equal_audio_small", Path(__file__).parents[1] / "tools" / "equal_audio_small.py"
)
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)


@pytest.mark.parametrize("task", ["separate", "enhance"])
def test_the_control_trains_what_the_any_delay_model_trained_beyond_its_start(task):
    small, boosted = RECIPES[f"{task}-small"], RECIPES[f"{task}-boosted"]
    control = tool.control_recipe(task)
    assert control.name == small.name and control.init == small.name
    for field in ("steps", "lr", "warmup", "batch", "seconds"):
        assert getattr(control, field) == getattr(boosted, field), field
    # the start of each had the same audio: small + control == start + boosted
    assert small.steps + control.steps == RECIPES[boosted.init].steps + boosted.steps
    assert control.net == small.net and control.role == "small"
