"""Advantages of a step's batch: the frozen forwards a component needs, then the estimator.

:class:`Advantages` is built once per run. Each step it runs the reference's forward (when a KL term
or a component needs ``ref_logp``), the teacher's (when a credit assigner needs ``teacher_logp``), the
critic's (``values``), the implicit PRM's (``implicit_rewards``, PRIME) and a no-grad forward of the
policy before its update (when a credit assigner needs ``sum_pi_sq`` or an estimator
``seq_hidden``), each learner rank on its share of the rows, subtracts the KL from the rewards when
``algo.kl_in = 'reward'``, and calls the outcome-level estimator (``ADVANTAGES``) or the token-level
credit assigner (``CREDIT``) with exactly the optional inputs that the component declares in
``needs`` (``rlvr.algos.INPUTS``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from rlvr.rollout import Rollout, sequence_logp
from rlvr.rollout.logprobs import pooled_hidden
from rlvr.train.batch import Batch, buckets
from rlvr.train.components import Components
from rlvr.train.config import ConfigError
from rlvr.train.scale import SOLO, Learners, split_rows
from rlvr.train.self_teacher import hints, self_teacher_forward

__all__ = ["Advantages", "Estimate", "advantage_inputs", "credit_inputs", "token_inputs"]


def advantage_inputs(
    roll: Rollout, needs: frozenset[str], b: int, g: int, reward_weights: Tensor
) -> dict[str, Tensor]:
    """The optional inputs (``rlvr.algos.INPUTS["advantage"]``) that an advantage estimator needs."""
    supply: dict[str, Callable[[], Tensor]] = {
        "reward_parts": lambda: roll.reward_parts.view(b, g, -1),  # [B, G, K]
        "reward_weights": lambda: reward_weights,  # [K]
        "seq_logp": lambda: (roll.old_logp * roll.mask).sum(-1).view(b, g),  # [B, G]
        "seq_ref_logp": lambda: (roll.ref_logp * roll.mask).sum(-1).view(b, g),  # [B, G]
        "lengths": lambda: roll.lengths.float().view(b, g),  # [B, G]
        "greedy_rewards": lambda: roll.greedy_rewards.view(b, g),  # type: ignore[union-attr]  # [B, G]
        "seq_hidden": lambda: _need_field(roll, "seq_hidden").view(b, g, -1),  # [B, G, D]
    }
    return {k: supply[k]() for k in needs}


def credit_inputs(
    roll: Rollout, needs: frozenset[str], kl_estimator: Callable[..., Tensor]
) -> dict[str, Tensor]:
    """The optional inputs (``INPUTS["credit"]``) that a token-level credit assigner needs."""
    supply: dict[str, Callable[[], Tensor]] = {
        "kl": lambda: kl_estimator(roll.old_logp, roll.ref_logp) * roll.mask,  # [N, T]
        "old_logp": lambda: roll.old_logp,  # [N, T]
        "completion_ids": lambda: roll.completion_ids,  # [N, T]
        "values": lambda: roll.values,  # [N, T]
        "turn": lambda: _episode_field(roll, "turn"),  # [N, T]
        "turn_rewards": lambda: _episode_field(roll, "turn_rewards"),  # [N, K]
        "turn_states": lambda: _episode_field(roll, "turn_states"),  # [N, K]
        "process_rewards": lambda: _need_field(roll, "process_rewards"),  # [N, T]
        "sum_pi_sq": lambda: _need_field(roll, "sum_pi_sq"),  # [N, T]
        "teacher_logp": lambda: _need_field(roll, "teacher_logp"),  # [N, T]
        "ref_logp": lambda: roll.ref_logp,  # [N, T]
        "implicit_rewards": lambda: _need_field(roll, "implicit_rewards"),  # [N, T]
        "self_teacher_logp": lambda: _need_field(roll, "self_teacher_logp"),  # [N, T]
        "self_teacher_entropy": lambda: _need_field(roll, "self_teacher_entropy"),  # [N, T]
        "self_teacher_mask": lambda: _need_field(roll, "self_teacher_mask"),  # [N]
    }
    return {k: supply[k]() for k in needs}


def token_inputs(
    sub: Rollout, needs: frozenset[str], logp: Tensor, entropy: Tensor
) -> dict[str, Tensor]:
    """The optional per-token inputs (``INPUTS["objective"]``, ``INPUTS["token_weights"]``)."""
    supply: dict[str, Callable[[], Tensor]] = {
        "ref_logp": lambda: sub.ref_logp,  # [m, T]
        "entropy": lambda: entropy.detach(),  # [m, T]
        "logp": lambda: logp.detach(),  # [m, T]
        "completion_ids": lambda: sub.completion_ids,  # [m, T]
        "group": lambda: sub.group,  # [m]
        "rewards": lambda: sub.rewards,  # [m]
        "demo": lambda: sub.demo,  # [m] (the collector's demonstration stage sets it)
        "demo_group": lambda: sub.demo_group,  # [m]
        "self_teacher_logp": lambda: sub.self_teacher_logp,  # [m, T] ([self_teacher]'s forward)
    }
    return {k: supply[k]() for k in needs}


def _need_field(roll: Rollout, name: str) -> Tensor:
    value = getattr(roll, name)
    if value is None:  # the run's setup resolves a step reward whenever a component needs them
        raise ConfigError(f"the credit assigner needs {name!r}, which this batch does not carry")
    return value


def _episode_field(roll: Rollout, name: str) -> Tensor:
    value = getattr(roll, name)
    if value is None:
        raise ConfigError(
            f"the credit assigner needs {name!r}, which only multi-turn episodes have "
            "(task.source = 'env')"
        )
    return value


@dataclass
class Estimate:
    """A step's advantages and what came with them."""

    adv: Tensor  # [N] per sequence, or [N, T] per token
    returns: Tensor  # [N, T] the critic's targets
    kl: float | None = None  # mean per-token KL to the reference, when it entered the reward


class Advantages:
    """The frozen forwards and the advantage estimate of each step (built once per run)."""

    def __init__(
        self,
        comps: Components,
        reward_weights: Tensor,
        *,
        ref: Any = None,
        teacher: Any = None,
        critic: Any = None,
        prm: Any = None,
        prm_beta: float = 0.05,
        policy: Any = None,
        kl_in_reward: bool = False,
        temperature: float = 1.0,
        learners: Learners = SOLO,
        precision: Callable[[], Any] | None = None,
        tokenizer: Any = None,
        self_teacher: Any = None,
    ) -> None:
        self.comps, self.reward_weights = comps, reward_weights  # [K]
        self.ref, self.critic, self.kl_in_reward = ref, critic, kl_in_reward
        self.prm, self.prm_beta = prm, prm_beta  # the implicit PRM ([prm]) and its coefficient
        # the policy's own forward runs only for a component that reads its distribution or states
        self.policy = policy if {"sum_pi_sq", "seq_hidden"} & comps.needs else None
        self.teacher = teacher if "teacher_logp" in comps.needs else None
        self.temperature, self.learners = temperature, learners
        self.precision = precision or contextlib.nullcontext  # bfloat16 autocast, or nothing
        # [self_teacher] (source, template): the policy on hinted prompts, for a component that reads it
        self.self_teacher = self_teacher if "self_teacher_logp" in comps.needs else None
        self.tokenizer = tokenizer
        if self.self_teacher is not None:
            self.policy = policy

    def forwards(self, roll: Rollout, batch: Batch | None = None) -> None:
        """Set ``roll.ref_logp`` and ``roll.values`` [N, T] where the run has a reference or a critic,
        ``roll.teacher_logp`` [N, T] (the frozen teacher's log-probs of the sampled tokens) and
        ``roll.sum_pi_sq`` [N, T] (sum_v pi_old(v|s_t)^2, the policy before this step's update) and
        ``roll.seq_hidden`` [N, D] (the policy's pooled last hidden state) where a component needs
        them, the log-probs at the sampling temperature; each learner rank runs its share of the
        rows. With ``[self_teacher]``, also the self-teacher's inputs of ``batch`` (whose rollout
        ``roll`` is): :func:`rlvr.train.self_teacher.self_teacher_forward`."""
        rows_in = (roll.prompt_ids, roll.prompt_mask, roll.completion_ids, roll.attention)
        if self.ref is not None:
            roll.ref_logp = self.frozen_logp(self.ref, rows_in)  # [N, T]
        if self.teacher is not None:
            roll.teacher_logp = self.frozen_logp(self.teacher, rows_in)  # [N, T]
        if self.critic is not None:
            with torch.no_grad():
                roll.values = split_rows(self.critic, rows_in, self.learners)  # [N, T]
        if self.prm is not None:  # PRIME's implicit process rewards, before the PRM's update
            prm_logp = self.frozen_logp(self.prm, rows_in)  # [N, T]
            roll.implicit_rewards = self.prm_beta * (prm_logp - roll.ref_logp) * roll.mask  # [N, T]
        if "seq_hidden" in self.comps.needs:
            with torch.no_grad(), self.precision():
                roll.seq_hidden = split_rows(
                    lambda *x: pooled_hidden(self.policy, *x), rows_in, self.learners
                )  # [N, D]
        if self.self_teacher is not None:
            if batch is None:
                raise ValueError("the self-teacher's forward needs the batch (problems, verdicts)")
            st = self.self_teacher
            self_teacher_forward(
                self.policy,
                self.tokenizer,
                batch,
                roll,
                hints(batch, source=st.source, template=st.template),
                temperature=self.temperature,
                learners=self.learners,
                precision=self.precision,
            )
        if "sum_pi_sq" in self.comps.needs:
            with torch.no_grad(), self.precision():
                roll.sum_pi_sq = split_rows(
                    lambda *x: sequence_logp(
                        self.policy, *x, temperature=self.temperature, stat="sum_pi_sq"
                    )[1],
                    rows_in,
                    self.learners,
                )  # [N, T]

    def frozen_logp(self, model: Any, rows_in: tuple[Tensor, ...]) -> Tensor:
        """[N, T] log-probs of the sampled tokens under a frozen model (the reference, the teacher):
        no gradient, the run's precision, the sampling temperature, split over the learner ranks."""
        with torch.no_grad(), self.precision():
            return split_rows(
                lambda *x: sequence_logp(model, *x, temperature=self.temperature)[0],
                rows_in,
                self.learners,
            )  # [N, T]

    def __call__(
        self, roll: Rollout, sizes: list[int], kl_coef: float, batch: Batch | None = None
    ) -> Estimate:
        """The advantages of ``roll`` (groups of ``sizes``; the rollout of ``batch``, which only the
        self-teacher's forward reads) after its frozen forwards."""
        self.forwards(roll, batch)
        scored = roll.rewards  # [N] what the advantage sees
        kl_seen = None
        if self.ref is not None and self.kl_in_reward and kl_coef > 0:
            tok_kl = self.comps.kl(roll.old_logp, roll.ref_logp) * roll.mask  # [N, T]
            scored = roll.rewards - kl_coef * tok_kl.sum(-1)  # [N] KL inside the reward
            kl_seen = float(tok_kl.sum() / roll.mask.sum().clamp(min=1))
        returns = scored[:, None] * roll.mask  # [N, T] value targets: the outcome, undiscounted
        adv, returns = self.estimate(roll, scored, returns, sizes)
        return Estimate(adv, returns, kl_seen)

    def estimate(
        self, roll: Rollout, scored: Tensor, returns: Tensor, sizes: list[int]
    ) -> tuple[Tensor, Tensor]:
        """The token-level credit assigner when the recipe has one, else the outcome estimator ->
        (adv [N] or [N, T], value targets [N, T]). Components see [B, G] grids, so groups of different
        sizes (a knapsack allocation) are passed one size at a time."""
        comps = self.comps
        adv_out: Tensor | None = None
        parts = buckets(sizes)
        if parts[0][2] is not None:
            returns = returns.clone()  # filled per bucket where an assigner gives its own targets
        for s, _, rows in parts:
            sub = roll if rows is None else roll.select(rows)
            sub_scored = scored if rows is None else scored[rows.to(scored.device)]  # [n_s]
            grid = sub_scored.view(-1, s)  # [B_s, s]
            ret = None
            if comps.credit is not None:  # token-level credit: every token its own advantage
                adv = comps.credit(
                    grid,
                    sub.mask,
                    **credit_inputs(sub, comps.credit.needs, comps.kl),  # type: ignore[attr-defined]
                    **comps.kwargs["credit"],
                )  # [n_s, T], or (advantages, returns) [n_s, T] each for a critic's assigner (gae)
                if isinstance(adv, tuple):
                    adv, ret = adv
            else:
                needs = comps.advantage.needs  # type: ignore[attr-defined]
                adv = comps.advantage(
                    grid,
                    **advantage_inputs(sub, needs, grid.shape[0], s, self.reward_weights),
                    **comps.kwargs["advantage"],
                ).reshape(-1)  # [n_s]
            if rows is None:
                return adv, returns if ret is None else ret
            if adv_out is None:
                adv_out = adv.new_zeros((len(scored), *adv.shape[1:]))  # [N] or [N, T]
            idx = rows.to(adv.device)
            adv_out[idx] = adv
            if ret is not None:
                returns[idx] = ret
        assert adv_out is not None
        return adv_out, returns
