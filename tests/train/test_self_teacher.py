"""The self-teacher input (``[self_teacher]``): which rows get a hint, the policy's log-probs of their
tokens after the hinted prompt (checked against a direct forward on the concatenated text), the
neutral rows, the advantage stage's wiring and the config's errors."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from tests.conftest import micro_run

from rlvr.algos import CREDIT
from rlvr.data.prompts import format_prompt
from rlvr.train.advantage import Advantages
from rlvr.train.components import build_components
from rlvr.train.config import ConfigError, load_config
from rlvr.train.demos import demonstration
from rlvr.train.self_teacher import hints, self_teacher_forward
from rlvr.train.setup import setup_run

TEMP = 0.7


def _run(micro_base, tmp_path, *extra):
    cfg = load_config(
        "srpo", micro_run(micro_base, f"rollout.temperature={TEMP}", "eval.before=false", *extra)
    )
    return cfg, setup_run(cfg, run_dir=tmp_path / "run", progress=False)


def _with_verdicts(batch, correct):
    return replace(batch, correct=torch.tensor(correct, dtype=batch.correct.dtype))


def test_hints_go_to_failed_rows_with_a_solution(micro_base, tmp_path):
    _, run = _run(micro_base, tmp_path)
    try:
        batch = run.collector.collect(1).batch  # 2 groups of 4
        # group 0: row 2 correct; group 1: all failed
        b = _with_verdicts(batch, [False, False, True, False, False, False, False, False])
        sol = [demonstration(p) for p in b.problems]
        assert all(s for s in sol)  # the reasoner's families all have worked solutions
        t = "S: {solution}"
        got = hints(b, source="group", template=t)
        own = f"S: {b.texts[2]}"
        assert got == [own, own, None, own, None, None, None, None]
        got = hints(b, source="solution", template=t)
        assert got == [f"S: {sol[0]}"] * 2 + [None] + [f"S: {sol[0]}"] + [f"S: {sol[1]}"] * 4
        got = hints(b, source="auto", template=t)  # the group's correct sample first
        assert got == [own, own, None, own] + [f"S: {sol[1]}"] * 4
        everyone = _with_verdicts(batch, [True] * 8)
        assert hints(everyone, source="auto", template=t) == [None] * 8
    finally:
        run.collector.rounds.close()


def _direct(model, tok, problem, hint, completion):
    """(log-probs, entropies) [L] of ``completion`` (ids) after the hinted chat prompt, from one
    unpadded forward of the concatenated ids."""
    text = format_prompt(tok, f"{problem.question}\n{hint}", messages=problem.messages)
    ctx = tok(text, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([ctx + completion])  # [1, P + L]
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(ctx) - 1 : -1].float() / TEMP  # [L, V]
    logp = torch.log_softmax(logits, -1)
    tok_logp = logp.gather(-1, torch.tensor(completion)[:, None])[:, 0]  # [L]
    ent = -(logp.exp() * logp).sum(-1)  # [L]
    return tok_logp, ent


def test_self_teacher_logp_equal_a_direct_forward_on_the_concatenated_text(micro_base, tmp_path):
    _, run = _run(micro_base, tmp_path)
    try:
        batch = run.collector.collect(1).batch
        b = _with_verdicts(batch, [False, True, False, False, True, True, True, True])
        roll = b.roll
        row_hints = hints(b, source="auto", template="A correct solution:\n{solution}")
        assert [h is not None for h in row_hints] == [True, False, True, True] + [False] * 4
        old = roll.old_logp.clone()
        self_teacher_forward(run.model, run.tokenizer, b, roll, row_hints, temperature=TEMP)
        assert roll.self_teacher_mask.tolist() == [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
        for i in (0, 2, 3):
            n = int(roll.mask[i].sum())
            comp = roll.completion_ids[i, :n].tolist()
            want_lp, want_h = _direct(run.model, run.tokenizer, b.problems[0], row_hints[i], comp)
            torch.testing.assert_close(roll.self_teacher_logp[i, :n], want_lp, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(roll.self_teacher_entropy[i, :n], want_h, rtol=1e-4, atol=1e-5)
            assert float(roll.self_teacher_entropy[i, n:].abs().sum()) == 0.0
            # the hint changes the context: the teacher differs from the behaviour policy
            assert not torch.allclose(roll.self_teacher_logp[i, :n], old[i, :n])
        for i in (1, 4, 5, 6, 7):  # no hint: d = 0 exactly, no entropy
            assert torch.equal(roll.self_teacher_logp[i], old[i])
            assert float(roll.self_teacher_entropy[i].abs().sum()) == 0.0
    finally:
        run.collector.rounds.close()


def test_the_advantage_stage_supplies_the_self_teacher_only_when_needed(micro_base, tmp_path):
    cfg, run = _run(micro_base, tmp_path)
    try:
        batch = run.collector.collect(1).batch
        roll = batch.roll
        assert roll.self_teacher_logp is None  # not a field the sampler fills
        ones = torch.ones(len(run.runner.names))
        adv = Advantages(
            run.comps,
            ones,
            policy=run.model,
            temperature=TEMP,
            tokenizer=run.tokenizer,
            self_teacher=cfg.self_teacher,
        )
        with pytest.raises(ValueError, match="needs the batch"):
            adv.forwards(roll)
        est = adv(roll, [4, 4], 0.0, batch)
        assert roll.self_teacher_logp.shape == roll.mask.shape
        failed = (~batch.correct.bool()).float()  # [N] the micro model fails, solutions exist
        assert torch.equal(roll.self_teacher_mask, failed)
        direct = CREDIT["srpo"](
            roll.rewards.view(2, 4),
            roll.mask,
            old_logp=roll.old_logp,
            self_teacher_logp=roll.self_teacher_logp,
            self_teacher_entropy=roll.self_teacher_entropy,
            self_teacher_mask=roll.self_teacher_mask,
            **run.comps.kwargs["credit"],
        )
        torch.testing.assert_close(est.adv, direct)
        assert float(est.adv.abs().sum()) > 0
        # a recipe whose components do not read the self-teacher runs no such forward
        grpo = build_components(load_config("reasoner_grpo", micro_run(micro_base)))
        roll.self_teacher_logp = roll.self_teacher_entropy = roll.self_teacher_mask = None
        Advantages(grpo, ones, policy=run.model, tokenizer=run.tokenizer, self_teacher=cfg.self_teacher)(
            roll, [4, 4], 0.0, batch
        )
        assert roll.self_teacher_logp is None and roll.self_teacher_mask is None
    finally:
        run.collector.rounds.close()


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"'self_teacher.source' = 'x'; expected 'auto'"):
        load_config("srpo", ["self_teacher.source='x'"])
    with pytest.raises(ConfigError, match=r"'self_teacher.template' .* must contain '\{solution\}'"):
        load_config("srpo", ["self_teacher.template='no slot'"])
    with pytest.raises(ConfigError, match=r"only '\{solution\}' \(KeyError"):
        load_config("srpo", ["self_teacher.template='{answer} {solution}'"])
    with pytest.raises(ConfigError, match=r"\[self_teacher\] is set but no chosen component"):
        load_config("grpo", ["self_teacher.source='group'"])
    with pytest.raises(ConfigError, match="'srpo' reads the self-teacher's log-probs"):
        load_config("srpo", ["guidance.strategy='hints'"])
    with pytest.raises(ConfigError, match="'srpo' reads the self-teacher's log-probs"):
        load_config("srpo", ["scale.shard=fsdp", "scale.learners=2"])
