"""The teacher ([teacher]) and on-policy distillation: loading, the tokenizer check, the teacher's
forward in the Advantages stage, the errors, and real runs of the opd recipes on the micro model."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from tests.conftest import completion_logits, micro_run
from tests.train import golden

from rlvr.algos import CREDIT
from rlvr.models.hf import load_tokenizer, tokenizer_difference
from rlvr.train.advantage import Advantages
from rlvr.train.checkpoint import latest_checkpoint
from rlvr.train.components import build_components
from rlvr.train.config import ConfigError, load_config
from rlvr.train.setup import setup_run
from rlvr.train.trainer import train


def _teacher(path) -> str:
    return f"teacher.path={json.dumps(str(path))}"


def _metrics(run) -> list[dict]:
    return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]


def _full_logp(model, roll, temperature):
    """[N, T] log softmax(z / temperature) of each sampled token, from one plain whole forward."""
    z = completion_logits(model, roll, temperature)  # [N, T, V]
    return torch.log_softmax(z, -1).gather(-1, roll.completion_ids.unsqueeze(-1)).squeeze(-1)


def test_the_teacher_is_loaded_frozen_and_its_forward_gives_its_log_probs(
    micro_base, micro_teacher, tmp_path
):
    cfg = load_config(
        "opd",
        micro_run(micro_base, _teacher(micro_teacher), "rollout.temperature=0.7", "eval.before=false"),
    )
    run = setup_run(cfg, run_dir=tmp_path / "run", progress=False)
    try:
        teacher = run.teacher
        assert teacher is not None and teacher is not run.model and run.ref is None
        assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
        assert next(teacher.parameters()).device == next(run.model.parameters()).device
        roll = run.collector.collect(1).batch.roll
        assert roll.teacher_logp is None  # not a field the sampler fills
        adv = Advantages(run.comps, torch.ones(len(run.runner.names)), teacher=teacher, temperature=0.7)
        est = adv(roll, [4, 4], 0.0)
        m = roll.mask.bool()
        assert roll.teacher_logp.shape == roll.mask.shape and not roll.teacher_logp.requires_grad
        want = _full_logp(teacher, roll, 0.7)
        torch.testing.assert_close(roll.teacher_logp[m], want[m], rtol=1e-4, atol=1e-5)
        # the teacher is another model: its log-probs are not the policy's
        assert float((roll.teacher_logp - roll.old_logp)[m].abs().max()) > 1e-2
        direct = CREDIT["opd"](
            roll.rewards.view(2, 4), roll.mask, old_logp=roll.old_logp, teacher_logp=roll.teacher_logp
        )
        torch.testing.assert_close(est.adv, direct)
        # a recipe whose components do not read a teacher runs no teacher forward
        grpo = build_components(load_config("grpo", micro_run(micro_base)))
        roll.teacher_logp = None
        Advantages(grpo, torch.ones(2), teacher=teacher).forwards(roll)
        assert roll.teacher_logp is None
    finally:
        run.collector.rounds.close()


def test_tokenizer_difference_names_what_differs(micro_base):
    a, b = load_tokenizer(micro_base), load_tokenizer(micro_base)
    assert tokenizer_difference(a, b) == ""
    n = len(a.get_vocab())
    a.add_tokens(["<x>", "<y>"])
    b.add_tokens(["<y>", "<x>"])  # the same tokens, other ids
    diff = tokenizer_difference(a, b, ("policy", "teacher"))
    assert diff == (
        f"2 of their {n + 2} tokens have other ids (e.g. '<x>': id {n} in the policy's vocabulary, "
        f"id {n + 1} in the teacher's)"
    )
    b.add_tokens(["<z>"])
    assert tokenizer_difference(a, b, ("policy", "teacher")) == (
        f"their vocabulary sizes differ (the policy's {n + 2} tokens, the teacher's {n + 3})"
    )


def test_a_teacher_with_another_tokenizer_is_refused(micro_base, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(micro_base, other)
    tok = load_tokenizer(other)
    n = len(tok.get_vocab())
    tok.add_tokens(["<extra>"])
    tok.save_pretrained(other)
    cfg = load_config("opd", micro_run(micro_base, _teacher(other)))
    with pytest.raises(ConfigError) as err:
        setup_run(cfg, run_dir=tmp_path / "run", progress=False)
    msg = str(err.value)
    assert f"the teacher (teacher.path = {str(other)!r}" in msg
    assert f"model.path = {str(micro_base)!r}" in msg
    assert f"vocabulary sizes differ (the policy's {n} tokens, the teacher's {n + 1})" in msg


def test_a_component_that_needs_a_teacher_without_one_and_a_teacher_nobody_reads_are_refused():
    with pytest.raises(ConfigError, match=r"credit assigner 'opd' needs the log-probs of a teacher"):
        load_config("opd", ["teacher.embedded=''"])
    with pytest.raises(ConfigError, match=r"\[teacher\] section names none"):
        load_config("grpo", ["algo.credit='opd'"])
    with pytest.raises(ConfigError, match=r"\[teacher\] is set \(teacher.path = '/x'\) but no chosen"):
        load_config("grpo", ["teacher.path='/x'"])
    with pytest.raises(ConfigError, match=r"'teacher.embedded' = 'nope'; valid names"):
        load_config("opd", ["teacher.embedded='nope'"])
    with pytest.raises(ConfigError, match=r"'algo.teacher_coef'.*out of range"):
        load_config("opd", ["algo.teacher_coef=-1.0"])
    with pytest.raises(FileNotFoundError, match="teacher directory /no/such/dir does not exist"):
        setup_run(load_config("opd", ["teacher.path='/no/such/dir'"]), progress=False)


def test_the_embedded_student_shares_the_default_tokenizer():
    """The opd recipes' default pair: the tokenizer is built from these fields alone."""
    from rlvr.models.tiny import EMBEDDED

    student, default = EMBEDDED["student"], EMBEDDED["default"]
    fields = ("task", "task_kwargs", "heldout_size", "seed", "vocab_size", "tokenizer_corpus", "demos")
    assert all(getattr(student, f) == getattr(default, f) for f in fields)
    assert student.sft_steps < default.sft_steps and student.key() != default.key()
    cfg = load_config("opd")
    assert (cfg.model.embedded, cfg.teacher.embedded, cfg.teacher.path) == ("student", "default", "")


def test_opd_without_the_teacher_trains_exactly_as_grpo(
    micro_base, micro_teacher, tmp_path, dense_reward
):
    """teacher_coef = 0, outcome_coef = 1: the same rollouts, losses and weights as grpo, to the bit
    (the teacher's forward draws no random numbers). adv_std is not compared: a token-level
    advantage's spread is taken over the counted tokens, an outcome's over the sequences."""
    common = [*golden.RECIPE_RUN, *dense_reward]
    train(load_config("grpo", micro_run(micro_base, *common)), run_dir=tmp_path / "grpo", progress=False)
    opd = [_teacher(micro_teacher), "algo.teacher_coef=0.0", "algo.outcome_coef=1.0"]
    cfg = load_config("opd", micro_run(micro_base, *common, *opd))
    train(cfg, run_dir=tmp_path / "opd", progress=False)
    skip = golden.TIMING | {"adv_std", "teacher_kl"}
    for a, b in zip(_metrics(tmp_path / "grpo"), _metrics(tmp_path / "opd"), strict=True):
        assert {k: v for k, v in a.items() if k not in skip} == {
            k: v for k, v in b.items() if k not in skip
        }
        assert "teacher_kl" in b and "teacher_kl" not in a
    want = load_file(latest_checkpoint(tmp_path / "grpo") / "model.safetensors")
    got = load_file(latest_checkpoint(tmp_path / "opd") / "model.safetensors")
    assert all(torch.equal(want[k], got[k]) for k in want)


def test_an_opd_update_moves_each_token_toward_the_teacher(micro_base, micro_teacher, tmp_path):
    """One update on a real batch with the teacher's advantages: the sampled tokens the teacher
    prefers (A = log pi_T - log pi_old > 0) gain log-probability, the others lose it (the sampled
    reverse KL of 6 steps on the micro batch is too noisy to show a trend)."""
    from rlvr.rollout import sequence_logp
    from rlvr.train.learner import Learner

    cfg = load_config("opd", micro_run(micro_base, _teacher(micro_teacher), "optim.grad_clip=0"))
    run = setup_run(cfg, run_dir=tmp_path / "run", progress=False)
    try:
        roll = run.collector.collect(1).batch.roll
        est = Advantages(run.comps, torch.ones(len(run.runner.names)), teacher=run.teacher)(
            roll, [4, 4], 0.0
        )
        rows = (roll.prompt_ids, roll.prompt_mask, roll.completion_ids, roll.mask)
        with torch.no_grad():
            before = sequence_logp(run.model, *rows)[0]  # [N, T]
        opt = torch.optim.SGD(run.model.parameters(), lr=0.05)
        Learner(run.model, opt, run.comps, cfg).update_policy(roll, est.adv, torch.Generator())
        with torch.no_grad():
            delta = (sequence_logp(run.model, *rows)[0] - before) * roll.mask  # [N, T]
        m = roll.mask.bool()
        up, down = m & (est.adv > 0), m & (est.adv < 0)
        assert up.any() and down.any()
        assert float(delta[up].mean()) > 0 > float(delta[down].mean())
        assert float((est.adv * delta).sum()) > 0  # the surrogate sum_t A_t log pi(y_t) rose
    finally:
        run.collector.rounds.close()


def test_sharded_learners_run_opd_as_plain_ones(micro_base, micro_teacher, tmp_path):
    """The teacher, like the reference, is not sharded: with `--learners 2 --shard fsdp` each rank
    runs its share of the teacher's forward, and the steps equal two plain ranks' (whose rollouts,
    from per-row seed streams, differ from a one-process run's)."""
    from rlvr.cli import main

    ov = golden.scale_overrides(micro_base, tmp_path, "train.steps=2", _teacher(micro_teacher))
    run = ["train", "--quiet", "--recipe", "opd_grpo", "--learners", "2"]
    assert main([*run, "--run-dir", str(tmp_path / "plain"), *ov]) == 0
    assert main([*run, "--shard", "fsdp", "--run-dir", str(tmp_path / "fsdp"), *ov]) == 0
    plain, fsdp = _metrics(tmp_path / "plain"), _metrics(tmp_path / "fsdp")
    assert len(plain) == len(fsdp) == 2
    for a, b in zip(plain, fsdp, strict=True):
        for key in ("reward_mean", "teacher_kl", "loss", "grad_norm", "adv_std"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a["step"], key)
    assert plain[0]["teacher_kl"] != 0 and plain[-1]["grad_norm"] > 0


def test_rto_reads_the_teacher_and_the_reference(micro_base, micro_teacher, tmp_path):
    """credit = 'rto' loads the reference (it needs ``ref_logp``) and the teacher as the DPO model;
    the trainer's advantages are the component's on the batch's own log-probs."""
    cfg = load_config(
        "grpo",
        micro_run(micro_base, _teacher(micro_teacher), "algo.credit='rto'", "eval.before=false"),
    )
    run = setup_run(cfg, run_dir=tmp_path / "run", progress=False)
    try:
        assert run.ref is not None and run.teacher is not None
        roll = run.collector.collect(1).batch.roll
        adv = Advantages(run.comps, torch.ones(len(run.runner.names)), ref=run.ref, teacher=run.teacher)
        est = adv(roll, [4, 4], 0.0)
        m = roll.mask.bool()
        assert float((roll.teacher_logp - roll.ref_logp)[m].abs().max()) > 1e-2
        direct = CREDIT["rto"](
            roll.rewards.view(2, 4), roll.mask, teacher_logp=roll.teacher_logp, ref_logp=roll.ref_logp
        )
        torch.testing.assert_close(est.adv, direct)
    finally:
        run.collector.rounds.close()
