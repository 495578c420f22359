"""The training loop repeats its golden metrics (tests/train/golden.py): every feature combination
trains exactly as the loop did before its redesign. The shipped recipes are compared in
tests/train/test_recipes.py (the same runs), the scale-out runs by scripts/golden.py --scale."""

from __future__ import annotations

import pytest
from tests.conftest import UNPORTABLE_CASES, micro_run, skip_where_unportable
from tests.train import golden

from rlvr.train.config import load_config
from rlvr.train.trainer import train

FEATURES = {k: v for k, v in golden.in_process_cases().items() if k.startswith("feature/")}


@pytest.mark.parametrize("case", sorted(FEATURES))
def test_feature_repeats_its_golden_metrics(case, micro_base, tmp_path, dense_reward):
    if case in UNPORTABLE_CASES:
        skip_where_unportable(f"{case}'s golden record")
    recipe, extra = FEATURES[case]
    train(load_config(recipe, micro_run(micro_base, *extra)), run_dir=tmp_path / "run", progress=False)
    golden.check(case, tmp_path / "run")


def test_a_changed_run_is_caught(micro_base, tmp_path, dense_reward):
    """The comparison bites: a different learning rate gives different metrics."""
    recipe, extra = FEATURES["feature/kl_loss"]
    cfg = load_config(recipe, micro_run(micro_base, *extra, "optim.lr=2e-2"))
    train(cfg, run_dir=tmp_path / "run", progress=False)
    with pytest.raises(AssertionError, match="recorded"):
        golden.check("feature/kl_loss", tmp_path / "run")
