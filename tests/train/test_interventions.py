"""[demos] sources 'intervention' (InT) and 'refinement' (Critique-GRPO): which failed sample gives
the row and its text, the rows on the micro model (the intervention's tokens, the policy's seeded
refinements), the runs without a failed sample (reasoner_grpo to the bit), and the config's
refusals."""

from __future__ import annotations

import json

import pytest
import torch
from tests.conftest import micro_run
from tests.train import golden

import rlvr.train.demos as demos_module
from rlvr.data.guidance import Guide
from rlvr.data.solutions import solve
from rlvr.data.tasks import Problem
from rlvr.rewards.feedback import critique, intervention
from rlvr.rollout import Rollout
from rlvr.train.batch import Batch
from rlvr.train.config import ConfigError, load_config
from rlvr.train.demos import Demonstrations
from rlvr.train.setup import setup_run
from rlvr.train.trainer import train

CHAIN = {"source_dataset": "chain_sum", "expression": "4 - 1 - 7"}
REAL_GENERATE = demos_module.generate
REF = "4 - 1 = 3\n3 - 7 = -4\n<answer>-4</answer>"


def _batch(texts: list[str], correct: list[float], sizes: list[int]) -> Batch:
    n = len(texts)
    roll = Rollout(
        prompt_ids=torch.zeros(n, 1, dtype=torch.long),
        prompt_mask=torch.ones(n, 1),
        completion_ids=torch.zeros(n, 2, dtype=torch.long),
        mask=torch.ones(n, 2),
        old_logp=-torch.ones(n, 2),
        lengths=torch.full((n,), 2),
        finish=["eos"] * n,
        group=torch.arange(len(sizes)).repeat_interleave(torch.tensor(sizes)),
        rewards=torch.tensor(correct),
    )
    problems = [Problem("4 - 1 - 7 = ?", "-4", dict(CHAIN)) for _ in sizes]
    c = torch.tensor(correct)
    return Batch(problems, roll, texts, c, c, sizes)


def test_the_reference_is_the_task_solver():
    assert solve(Problem("4 - 1 - 7 = ?", "-4", dict(CHAIN))) == REF


def _stage(monkeypatch, recipe: str, *extra: str):
    stage = Demonstrations(load_config(recipe, list(extra)), rounds=None)  # type: ignore[arg-type]
    got: dict[str, list] = {}

    def rows(problems, rows):  # the tokenised, scored rows, here by hand
        got["rows"] = rows
        return _batch(["r"] * len(problems), [1.0] * len(problems), [1] * len(problems))

    monkeypatch.setattr(stage, "_rows", rows)
    monkeypatch.setattr(stage, "_tokens", lambda text: text)  # the row's text stands for its tokens
    return stage, got


def test_one_intervention_row_per_group_with_a_failed_sample(monkeypatch):
    stage, got = _stage(monkeypatch, "int")
    texts = [
        REF,  # group 0: correct,
        "   ",  # a blank failure: no step to correct,
        "4 - 1 = 3\n3 - 7 = -3\n<answer>-3</answer>",  # the first failure with a row (step 2)
        "4 - 1 = 2\n<answer>2</answer>",  # a later failure: not used
        REF,  # group 1: all correct, no row
        REF,
        "   ",  # group 2: only a blank failure, no row
        REF,
    ]
    batch = _batch(texts, [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0], [4, 2, 2])
    out, metrics = stage.attach(batch)
    assert got["rows"] == [REF]  # the prefix "4 - 1 = 3", then the reference's steps 2..
    assert out.sizes == [5, 2, 2] and metrics["demo_rows"] == 1.0
    assert out.roll.demo.tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 0]
    assert out.roll.demo_group.tolist() == [1] * 5 + [0] * 4
    # the prefix is the sample's own text, up to its last right step
    odd = "4-1 = 3\n3 - 7 = -3\n<answer>-3</answer>"
    stage.attach(_batch([odd], [0.0], [1]))
    assert got["rows"] == ["4-1 = 3\n3 - 7 = -4\n<answer>-4</answer>"]


def test_a_refinement_prompt_holds_the_failed_answer_and_its_critique(monkeypatch):
    template = "Attempt: {answer} | Critique: {critique} | Again."
    stage, _ = _stage(monkeypatch, "critique_grpo", f"demos.critique_template={json.dumps(template)}")
    asked = {}

    def sample(batch, owners, guides):
        asked["owners"], asked["guides"] = owners, guides
        return owners, [[7, 8]] * len(owners), 0.0

    monkeypatch.setattr(stage, "_sample", sample)
    wrong = "4 - 1 = 3\n3 + 7 = 10\n<answer>10</answer>"
    out, metrics = stage.attach(_batch([REF, wrong, REF, REF], [1.0, 0.0, 1.0, 1.0], [2, 2]))
    note = critique(wrong, REF, correct=False)
    assert note == (
        'The final answer 10 is wrong. Step 2, "3 + 7 = 10", gives 10; the correct step there gives -4.'
    )
    ask = Guide(user_extra=template.format(answer=wrong, critique=note))
    assert asked == {"owners": [0], "guides": [ask]}
    assert out.sizes == [3, 2] and metrics["demo_rows"] == 1.0 and metrics["demo_too_long"] == 0.0


def test_a_self_proposed_intervention_starts_from_the_steps_before_the_error(monkeypatch):
    stage, _ = _stage(monkeypatch, "int", "demos.intervention_by='policy'")
    asked = {}

    def sample(batch, owners, guides):
        asked["owners"], asked["guides"] = owners, guides
        return owners, [[7, 8]] * len(owners), 0.0

    monkeypatch.setattr(stage, "_sample", sample)
    texts = ["   ", "4-1 = 3\n3 - 7 = -3\n<answer>-3</answer>", "4 - 1 = 2", REF]
    stage.attach(_batch(texts, [0.0, 0.0, 0.0, 1.0], [2, 2]))
    reference = "A reference solution:\n" + REF + "\nCorrect the next step."
    assert asked["owners"] == [0, 1]
    assert asked["guides"] == [
        Guide(user_extra=reference, assistant_prefix="4-1 = 3\n"),  # the error at step 2
        Guide(user_extra=reference, assistant_prefix=""),  # the error at step 1: nothing kept
    ]


def test_the_collector_appends_interventions_on_the_micro_model(micro_base, tmp_path):
    # the micro model never answers correctly: every group has failed samples, and its first
    # sample's first step already disagrees, so the intervention is the whole worked solution
    cfg = load_config("int", micro_run(micro_base, "eval.before=false", "rollout.max_new_tokens=48"))
    run = setup_run(cfg, run_dir=tmp_path / "run", progress=False)
    try:
        got = run.collector.collect(1)
        batch, roll, tok = got.batch, got.batch.roll, run.tokenizer
        assert batch.sizes == [5, 5] and got.metrics["demo_rows"] == 2.0
        assert roll.demo.tolist() == [0, 0, 0, 0, 1] * 2
        for j, p in enumerate(batch.problems):
            first = next(i for i in range(5 * j, 5 * j + 4) if intervention(batch.texts[i], solve(p)))
            text = intervention(batch.texts[first], solve(p))
            want = (tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])[:48]
            n = int(roll.lengths[5 * j + 4])
            assert roll.completion_ids[5 * j + 4, :n].tolist() == want
    finally:
        run.collector.rounds.close()


def _refinements(micro_base, tmp_path, name, monkeypatch, *extra):
    calls = []
    real = REAL_GENERATE

    def spy(model, prompts, **kw):
        roll = real(model, prompts, **kw)
        calls.append((prompts, roll.completion_ids.tolist(), roll.lengths.tolist()))
        return roll

    monkeypatch.setattr(demos_module, "generate", spy)
    cfg = load_config(
        "critique_grpo",
        micro_run(micro_base, "eval.before=false", "rollout.max_new_tokens=8", *extra),
    )
    run = setup_run(cfg, run_dir=tmp_path / name, progress=False)
    try:
        got = run.collector.collect(1)
    finally:
        run.collector.rounds.close()
    return got, calls, run.tokenizer


def test_refinements_are_the_policys_seeded_samples(micro_base, tmp_path, monkeypatch):
    a, calls, tok = _refinements(micro_base, tmp_path, "a", monkeypatch)
    b, _, _ = _refinements(micro_base, tmp_path, "b", monkeypatch)
    c, _, _ = _refinements(micro_base, tmp_path, "c", monkeypatch, "train.seed=7")
    assert len(calls) == 1 and a.metrics["demo_rows"] == 2.0  # one generate call per run
    prompts, ids, lengths = calls[0]
    roll = a.batch.roll
    for k, row in enumerate([4, 9]):  # each group's row is the policy's sample, as it was drawn
        n = int(lengths[k])
        assert int(roll.lengths[row]) == n and roll.completion_ids[row, :n].tolist() == ids[k][:n]
        assert roll.demo[row] == 1
        # the sample was drawn after the question, the failed answer and its critique ...
        asked = tok.decode(prompts[k])
        first = a.batch.texts[5 * k]  # the group's first sample failed
        note = critique(first, solve(a.batch.problems[k]), correct=False)
        assert note in asked and "Critique:" in asked
        # ... and trains as an answer to the plain prompt (the group's)
        real = roll.prompt_ids[row][roll.prompt_mask[row] > 0]
        assert torch.equal(real, roll.prompt_ids[5 * k][roll.prompt_mask[5 * k] > 0])
    # the same seed: the same refinements; another seed: other ones
    assert torch.equal(a.batch.roll.completion_ids, b.batch.roll.completion_ids)
    assert not torch.equal(a.batch.roll.completion_ids[[4, 9]], c.batch.roll.completion_ids[[4, 9]])


def test_self_proposed_interventions_are_the_policys_first_step(micro_base, tmp_path, monkeypatch):
    calls = []

    def spy(model, prompts, **kw):
        roll = REAL_GENERATE(model, prompts, **kw)
        calls.append((prompts, roll))
        return roll

    monkeypatch.setattr(demos_module, "generate", spy)
    over = ["eval.before=false", "rollout.max_new_tokens=8", "demos.intervention_by='policy'"]
    run = setup_run(load_config("int", micro_run(micro_base, *over)), run_dir=tmp_path, progress=False)
    try:
        got = run.collector.collect(1)
    finally:
        run.collector.rounds.close()
    tok, roll = run.tokenizer, got.batch.roll
    assert len(calls) == 1
    prompts, sampled = calls[0]
    rows = [i for i in range(len(roll)) if roll.demo[i] == 1]
    assert rows and len(rows) == got.metrics["demo_rows"]
    for k, row in enumerate(rows):
        # the micro model's first step is already wrong: no prefix, the policy's first step alone
        assert "A reference solution:" in tok.decode(prompts[k])
        step = next(p.strip() for p in sampled.texts(tok)[k].split("\n") if p.strip())
        want = tok(step, add_special_tokens=False)["input_ids"][:8]
        n = int(roll.lengths[row])
        assert roll.completion_ids[row, :n].tolist() == want  # no EOS: the trace goes on
        assert tok.eos_token_id not in want


def _always_right(monkeypatch):
    from rlvr.rewards import REWARDS

    def make(**knobs):
        return lambda prompt, completion, answer, **meta: 1.0

    monkeypatch.setitem(REWARDS._items, "answer", make)


def _record(run_dir):
    rec = golden.record_of(run_dir)
    for row in rec["metrics"]:
        row.pop("demo_rows", None)
    return rec


@pytest.mark.parametrize("name", ["int", "critique_grpo"])
def test_without_a_failed_sample_the_recipe_trains_as_reasoner_grpo(
    name, micro_base, tmp_path, dense_reward, monkeypatch
):
    """Every sample is right (a verifier that says so): no group has a failed sample, the stage
    adds no row and the run is reasoner_grpo's, number for number."""
    _always_right(monkeypatch)
    runs = {}
    for recipe in ("reasoner_grpo", name):
        cfg = load_config(recipe, micro_run(micro_base, *golden.RECIPE_RUN, *dense_reward))
        train(cfg, run_dir=tmp_path / recipe, progress=False)
        runs[recipe] = _record(tmp_path / recipe)
    rows = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    assert [r["demo_rows"] for r in rows] == [0.0, 0.0]
    assert not golden.differences(runs["reasoner_grpo"], runs[name], rel=0.0, abs_=0.0)


def test_the_sources_config_is_refused_where_it_cannot_work():
    with pytest.raises(ConfigError, match=r"'demos\.source' = 'critic'; expected .*'refinement'"):
        load_config("int", ["demos.source='critic'"])
    with pytest.raises(ConfigError, match=r"'demos\.critique_template' = .* must contain \{critique\}"):
        load_config("critique_grpo", ["demos.critique_template='Fix: {answer}'"])
    with pytest.raises(ConfigError, match=r"must contain \{answer\} and \{critique\}"):
        load_config("critique_grpo", ["demos.critique_template='Fix it.'"])
    with pytest.raises(ConfigError, match=r"'demos\.critique_template' .* not a template"):
        load_config("critique_grpo", ["demos.critique_template='{answer} {critique} {x}'"])
    with pytest.raises(ConfigError, match=r"'demos\.critique_template' is set but demos\.source"):
        load_config("int", ["demos.critique_template='{answer} {critique}'"])
    with pytest.raises(ConfigError, match=r"'demos\.step_delimiter' = ''"):
        load_config("int", ["demos.step_delimiter=''"])
    with pytest.raises(ConfigError, match=r"'demos\.intervention_by' = 'model'; expected"):
        load_config("int", ["demos.intervention_by='model'"])
    with pytest.raises(ConfigError, match=r"'demos\.intervention_by' is set but demos\.source"):
        load_config("critique_grpo", ["demos.intervention_by='policy'"])
    with pytest.raises(ConfigError, match=r"'demos\.intervention_template' = .* must contain"):
        load_config("int", ["demos.intervention_by='policy'", "demos.intervention_template='Fix.'"])
    with pytest.raises(ConfigError, match=r"'demos\.intervention_template' .* not a template"):
        load_config("int", ["demos.intervention_by='policy'", "demos.intervention_template='{x}'"])
    with pytest.raises(ConfigError, match=r"'demos\.intervention_template' is set but the policy"):
        load_config("int", ["demos.intervention_template='See {reference}'"])
    with pytest.raises(ConfigError, match=r"'algo\.refine_gamma'"):
        load_config("critique_grpo", ["algo.refine_gamma=0.0"])


def test_a_resumed_critique_grpo_run_equals_an_uninterrupted_one(micro_base, tmp_path, dense_reward):
    """The refinements draw from the run's sampling generator, which the checkpoint keeps: a run
    resumed from its step-2 checkpoint repeats the whole run."""
    run = [*golden.RECIPE_RUN, *dense_reward, "train.samples_every=1"]

    def cfg(steps: int):
        return load_config("critique_grpo", micro_run(micro_base, *run, f"train.steps={steps}"))

    train(cfg(3), run_dir=tmp_path / "a", progress=False)
    train(cfg(2), run_dir=tmp_path / "b", progress=False)
    train(cfg(3), run_dir=tmp_path / "b", resume=True, progress=False)
    a, b = golden.record_of(tmp_path / "a"), golden.record_of(tmp_path / "b")
    assert [r["demo_rows"] for r in a["metrics"]] == [2.0, 2.0, 2.0]
    assert not golden.differences(a, b, rel=0.0, abs_=0.0)
