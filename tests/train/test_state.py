"""TrainState: every piece of a run's resumable state survives a checkpoint round trip."""

from __future__ import annotations

import dataclasses
from collections import deque

import numpy as np
import torch

from rlvr.data.guidance import TraceStore
from rlvr.data.samplers import PromptStats
from rlvr.data.tasks import Problem
from rlvr.rollout import Rollout
from rlvr.rollout.replay import ReplayBuffer
from rlvr.train.batch import Batch
from rlvr.train.scale import Ready
from rlvr.train.state import TrainState

# the keys of trainer_state.pt that runs, benchmarks and older checkpoints rely on
KEYS = {
    "step",
    "optimizer",
    "generator",
    "cpu_generator",
    "torch_rng",
    "task",
    "rollouts_total",
    "sample_rng",
    "prompt_stats",
    "replay",
    "traces",
    "kl_coef",
    "ref_step",
    "ahead",
    "reward_weights",
    "critic",
    "critic_optimizer",
    "prm",
    "prm_optimizer",
}


class _Task:
    """A stream whose state is its position."""

    def __init__(self) -> None:
        self.pos = 0

    def state_dict(self) -> dict:
        return {"pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.pos = state["pos"]


def _roll(fill: float) -> Rollout:
    return Rollout(
        prompt_ids=torch.ones(2, 3, dtype=torch.long),
        prompt_mask=torch.ones(2, 3, dtype=torch.long),
        completion_ids=torch.full((2, 4), 5),
        mask=torch.ones(2, 4),
        old_logp=torch.full((2, 4), fill),
        lengths=torch.full((2,), 4),
        finish=["eos", "length"],
        group=torch.zeros(2, dtype=torch.long),
        rewards=torch.tensor([0.0, 1.0]),
        reward_parts=torch.tensor([[0.0], [1.0]]),
    )


def _state(seed: int) -> TrainState:
    """A state with every field set; ``seed`` decides every value."""
    torch.manual_seed(seed)
    policy, critic = torch.nn.Linear(3, 2), torch.nn.Linear(3, 1)
    opt, critic_opt = torch.optim.AdamW(policy.parameters()), torch.optim.AdamW(critic.parameters())
    prm = torch.nn.Linear(3, 4)
    prm_opt = torch.optim.AdamW(prm.parameters())
    stats = PromptStats(4)
    replay = ReplayBuffer(8, 4, Batch.from_state)
    traces = TraceStore(2)
    task = _Task()
    ahead: deque = deque()
    if seed:  # the recorded state: everything has moved away from where it starts
        policy(torch.randn(5, 3)).sum().backward()
        opt.step()
        critic(torch.randn(5, 3)).sum().backward()
        critic_opt.step()
        prm(torch.randn(5, 3)).sum().backward()
        prm_opt.step()
        stats.update(1, step=3, successes=2.0, attempts=4, abs_adv=0.5)
        problem = Problem("q", "a", meta={"k": 1}, messages=({"role": "user", "content": "q"},))
        replay.add(Batch([problem], _roll(-0.5), ["x", "y"], torch.ones(2), torch.ones(2), [2], step=3))
        traces.add("q", "a solution")
        task.pos = 17
        ahead.append(([problem], Ready(_roll(-0.25))))
    gen = torch.Generator().manual_seed(seed + 10)
    cpu_gen = torch.Generator().manual_seed(seed + 11)
    rng = np.random.default_rng(seed + 12)
    if seed:
        torch.rand(3, generator=gen), torch.rand(3, generator=cpu_gen), rng.random(3)
    return TrainState(
        step=5 * seed,
        optimizer=opt,
        generator=gen,
        cpu_generator=cpu_gen,
        task=task,
        rollouts_total=40 * seed,
        sample_rng=rng,
        prompt_stats=stats,
        replay=replay,
        traces=traces,
        kl_coef=0.1 * seed,
        ref_step=2 * seed,
        ahead=ahead,
        reward_weights={"weights": torch.tensor([1.0, 0.1 - 0.3 * seed]), "stage": torch.tensor([seed])},
        critic=critic,
        critic_optimizer=critic_opt,
        prm=prm,
        prm_optimizer=prm_opt,
    )


def _same(a, b, where=""):
    """Deep equality of checkpoint contents (tensors, containers, dataclasses such as Rollout)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif dataclasses.is_dataclass(a):
        _same(vars(a), vars(b), where)
    elif isinstance(a, dict):
        assert set(a) == set(b), (where, set(a) ^ set(b))
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def test_every_field_is_a_checkpoint_key():
    assert {f.name for f in dataclasses.fields(TrainState)} == KEYS


def test_every_field_survives_a_round_trip(tmp_path):
    torch_rng = torch.get_rng_state()
    saved = _state(1).state_dict()
    assert set(saved) == KEYS  # every field, set, is saved
    torch.save(saved, tmp_path / "trainer_state.pt")
    fresh = _state(0)  # built as a run builds it, before loading
    before = fresh.state_dict()
    for key in KEYS - {"torch_rng"}:  # the fresh state really differs in every field
        if key not in before:  # an empty piece (no rollouts ahead) is left out
            continue
        try:
            _same(saved[key], before[key])
        except AssertionError:
            continue
        raise AssertionError(f"{key}: the test's two states do not differ")
    fresh.load_state_dict(torch.load(tmp_path / "trainer_state.pt", weights_only=False))
    _same(saved, fresh.state_dict())
    # loaded in place: the objects that other parts of the run hold are the ones restored
    assert fresh.task.pos == 17 and len(fresh.replay) == 1 and fresh.traces.get("q") == ["a solution"]
    torch.set_rng_state(torch_rng)


def test_pieces_a_run_lacks_are_left_out_and_ignored():
    st = _state(0)
    st.replay = st.traces = st.prompt_stats = st.critic = st.critic_optimizer = None
    saved = st.state_dict()
    assert not {"replay", "traces", "prompt_stats", "critic", "critic_optimizer", "ahead"} & set(saved)
    full = _state(1).state_dict()
    st.load_state_dict(full)  # a checkpoint with pieces this run does not have
    assert st.replay is None and st.step == 5 and st.kl_coef == 0.1
