"""Demonstration rows in the RL step (rlvr.train.demos, [demos]): the sources, the rows' place in
their groups, the collector's stage on the micro model, the loop without demonstrations (grpo to the
bit), and the config's refusals."""

from __future__ import annotations

import json

import pytest
import torch
from tests.conftest import micro_run
from tests.train import golden

from rlvr.data.solutions import solve
from rlvr.data.tasks import Problem
from rlvr.rollout import Rollout, sequence_logp
from rlvr.train.batch import Batch
from rlvr.train.config import ConfigError, load_config
from rlvr.train.demos import Demonstrations, demonstration, with_rows
from rlvr.train.setup import setup_run
from rlvr.train.trainer import train

CHAIN = {"source_dataset": "chain_sum", "expression": "1 + 5 - 2"}


def test_demonstration_sources():
    solved = Problem("1 + 5 - 2 = ?", "4", dict(CHAIN))
    both = Problem("1 + 5 - 2 = ?", "4", {**CHAIN, "solution": "six minus two <answer>4</answer>"})
    plain = Problem("what?", "x", {})
    assert demonstration(solved) == solve(solved) is not None  # auto: no field, the solver
    assert demonstration(both) == "six minus two <answer>4</answer>"  # auto: the field first
    assert demonstration(both, source="solver") == solve(solved)
    assert demonstration(solved, source="field") is None
    assert demonstration(both, source="field", field="other") is None
    assert demonstration(plain) is None


def _batch(sizes: list[int], correct: list[float]) -> Batch:
    n = sum(sizes)
    roll = Rollout(
        prompt_ids=torch.arange(n)[:, None] + 100,  # [N, 1] a marker per row
        prompt_mask=torch.ones(n, 1),
        completion_ids=torch.arange(n)[:, None].repeat(1, 2),  # [N, 2]
        mask=torch.ones(n, 2),
        old_logp=-torch.ones(n, 2),
        lengths=torch.full((n,), 2),
        finish=["eos"] * n,
        group=torch.arange(len(sizes)).repeat_interleave(torch.tensor(sizes)),
        rewards=torch.tensor(correct),
    )
    problems = [Problem(f"q{j}", "a", {"solution": f"s{j}"}) for j in range(len(sizes))]
    return Batch(
        problems, roll, [f"t{i}" for i in range(n)], torch.tensor(correct), torch.tensor(correct), sizes
    )


def test_with_rows_appends_each_row_to_its_group():
    batch = _batch([2, 2, 2], [0.0] * 6)
    extra = _batch([1, 1], [1.0, 1.0])
    extra.roll.completion_ids += 50  # rows 50, 51
    out = with_rows(batch, extra, owners=[0, 2])
    assert out.sizes == [3, 2, 3]
    assert out.roll.group.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    assert out.roll.completion_ids[:, 0].tolist() == [0, 1, 50, 2, 3, 4, 5, 51]
    assert out.texts == ["t0", "t1", "t0", "t2", "t3", "t4", "t5", "t1"]
    assert out.correct.tolist() == [0, 0, 1, 0, 0, 0, 0, 1]
    assert out.problems == batch.problems


def test_a_group_gets_a_demonstration_when_its_success_rate_is_at_most_max_success(monkeypatch):
    cfg = load_config("hpt", ["demos.max_success=0.5"])
    stage = Demonstrations(cfg, rounds=None)  # type: ignore[arg-type]
    asked = []

    def rows(problems, targets):  # the tokenised, scored rows, here by hand
        asked.append(targets)
        extra = _batch([1] * len(problems), [1.0] * len(problems))
        return extra

    monkeypatch.setattr(stage, "_rows", rows)
    monkeypatch.setattr(stage, "_tokens", lambda text: text)  # the text stands for its tokens
    # groups with 0/2, 1/2 and 2/2 correct: the first two get their demonstration
    batch = _batch([2, 2, 2], [0.0, 0.0, 1.0, 0.0, 1.0, 1.0])
    out, metrics = stage.attach(batch)
    assert asked == [["s0", "s1"]]
    assert out.sizes == [3, 3, 2] and metrics["demo_rows"] == 2.0
    assert out.roll.demo.tolist() == [0, 0, 1, 0, 0, 1, 0, 0]
    assert out.roll.demo_group.tolist() == [1, 1, 1, 1, 1, 1, 0, 0]
    # nothing eligible: the same batch, flagged with zeros
    none = _batch([2], [1.0, 1.0])
    same, m = stage.attach(none)
    assert same.roll.demo.tolist() == [0, 0] and m == {"demo_rows": 0.0}
    assert none.roll.demo is None  # the stage flags a copy: the rounds' rollouts stay as they were
    assert torch.equal(same.roll.completion_ids, none.roll.completion_ids)


def test_the_collector_appends_worked_solutions_on_the_micro_model(micro_base, tmp_path):
    # the micro model never answers correctly: every group gets its worked solution (hpt's gamma = 0)
    cfg = load_config("hpt", micro_run(micro_base, "eval.before=false", "rollout.max_new_tokens=48"))
    run = setup_run(cfg, run_dir=tmp_path / "run", progress=False)
    try:
        got = run.collector.collect(1)
        batch, roll = got.batch, got.batch.roll
        assert batch.sizes == [5, 5] and got.metrics["demo_rows"] == 2.0
        assert roll.demo.tolist() == [0, 0, 0, 0, 1] * 2 and roll.demo_group.tolist() == [1] * 10
        tok = run.tokenizer
        for j, p in enumerate(batch.problems):
            row = 5 * j + 4
            want = (tok(solve(p), add_special_tokens=False)["input_ids"] + [tok.eos_token_id])[:48]
            n = int(roll.lengths[row])
            assert roll.completion_ids[row, :n].tolist() == want
            assert roll.mask[row].sum() == n and roll.finish[row] == ("eos" if n < 48 else "length")
            assert batch.texts[row] == tok.decode(want, skip_special_tokens=True)
            # the demonstration's prompt is the group's (re-padded): the same real tokens
            real = roll.prompt_ids[row][roll.prompt_mask[row] > 0]
            assert torch.equal(real, roll.prompt_ids[5 * j][roll.prompt_mask[5 * j] > 0])
        # behaviour log-probs of the demonstrations: the policy's own, before the update
        with torch.no_grad():
            logp, _ = sequence_logp(
                run.model, roll.prompt_ids, roll.prompt_mask, roll.completion_ids, roll.mask
            )
        m = roll.mask.bool()
        torch.testing.assert_close(roll.old_logp[m], logp[m], rtol=1e-4, atol=1e-5)
        # scored like any sample: the run's rewards of the demonstration's text
        assert batch.roll.rewards.shape == (10,) and batch.roll.reward_parts.shape[0] == 10
        whole = [5 * j + 4 for j in range(2) if roll.finish[5 * j + 4] == "eos"]
        assert whole, "no demonstration fit 48 tokens"
        assert all(float(batch.correct[i]) == 1.0 for i in whole)  # a worked solution is right
        assert float(batch.correct[[i for i in range(10) if i not in whole]].max()) == 0.0
    finally:
        run.collector.rounds.close()


def _record(run_dir):
    rec = golden.record_of(run_dir)
    for row in rec["metrics"]:
        row.pop("demo_rows", None)
    return rec


@pytest.mark.parametrize("name", ["hpt", "rl_plus"])
def test_without_demonstrations_the_recipe_trains_as_reasoner_grpo(
    name, micro_base, tmp_path, dense_reward
):
    """A task whose problems have no demonstration (source 'field': the reasoner's problems have no
    solution field): the stage adds nothing and the run is reasoner_grpo's, number for number."""
    runs = {}
    for recipe, extra in (("reasoner_grpo", []), (name, ["demos.source='field'"])):
        cfg = load_config(recipe, micro_run(micro_base, *golden.RECIPE_RUN, *dense_reward, *extra))
        train(cfg, run_dir=tmp_path / recipe, progress=False)
        runs[recipe] = _record(tmp_path / recipe)
    rows = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    assert [r["demo_rows"] for r in rows] == [0.0, 0.0]
    assert not golden.differences(runs["reasoner_grpo"], runs[name], rel=0.0, abs_=0.0)


def test_calibrl_expert_without_demonstrations_trains_as_its_advantage_alone(
    micro_base, tmp_path, dense_reward
):
    """No problem has a demonstration (source 'field'): the expert term has no baseline, and the
    run is reasoner_grpo with calibrl's advantage and ppo_clip, number for number."""
    runs = {}
    cases = (
        ("reasoner_grpo", ["algo.advantage='calibrl'"]),
        ("calibrl_expert", ["demos.source='field'"]),
    )
    for recipe, extra in cases:
        cfg = load_config(recipe, micro_run(micro_base, *golden.RECIPE_RUN, *dense_reward, *extra))
        train(cfg, run_dir=tmp_path / recipe, progress=False)
        runs[recipe] = _record(tmp_path / recipe)
    assert not golden.differences(runs["reasoner_grpo"], runs["calibrl_expert"], rel=0.0, abs_=0.0)


def test_demos_config_is_refused_where_it_cannot_work():
    with pytest.raises(ConfigError, match=r"\[demos\] is set but no chosen component reads"):
        load_config("grpo", ["demos.max_success=0.0"])
    with pytest.raises(ConfigError, match=r"'demos\.source' = 'dataset'; expected 'auto'"):
        load_config("hpt", ["demos.source='dataset'"])
    with pytest.raises(ConfigError, match=r"'demos.max_success' = 1.5 is out of range"):
        load_config("hpt", ["demos.max_success=1.5"])
    with pytest.raises(ConfigError, match="not with multi-turn episodes"):
        load_config("rl_plus", ["task.source='env'", "task.env='calculator'"])
    with pytest.raises(ConfigError, match=r"set algo\.minibatches = 1 and scale\.learners = 1"):
        load_config("hpt", ["algo.minibatches=2"])
    with pytest.raises(ConfigError, match="its size varies"):
        load_config("rl_plus", ["scale.learners=2"])
    load_config("hpt", ["algo.micro_batches=4"])  # micro-batches split the rows of one update
    with pytest.raises(ConfigError, match=r"'calibrl' compares each sample .* algo\.micro_batches = 1"):
        load_config("calibrl_expert", ["algo.micro_batches=2"])
    load_config("grpo")  # the defaults with no reader: fine


def test_a_resumed_hpt_run_equals_an_uninterrupted_one(micro_base, tmp_path, dense_reward):
    """The stage holds no state: a run resumed from its step-2 checkpoint repeats the whole run."""
    run = [*golden.RECIPE_RUN, *dense_reward, "train.samples_every=1"]

    def cfg(steps: int):
        return load_config("hpt", micro_run(micro_base, *run, f"train.steps={steps}"))

    train(cfg(3), run_dir=tmp_path / "a", progress=False)
    train(cfg(2), run_dir=tmp_path / "b", progress=False)
    train(cfg(3), run_dir=tmp_path / "b", resume=True, progress=False)
    a, b = golden.record_of(tmp_path / "a"), golden.record_of(tmp_path / "b")
    assert [r["demo_rows"] for r in a["metrics"]] == [2.0, 2.0, 2.0]
    assert not golden.differences(a, b, rel=0.0, abs_=0.0)


def test_micro_batches_split_a_batch_with_demonstration_rows_exactly(micro_base, tmp_path, dense_reward):
    """B*G + 2 = 10 rows in micro-batches of 2 (the last ones short): the update is the one-piece
    update of the golden record, to float round-off (the entropy metric is a mean of micro-batch
    means, so it alone depends on the split)."""
    cfg = load_config(
        "hpt", micro_run(micro_base, *golden.RECIPE_RUN, *dense_reward, "algo.micro_batches=4")
    )
    train(cfg, run_dir=tmp_path / "run", progress=False)
    want, got = golden.load_golden()["recipe/hpt"], golden.record_of(tmp_path / "run")
    for rec in (want, got):
        for row in rec["metrics"]:
            row.pop("entropy")
    assert not golden.differences(want, got)


def test_demonstrations_with_rollout_replay(micro_base, tmp_path, dense_reward):
    """Replayed groups (kept from earlier rounds, never flagged) get their demonstrations too."""
    extra = [*golden.RECIPE_RUN, *dense_reward, "train.steps=3", "sampling.replay_fraction=0.5"]
    train(load_config("hpt", micro_run(micro_base, *extra)), run_dir=tmp_path / "run", progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["demo_rows"] for r in rows] == [2.0, 2.0, 2.0]
    assert sum(r["replayed_groups"] for r in rows) > 0
