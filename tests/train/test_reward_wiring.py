"""Rewards in the trainer: user functions, per-component metrics, failures, mixtures, the verifier."""

from __future__ import annotations

import json
import re
import textwrap

import pytest
from tests.conftest import micro_run

from rlvr.train.config import ConfigError, load_config
from rlvr.train.setup import build_task
from rlvr.train.trainer import train


def _metrics(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def user_rewards(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text(
        textwrap.dedent(
            """
            def short(prompt, completion, answer, *, limit=4, **meta):
                return 1.0 if len(completion) <= limit else 0.0

            def flaky(prompt, completion, answer, **meta):
                if len(completion) % 2:
                    raise ValueError("odd length")
                return 0.5
            """
        )
    )
    return path


def test_user_functions_metrics_and_failures(micro_base, tmp_path, user_rewards):
    cfg = load_config(
        "grpo",
        micro_run(
            micro_base,
            "train.steps=2",
            "train.samples_every=1",
            "eval.before=false",
            "eval.after=false",
            f'rewards.short={{function = "{user_rewards}:short", weight = 0.5, limit = 3}}',
            f'rewards.flaky={{function = "{user_rewards}:flaky", weight = 0.25}}',
            "scoring.failure_score=-1.0",
        ),
    )
    train(cfg, run_dir=tmp_path / "run", progress=False)
    rows = _metrics(tmp_path / "run")
    samples = [json.loads(x) for x in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    for row in rows:
        assert {"reward/answer", "reward/format", "reward/short", "reward/flaky"} <= set(row)
        assert row["accuracy"] == row["reward/answer"]  # the verifier is the answer reward
    for s in samples:
        parts = s["reward_parts"]
        assert set(parts) == {"answer", "format", "short", "flaky"}
        assert parts["short"] == float(len(s["completion"]) <= 3)
        assert parts["flaky"] == (-1.0 if len(s["completion"]) % 2 else 0.5)
        expected = parts["answer"] + 0.1 * parts["format"] + 0.5 * parts["short"] + 0.25 * parts["flaky"]
        assert s["reward"] == pytest.approx(expected, abs=1e-6)
    assert sum(r["reward_failures"] for r in rows) == sum(
        r.get("reward_failures/flaky", 0) for r in rows
    )
    assert sum(r["reward_failures"] for r in rows) > 0  # some completions have odd length


def test_verifier_outside_the_rewards_still_gives_accuracy(micro_base, tmp_path):
    cfg = load_config(
        "grpo",
        micro_run(
            micro_base,
            "train.steps=1",
            "eval.before=false",
            "eval.after=false",
            "rewards={format = {weight = 1.0}}",
        ),
    )
    train(cfg, run_dir=tmp_path / "run", progress=False)
    (row,) = _metrics(tmp_path / "run")
    assert "reward/answer" not in row and 0.0 <= row["accuracy"] <= 1.0


def test_mixture_of_tasks_scores_each_with_its_own_scorer():
    cfg = load_config(
        "grpo",
        [
            "task.heldout_size=40",
            "task.mixture.chain_sum={weight = 1.0, min_terms = 2, max_terms = 2}",
            "task.mixture.basic_arithmetic={weight = 1.0}",
        ],
    )
    task = build_task(cfg)
    sources = {p.meta["source_dataset"] for p in task.next(64)}
    assert sources == {"chain_sum", "basic_arithmetic"}
    from rlvr.train.setup import build_verifier

    verifier = build_verifier(cfg)
    probs = task.heldout[:10]
    res = verifier.score(
        [p.question for p in probs],
        [f"<answer>{p.answer}</answer>" for p in probs],
        [p.answer for p in probs],
        [p.meta for p in probs],
    )
    assert [row[0] for row in res.parts] == [1.0] * 10


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("task.source='web'", "'task.source'"),
        ("task.source='file'", "'task.path' is empty"),
        ("task.on_bad_row='ignore'", "'task.on_bad_row'"),
        ("task.verifier='nope'", "'task.verifier' = 'nope'"),
        ("task.mixture.chain_sum={weight = -1.0}", "'task.mixture.chain_sum.weight'"),
        ("task.mixture.chain_sum=3", "'task.mixture.chain_sum' must be a table"),
        ("scoring.workers=-1", "'scoring.workers'"),
        ("scoring.timeout=-2.0", "'scoring.timeout'"),
        ("rewards.mine={function = 'nomodule_xyz:f'}", "'rewards.mine.function'"),
        ("rewards.mine={function = 3}", "'rewards.mine.function' must be a string"),
        ("rewards.mine={weight = 1.0}", "'rewards.mine': unknown reward"),
        ("shaping.nope={}", "'shaping.nope': unknown reward shaping"),
    ],
)
def test_bad_reward_and_task_fields_are_named(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config("grpo", [override])


def test_unknown_mixture_task_is_named():
    cfg = load_config("grpo", ["task.mixture.no_such_task={weight = 1.0}"])
    with pytest.raises(ConfigError, match=re.escape("task.mixture")):
        build_task(cfg)


def test_overlong_shaping_in_the_trainer(micro_base, tmp_path):
    """buffer = L_max = 6: every completion of L tokens gets -L/6 (no completion exceeds the budget)."""
    cfg = load_config(
        "grpo",
        micro_run(
            micro_base,
            "train.steps=2",
            "eval.before=false",
            "eval.after=false",
            "shaping.overlong={buffer = 6}",
        ),
    )
    train(cfg, run_dir=tmp_path / "run", progress=False)
    for row in _metrics(tmp_path / "run"):
        expected = row["reward_raw_mean"] - row["response_length"] / 6
        assert row["reward_mean"] == pytest.approx(expected, abs=1e-6)


def test_shaping_knobs_that_conflict_with_the_recipe_fail_on_load():
    with pytest.raises(ConfigError, match=re.escape("'shaping.overlong': overlong: buffer must be in")):
        load_config("grpo", ["shaping.overlong={buffer = 20}"])  # the budget is 12 tokens
    with pytest.raises(ConfigError, match=re.escape("'shaping.drpo.nope' is not a knob")):
        load_config("grpo", ["shaping.drpo={nope = 1}"])
