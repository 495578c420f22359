"""Guidance for all-fail groups: hint tiers, solution prefixes, the trace store, prompt assembly."""

from __future__ import annotations

import numpy as np
import pytest

from rlvr.data.guidance import GUIDES, Guide, TraceStore, apply_guide, arithmetic_steps
from rlvr.data.tasks import Problem

RNG = np.random.default_rng(0)


def _hint(p: Problem, tier: int, **kw):
    return GUIDES["hints"](p, tier=tier, traces=[], rng=RNG, **kw)


def test_arithmetic_steps_left_to_right():
    assert arithmetic_steps("1 + 5 - 2") == ["1 + 5 = 6", "6 - 2 = 4"]
    assert arithmetic_steps("-3 + 10 + 2") == ["-3 + 10 = 7", "7 + 2 = 9"]
    assert arithmetic_steps("2 * 3") is None
    assert arithmetic_steps("7") is None


def test_hint_tiers_from_each_source():
    chain = Problem("1 + 5 + 6 =", "12", meta={"expression": "1 + 5 + 6"})
    # the last partial sum states the answer, so only the first is a hint unless reveal_answer
    assert _hint(chain, 1) == Guide(user_extra="Hint: 1 + 5 = 6", tier=1)
    assert _hint(chain, 2) is None
    assert _hint(chain, 2, reveal_answer=True).user_extra == "Hint: The answer is 12."
    listed = Problem("q", "a", meta={"hints": ["think of parity", "odd + odd is even"]})
    assert _hint(listed, 1).user_extra == "Hint: think of parity"
    assert _hint(listed, 2).user_extra == "Hint: think of parity odd + odd is even"
    assert _hint(listed, 3) is None
    sol = Problem("q", "a", meta={"solution": "one two three four five six seven eight"})
    assert [_hint(sol, k).user_extra for k in (1, 2, 3)] == [
        "Hint: one two",
        "Hint: one two three four",
        "Hint: one two three four five six",
    ]
    assert _hint(Problem("q", "a"), 1) is None  # no source: no guidance
    assert _hint(chain, 1, prefix_text="Note:").user_extra == "Note: 1 + 5 = 6"


def test_prefix_fractions_and_sources():
    trace = "abcd efgh ijkl mnop"  # 19 characters
    p = Problem("q", "a")
    fn = GUIDES["prefix"]
    got = [fn(p, tier=k, traces=[trace], rng=RNG, max_frac=0.75, tiers=3) for k in (1, 2, 3)]
    # cut = floor(0.75 * k / 3 * 19) = 4, 9, 14 -> back to the last space at or before the cut
    assert [g.assistant_prefix for g in got] == ["abcd ", "abcd efgh ", "abcd efgh ijkl "]
    assert [g.tier for g in got] == [1, 2, 3]
    assert fn(p, tier=4, traces=[trace], rng=RNG, tiers=3) is None
    assert fn(p, tier=1, traces=[], rng=RNG) is None  # no trace, no solution
    sol = Problem("q", "a", meta={"solution": "<answer>12</answer>"})
    assert fn(sol, tier=3, traces=[], rng=RNG, max_frac=1.0).assistant_prefix == "<answer>12</answer>"
    # several traces: a random one, reproducibly
    picks = {
        fn(
            p, tier=3, traces=["x" * 8, "y" * 8], rng=np.random.default_rng(s), max_frac=1.0
        ).assistant_prefix
        for s in range(20)
    }
    assert picks == {"x" * 8, "y" * 8}


def test_apply_guide_question_and_chat():
    g = Guide(user_extra="Hint: h")
    assert apply_guide(Problem("q", "a"), g) == ("q\nHint: h", None)
    chat = Problem(
        "u2", "a", messages=({"role": "user", "content": "u1"}, {"role": "user", "content": "u2"})
    )
    _, msgs = apply_guide(chat, g)
    assert msgs[-1]["content"] == "u2\nHint: h" and msgs[0]["content"] == "u1"
    assert chat.messages[-1]["content"] == "u2"  # the problem itself is not changed
    assert apply_guide(Problem("q", "a"), None) == ("q", None)


def test_trace_store_keeps_newest_distinct_and_round_trips():
    s = TraceStore(per_prompt=2)
    for t in ("a", "b", "b", "c"):
        s.add("q", t)
    assert s.get("q") == ["b", "c"] and s.get("other") == [] and len(s) == 1
    t = TraceStore(per_prompt=9)
    t.load_state_dict(s.state_dict())
    assert t.get("q") == ["b", "c"] and t.per_prompt == 2
    t.add("q", "d")
    assert t.get("q") == ["c", "d"]


def test_guides_are_registered_with_checked_knobs():
    assert set(GUIDES.names()) >= {"hints", "prefix"}
    assert GUIDES.knobs("prefix") == {"max_frac": 0.75, "tiers": 3}
    with pytest.raises(ValueError):
        GUIDES.check_knobs("prefix", {"max_frac": 1.5})
