"""Step rewards: the arithmetic step check, step scores placed on tokens, and the trainer's wiring of
process rewards into token-level credit (pure_min)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from tests.conftest import micro_run

from rlvr.rewards import REWARDS
from rlvr.rewards.steps import StepReward, check_equations, step_token_rewards
from rlvr.train.config import ConfigError, load_config
from rlvr.train.trainer import train


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ("8 + 2 = 10", True),
        ("8 + 2 = 11", False),
        ("so 8+2=10 and 10-7=3", True),
        ("10 - 7 = 4 then 2=2", False),  # one false equation makes the step wrong
        ("(2 + 3 = 5)", True),  # unmatched outer parentheses dropped
        ("2x3 = 6", True),
        ("3.5*2=7", True),
        ("1 = 2 = 2", False),  # a chain: 1 = 2 and 2 = 2
        ("-3 + 1 = -2", True),
        ("x = 5", None),  # not arithmetic on the left
        ("a <= b", None),
        ("6/0 = 1", None),  # cannot be evaluated: not checked
        ("<answer>3</answer>", None),
        ("2 ** 3 = 8", None),  # powers are not in the grammar
    ],
)
def test_check_equations(step, expected):
    assert check_equations(step) is expected


def test_arith_steps_scores_each_line():
    fn = REWARDS["arith_steps"]()
    comps = [
        "8 + 2 = 10\n10 - 7 = 3\n<answer>3</answer>",
        "8 + 2 = 11\n<answer>4</answer>",
        "<answer>3</answer>",
        "\n",
    ]
    r, m = fn.step_rewards(["q"] * 4, comps)
    assert r.tolist() == [[1, 1, 1], [-1, 1, 0], [1, 0, 0], [0, 0, 0]]
    assert m.tolist() == [[1, 1, 1], [1, 1, 0], [1, 0, 0], [0, 0, 0]]
    # as an outcome reward: the worst step, 0 without steps
    assert fn(["q"] * 4, comps, [""] * 4, [{}] * 4, group_size=4) == [1.0, -1.0, 1.0, 0.0]


def test_arith_steps_knobs_are_checked():
    with pytest.raises(ValueError, match="nonzero"):
        REWARDS["arith_steps"](wrong=0.0)
    with pytest.raises(ValueError, match="delimiter"):
        REWARDS["arith_steps"](delimiter="")


class _Pieces:
    """A tokenizer stub: token id i decodes to pieces[i] (special tokens: none)."""

    def __init__(self, pieces):
        self.pieces = pieces

    def decode(self, ids, skip_special_tokens=True):
        return "".join(self.pieces[i] for i in ids)


def _place(pieces, rows, scores, mask, delimiter="\n"):
    tok = _Pieces(pieces)
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])  # [N, T]
    lengths = torch.tensor([len(r) for r in rows])
    texts = [tok.decode(r) for r in rows]
    return step_token_rewards(
        tok, ids, lengths, texts, torch.tensor(scores), torch.tensor(mask), delimiter
    ).tolist()


def test_step_token_rewards_puts_each_score_on_the_steps_last_token():
    chars = ["a", "b", "\n", "c", "d"]  # one character per token: step ends are character ends
    assert _place(chars, [[0, 1, 2, 3, 4]], [[0.5, -1.0]], [[1, 1]]) == [[0, 0.5, 0, 0, -1.0]]
    # multi-character tokens: "ab" | "\nc" | "d"; step 1 ("ab") ends inside token 0, step 2 at token 2
    assert _place(["ab", "\nc", "d"], [[0, 1, 2]], [[0.5, -1.0]], [[1, 1]]) == [[0.5, 0, -1.0]]
    # the last step owns the tail: a trailing delimiter and an EOS that decodes to nothing
    pieces = ["ab", "\n", "cd", "\n", ""]
    assert _place(pieces, [[0, 1, 2, 3, 4]], [[0.5, -1.0]], [[1, 1]]) == [[0.5, 0, 0, 0, -1.0]]
    # two steps ending on one token keep the lower score; padding rows stay 0
    assert _place(["ab\ncd", "x"], [[0], [1, 1]], [[0.5, -1.0], [2.0, 0.0]], [[1, 1], [1, 0]]) == [
        [-1.0, 0],
        [0, 2.0],
    ]


def test_step_token_rewards_on_the_real_tokenizer_matches_decoded_prefixes(micro_base):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(micro_base)
    text = "8 + 2 = 10\n10 - 7 = 3\n<answer>3</answer>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    decoded = tok.decode(ids, skip_special_tokens=True)
    fn = REWARDS["arith_steps"]()
    r, m = fn.step_rewards(["q"], [decoded])
    out = step_token_rewards(tok, torch.tensor([ids]), torch.tensor([len(ids)]), [decoded], r, m, "\n")[
        0
    ]
    ends = [t for t in range(len(ids)) if out[t] != 0]
    assert len(ends) == 3 and ends[-1] == len(ids) - 1
    for k, t in enumerate(ends[:-1]):  # the first token whose decoded prefix covers step k
        end = len("\n".join(decoded.split("\n")[: k + 1]))
        assert len(tok.decode(ids[: t + 1])) >= end > len(tok.decode(ids[:t]))


def test_step_rewards_are_computed_once_per_batch():
    calls = []

    class Counting(StepReward):
        def score_steps(self, prompts, completions):
            calls.append(len(completions))
            return torch.ones(len(completions), 1), torch.ones(len(completions), 1)

    fn = Counting()
    fn.step_rewards(["p"], ["a"])
    fn.step_rewards(["p"], ["a"])
    fn.step_rewards(["p"], ["b"])
    assert calls == [1, 1]


def _cfg(micro_base, *extra):
    return load_config(
        "pure",
        micro_run(micro_base, "eval.before=false", "eval.after=false", "train.steps=2", *extra),
    )


def test_pure_min_without_a_step_reward_is_refused(micro_base, tmp_path):
    with pytest.raises(ConfigError, match="exactly one step reward"):
        train(_cfg(micro_base, "rewards={answer={weight=1.0}}"), run_dir=tmp_path / "r", progress=False)


def test_pure_trains_on_process_rewards_placed_on_tokens(micro_base, tmp_path, monkeypatch):
    """The rollouts carry process rewards: one nonzero per step, on counted tokens only, the last
    counted token (EOS) always one of them."""
    import rlvr.train.advantage as trainer_mod  # where the credit inputs are supplied

    seen = []
    real = trainer_mod.credit_inputs

    def spy(roll, needs, kl):
        out = real(roll, needs, kl)
        seen.append((out["process_rewards"].clone(), roll.mask.clone()))
        return out

    monkeypatch.setattr(trainer_mod, "credit_inputs", spy)
    train(_cfg(micro_base), run_dir=tmp_path / "r", progress=False)
    assert len(seen) == 2
    for p, mask in seen:
        assert p.shape == mask.shape and bool(((p != 0) <= (mask > 0)).all())
        assert set(p.unique().tolist()) <= {-1.0, 0.0, 1.0}
        last = mask.sum(-1).long() - 1  # [N] every completion's last counted token ends a step
        rows = torch.nonzero(last >= 0).squeeze(1)
        assert bool((p[rows, last[rows]] != 0).all())
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in rows)
