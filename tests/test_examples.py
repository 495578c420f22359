"""The worked example of docs/adding-a-method.md: a plugin estimator, its test, and 2 real steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rlvr.algos import ADVANTAGES
from rlvr.cli import load_plugins, main
from rlvr.train.config import load_config
from rlvr.train.trainer import train
from tests.conftest import micro_run

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sign_advantage.py"


@pytest.fixture()
def sign_estimator():
    load_plugins([str(EXAMPLE)])
    yield ADVANTAGES["sign"]
    ADVANTAGES._items.pop("sign", None)  # keep the global registry as the other tests expect it


def test_sign_hand_values_and_invariants(sign_estimator):
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.3, 0.3, 0.3, 0.3], [0.1, 0.2, 0.6, 0.1]])
    a = sign_estimator(r)
    # group means 0.5, 0.3, 0.25: signs of the centred rewards; the constant group gives 0
    expected = torch.tensor([[1.0, -1.0, -1.0, 1.0], [0.0] * 4, [-1.0, -1.0, 1.0, -1.0]])
    torch.testing.assert_close(a, expected)
    # margin: only samples more than 0.2 from the mean count
    torch.testing.assert_close(sign_estimator(r, margin=0.2)[2], torch.tensor([0.0, 0.0, 1.0, 0.0]))
    assert ADVANTAGES.knobs("sign") == {"margin": 0.0}


def test_plugin_on_the_command_line(sign_estimator, capsys):
    assert main(["recipes", "--plugin", str(EXAMPLE), "show", "grpo", "algo.advantage='sign'"]) == 0
    assert 'advantage = "sign"' in capsys.readouterr().out
    assert main(["recipes", "--plugin", "no_such_module_xyz", "show", "grpo"]) == 2
    assert "plugin 'no_such_module_xyz' cannot be imported" in capsys.readouterr().out
    assert main(["recipes", "--plugin", "missing_file.py", "show", "grpo"]) == 2
    assert "plugin file missing_file.py does not exist" in capsys.readouterr().out


def test_sign_trains_two_real_steps(sign_estimator, micro_base, tmp_path):
    cfg = load_config(
        "grpo",
        micro_run(
            micro_base,
            "algo.advantage='sign'",
            "algo.margin=0.01",
            "eval.before=false",
            "eval.after=false",
            "train.steps=2",
        ),
    )
    train(cfg, run_dir=tmp_path / "run", progress=False)
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in rows] == [1, 2]


def test_arithmetic_dataset_recipe_trains_with_math_verify(micro_base, tmp_path, monkeypatch):
    """examples/arithmetic.toml: a JSONL dataset scored by math-verify, end to end (2 steps)."""
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # task.path is relative to the repo root
    cfg = load_config(
        "examples/arithmetic.toml",
        micro_run(micro_base, "train.steps=2", "eval.samples=2", "task.heldout_size=16"),
    )
    summary = train(cfg, run_dir=tmp_path / "run", progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all("reward/math" in r and r["reward_failures"] == 0 for r in rows)
    assert all(r["accuracy"] == r["reward/math"] for r in rows)  # the verifier is the math reward
    assert 0.0 <= summary["after"]["pass@1"] <= 1.0


def test_user_reward_function_by_file_path(micro_base, tmp_path, monkeypatch):
    """The brevity example of docs/rewards-and-data.md, named by file path with a keyword argument."""
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    cfg = load_config(
        "grpo",
        micro_run(
            micro_base,
            "train.steps=1",
            "train.samples_every=1",
            "eval.before=false",
            "eval.after=false",
            'rewards.brevity={function = "examples/brevity_reward.py:brevity", weight = 0.2, limit = 2}',
        ),
    )
    train(cfg, run_dir=tmp_path / "run", progress=False)
    samples = [json.loads(x) for x in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    for s in samples:
        words = len(s["completion"].split())
        assert s["reward_parts"]["brevity"] == max(0.0, min(1.0, 2.0 - words / 2))


def test_code_recipe_runs_the_sandbox_end_to_end(micro_base, tmp_path, monkeypatch):
    """examples/code.toml: completions run against unit tests in the sandbox (2 steps, workers)."""
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    cfg = load_config(
        "examples/code.toml",
        micro_run(micro_base, "train.steps=2", "eval.samples=2", "task.heldout_size=4"),
    )
    summary = train(cfg, run_dir=tmp_path / "run", progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all("reward/code" in r and r["reward_failures"] == 0 for r in rows)
    assert 0.0 <= summary["after"]["pass@1"] <= 1.0


def test_sql_recipe_trains_with_the_sql_partial_rewards(micro_base, tmp_path, monkeypatch):
    """examples/sql.toml: Reasoning-SQL's four partial rewards on a JSONL file (2 steps)."""
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    cfg = load_config(
        "examples/sql.toml",
        micro_run(micro_base, "train.steps=2", "eval.samples=2", "task.heldout_size=2"),
    )
    summary = train(cfg, run_dir=tmp_path / "run", progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for name in ("sql_exec", "sql_syntax", "sql_schema", "sql_ngram"):
        assert all(f"reward/{name}" in r for r in rows)
    assert all(r["reward_failures"] == 0 for r in rows)  # every row's database and gold SQL work
    assert all(r["accuracy"] == r["reward/sql_exec"] for r in rows)  # the verifier
    assert 0.0 <= summary["after"]["pass@1"] <= 1.0


def test_tiny_code_data_is_what_its_generator_writes_and_reference_bodies_pass():
    import subprocess
    import sys

    from rlvr.rewards import REWARDS

    root = Path(__file__).resolve().parents[1]
    assert (
        subprocess.run(
            [sys.executable, str(root / "examples" / "make_tiny_code.py"), "--check"]
        ).returncode
        == 0
    )
    reward = REWARDS["code"]()
    rows = [
        json.loads(x) for x in (root / "examples" / "data" / "tiny_code.jsonl").read_text().splitlines()
    ]
    for r in rows[:6]:
        meta = {k: r[k] for k in ("entry_point", "code_prompt", "tests")}
        assert reward(r["prompt"], r["answer"], "", **meta) == 1.0  # the reference body passes
        assert reward(r["prompt"], " None", "", **meta) == 0.0


TRUNCATED = Path(__file__).resolve().parents[1] / "examples" / "drop_truncated.py"


@pytest.fixture()
def truncation_filter():
    from rlvr.data.samplers import GROUP_FILTERS

    load_plugins([str(TRUNCATED)])
    yield GROUP_FILTERS["not_all_truncated"]
    GROUP_FILTERS._items.pop("not_all_truncated", None)


def test_batch_stage_example_hand_values(truncation_filter):
    import numpy as np

    truncated = np.array([[True, True, True], [True, False, True], [False, False, False]])
    keep = truncation_filter(np.zeros((3, 3)), truncated=truncated)
    assert keep.tolist() == [False, True, True]


def test_batch_stage_example_drops_capped_groups_in_a_run(truncation_filter, micro_base, tmp_path):
    """With a cap of 1 token every completion is cut: every group fails, rounds repeat and the
    batch is filled with dropped groups; with the micro runs' cap of 6 tokens both groups pass."""
    over = [
        "eval.before=false",
        "eval.after=false",
        "train.steps=1",
        "sampling.max_rounds=2",
        'sampling.filters=["not_all_truncated"]',
    ]
    train(
        load_config("grpo", micro_run(micro_base, *over, "rollout.max_new_tokens=1")),
        run_dir=tmp_path / "cut",
        progress=False,
    )
    (row,) = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert row["truncated_frac"] == 1.0 and row["sampling_rounds"] == 2
    assert row["sampling_filled"] == 2 and row["rollouts"] == 16
    train(load_config("grpo", micro_run(micro_base, *over)), run_dir=tmp_path / "ok", progress=False)
    (row,) = [json.loads(x) for x in (tmp_path / "ok" / "metrics.jsonl").read_text().splitlines()]
    # (seed 0: 6 of the 8 completions hit the cap, but each group has one that ended)
    assert row["truncated_frac"] < 1.0 and row["sampling_rounds"] == 1 and row["sampling_filled"] == 0
