"""The recipes in the code are the ones the shipped models were trained with,
so `kboost-rt train NAME` reproduces `models/NAME` (and a recipe edited without
retraining its model shows up here)."""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("torch")

from kboost_rt.model_files import find_model_folders, shipped_models_dir  # noqa: E402
from kboost_rt.training.recipes import RECIPES  # noqa: E402
from kboost_rt.training.trainer import _with_defaults  # noqa: E402

SHIPPED = find_model_folders(shipped_models_dir())


def test_every_recipe_has_a_shipped_model_and_back():
    # but the fixed-delay ones: the any-delay model replaced their models (which
    # are in git history); the recipes stay, as the any-delay models start from d1
    fixed = {n for n in RECIPES if re.search(r"-boosted-d\d+$", n)}
    assert {f.name for f in SHIPPED} == set(RECIPES) - fixed
    assert all(r.init in RECIPES for r in RECIPES.values() if r.init)


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda f: f.name)
def test_shipped_model_was_trained_by_its_current_recipe(folder):
    notes = json.loads((folder / "config.json").read_text())["notes"]
    # models trained before a Recipe field existed ran it at its default
    assert _with_defaults(notes["recipe"]) == RECIPES[folder.name].describe()
    assert notes["trained_steps"] == RECIPES[folder.name].steps
