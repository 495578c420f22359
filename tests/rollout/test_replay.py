"""The rollout replay buffer: FIFO capacity, age bound, uniform draws, checkpoint round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlvr.data.tasks import Problem
from rlvr.rollout import Rollout
from rlvr.rollout.replay import ReplayBuffer
from rlvr.train.batch import Batch


def _group(step: int, g: int = 2) -> Batch:
    roll = Rollout(
        prompt_ids=torch.full((g, 3), step),
        prompt_mask=torch.ones(g, 3, dtype=torch.long),
        completion_ids=torch.full((g, 4), step),
        mask=torch.ones(g, 4),
        old_logp=torch.full((g, 4), -0.5),
        lengths=torch.full((g,), 4),
        finish=["eos"] * g,
        group=torch.zeros(g, dtype=torch.long),
        rewards=torch.tensor([0.0, 1.0]),
        reward_parts=torch.tensor([[0.0], [1.0]]),
    )
    return Batch(
        problems=[
            Problem(f"q{step}", "a", meta={"i": step}, messages=({"role": "user", "content": "x"},))
        ],
        roll=roll,
        texts=["t0", "t1"],
        correct=torch.tensor([0.0, 1.0]),
        raw=torch.tensor([0.0, 1.0]),
        sizes=[g],
        step=step,
    )


def test_capacity_and_age():
    buf = ReplayBuffer(capacity=3, max_age=2)
    for s in range(1, 6):
        buf.add(_group(s))
    assert [x.step for x in buf.groups] == [3, 4, 5]  # FIFO capacity
    got = buf.sample(10, step=6, rng=np.random.default_rng(0))  # 6 - 3 > 2: step 3 is too old
    assert sorted(x.step for x in got) == [4, 5] and len(buf) == 2
    assert buf.sample(0, step=6, rng=np.random.default_rng(0)) == []
    with pytest.raises(ValueError):
        ReplayBuffer(capacity=0)


def test_uniform_draws_without_replacement():
    buf = ReplayBuffer(capacity=10, max_age=100)
    for s in range(10):
        buf.add(_group(s))
    rng = np.random.default_rng(1)
    counts = np.zeros(10)
    for _ in range(2000):
        got = buf.sample(3, step=10, rng=rng)
        assert len({x.step for x in got}) == 3
        for x in got:
            counts[x.step] += 1
    assert np.allclose(counts / 2000, 0.3, atol=0.04)


def test_state_dict_round_trip(tmp_path):
    buf = ReplayBuffer(capacity=4, max_age=5)
    for s in (1, 2):
        buf.add(_group(s))
    torch.save(buf.state_dict(), tmp_path / "s.pt")
    new = ReplayBuffer(load_group=Batch.from_state)
    new.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=False))
    assert (new.capacity, new.max_age, len(new)) == (4, 5, 2)
    a, b = buf.groups[1], new.groups[1]
    assert (
        b.problems == a.problems
        and b.problems[0].meta == {"i": 2}
        and b.problems[0].messages == a.problems[0].messages
    )
    assert torch.equal(a.roll.old_logp, b.roll.old_logp) and a.roll.finish == b.roll.finish
    assert b.texts == a.texts and b.step == 2 and torch.equal(b.rewards, a.rewards)


def test_a_replay_buffer_of_an_older_checkpoint_loads():
    """Checkpoints written before the batch type stored each group as a ReplayGroup's fields
    (problem, roll, texts, parts, correct, rewards, raw, step); they resume into batches."""
    from dataclasses import asdict

    x = _group(3)
    p = x.problems[0]
    old = {
        "capacity": 4,
        "max_age": 5,
        "groups": [
            {
                "texts": x.texts,
                "parts": x.parts,
                "correct": x.correct,
                "rewards": x.rewards,
                "raw": x.raw,
                "step": 3,
                "problem": {**asdict(p), "meta": p.meta},
                "roll": vars(x.roll).copy(),
            }
        ],
    }
    buf = ReplayBuffer(load_group=Batch.from_state)
    buf.load_state_dict(old)
    (b,) = buf.groups
    assert b.problems == [p] and b.problems[0].messages == p.messages and b.sizes == [2]
    assert b.step == 3 and b.texts == x.texts and torch.equal(b.rewards, x.rewards)
    assert torch.equal(b.parts, x.parts) and torch.equal(b.correct, x.correct)
