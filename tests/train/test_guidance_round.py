"""The trainer's guidance round: which failed groups are re-rolled, at which tier, and how a prefix
enters the prompt (masked from the loss) and the scored text."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from tests.conftest import micro_run

from rlvr.data.guidance import GUIDES, Guide
from rlvr.data.prompts import format_prompt
from rlvr.data.tasks import Problem
from rlvr.models.hf import load_model
from rlvr.train.batch import Batch
from rlvr.train.collect import Guidance
from rlvr.train.config import load_config
from rlvr.train.rounds import Rounds
from rlvr.train.score import Scorer
from rlvr.train.setup import build_rewards, build_verifier


class _GD:
    max_tier = 3
    knobs: ClassVar[dict] = {}


def _fake_round(problems, correct, guides=None):
    n = len(correct)
    return Batch(
        problems=problems,
        roll=None,  # type: ignore[arg-type]
        texts=[""] * n,
        raw=torch.zeros(n),
        correct=torch.tensor(correct, dtype=torch.float32),
        sizes=[n // len(problems)] * len(problems),
        guides=guides,
    )


def _guide_failed(rounds, rnd, guide, gd, traces, rng, run_round):
    """The guidance stage's re-rolls of ``rounds[rnd]``, with ``run_round(problems, picked, guides)``."""
    stage = Guidance(guide, gd.max_tier, gd.knobs, traces, rng)
    return stage.rescue(rounds, rnd, lambda problems, guides: run_round(problems, None, guides))


def test_guide_failed_raises_tiers_until_rescued():
    probs = [Problem(f"q{i}", "a", meta={"hints": ["h1", "h2", "h3"]}) for i in range(3)]
    # group 0 succeeds already; groups 1 and 2 fail (G = 2)
    rounds = [_fake_round(probs, [1, 0, 0, 0, 0, 0])]
    calls = []

    def run_round(problems, picked, guides):
        calls.append(([p.question for p in problems], [g.tier for g in guides]))
        # q1 is rescued at tier 2, q2 never
        ok = [
            1.0 if (p.question == "q1" and g.tier == 2) else 0.0
            for p, g in zip(problems, guides, strict=True)
        ]
        return _fake_round(problems, [x for o in ok for x in (o, 0.0)], guides)

    swaps = _guide_failed(rounds, 0, GUIDES["hints"], _GD, None, np.random.default_rng(0), run_round)
    assert calls == [(["q1", "q2"], [1, 1]), (["q1", "q2"], [2, 2]), (["q2"], [3])]
    assert swaps == {(0, 1): (2, 0)}  # round 2 (tier 2), its group 0 is q1
    assert len(rounds) == 4


def test_guide_failed_stops_without_guidance():
    probs = [Problem("q0", "a")]  # no hint source
    rounds = [_fake_round(probs, [0, 0])]

    def run_round(*a):
        raise AssertionError("nothing to re-roll")

    assert (
        _guide_failed(rounds, 0, GUIDES["hints"], _GD, None, np.random.default_rng(0), run_round) == {}
    )


def test_prefix_is_prompt_side_and_scored(micro_base):
    cfg = load_config("grpo", micro_run(micro_base, "rollout.samples_per_prompt=3"))
    model, tok = load_model(micro_base)
    p = Problem("1 + 2 + 3 =", "6", meta={"source_dataset": "chain_sum", "expression": "1 + 2 + 3"})
    guide = Guide(assistant_prefix="<answer>6", tier=1)
    gen = torch.Generator().manual_seed(0)
    scorer = Scorer(build_rewards(cfg), build_verifier(cfg), "", [], cfg.rollout.max_new_tokens)
    x = Rounds(cfg, model, tok, scorer, gen).run([p], guides=[guide])
    want = tok(format_prompt(tok, p.question) + "<answer>6", add_special_tokens=False)["input_ids"]
    for row in range(3):
        ids = x.roll.prompt_ids[row][x.roll.prompt_mask[row] > 0].tolist()
        assert ids == want  # the prefix ends the prompt: its tokens are never in the loss mask
        assert x.texts[row].startswith("<answer>6")
    # the answer reward scores prefix + completion: "<answer>6</answer>" would be correct
    assert x.correct.tolist() == [float(t.startswith("<answer>6</answer>")) for t in x.texts]
