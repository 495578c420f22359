"""Which prompts a step trains on: per-prompt statistics and the selection strategies of the literature.

A strategy picks ``b`` prompts from a finite pool (a dataset's training rows, or the first
``task.pool_size`` problems of a reasoning-gym stream). Every strategy reads the same
:class:`PromptStats` tracker, which the trainer updates after each step with each rolled-out group's
successes, attempts and mean absolute advantage; it is saved in checkpoints, so a resumed run picks
exactly the prompts the uninterrupted run would have picked.

Strategies are functions registered in :data:`SAMPLERS`::

    fn(stats: PromptStats, b: int, step: int, rng: numpy.random.Generator, *, **knobs) -> indices [b]

They return distinct pool indices, or (indices [b], rollouts per prompt [b]) for a strategy that
also allocates the step's b * G rollouts among its prompts (``knapsack``; it ``needs`` the group size
G). ``uniform`` with no pool (pool size 0) is the plain stream of the
task: every step takes the next ``b`` problems.

DAPO's dynamic sampling is not a selection rule but a filter on scored groups; it is
:func:`informative_groups` here and the trainer's ``sampling.dynamic_sampling`` switch.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from rlvr.registry import Registry

__all__ = [
    "GROUP_FILTERS",
    "SAMPLERS",
    "PromptStats",
    "informative_groups",
    "knapsack_allocation",
    "knapsack_value",
    "mixture_history",
]

SAMPLERS = Registry("sampler")
GROUP_FILTERS = Registry("group filter")
"""Filters of freshly generated groups, chosen by ``sampling.filters``: ``fn(rewards [B, G], *,
**needs) -> keep [B]`` (numpy bool). A filter declares the inputs it needs beyond the rewards (the
trainer supplies ``correct`` [B, G] 0/1, ``lengths`` [B, G] completion tokens, ``truncated`` [B, G]
bool: the completion hit ``max_len`` = rollout.max_new_tokens). Dropped groups are re-sampled as
dynamic sampling's are (``sampling.max_rounds``)."""


class PromptStats:
    """Per-prompt statistics of a pool of ``size`` prompts, one shared tracker for all strategies.

    Each prompt keeps its history of observations ``(step, successes, attempts, mean |advantage|)``;
    :meth:`counts` sums it with an optional exponential decay, so strategies that discount old
    evidence (VADE) and those that do not read the same record. ``category`` holds an optional label
    per prompt (for example its reasoning-gym task or difficulty) for category-level strategies.
    """

    def __init__(self, size: int, categories: Sequence[str] | None = None) -> None:
        self.size = int(size)
        self.history: list[list[tuple[int, float, int, float]]] = [[] for _ in range(self.size)]
        # every observation, for vectorised sums: (prompt, step, successes, attempts); each prompt's
        # in its history's order, so that its sums add up in the same order as a loop over it
        self._flat = np.zeros((64, 4))  # [capacity, 4], rows [0, _n) used
        self._n = 0
        self.categories = list(categories) if categories is not None else [""] * self.size
        if len(self.categories) != self.size:
            raise ValueError(f"{len(self.categories)} categories for a pool of {self.size} prompts")

    def update(
        self, index: int, *, step: int, successes: float, attempts: int, abs_adv: float = 0.0
    ) -> None:
        """Record one rolled-out group of prompt ``index`` at ``step``."""
        self.history[index].append((int(step), float(successes), int(attempts), float(abs_adv)))
        self._record(index, step, successes, attempts)

    def _record(self, index: int, step: int, successes: float, attempts: int) -> None:
        if self._n == len(self._flat):  # double the capacity: amortised O(1) per observation
            self._flat = np.concatenate([self._flat, np.zeros_like(self._flat)])
        self._flat[self._n] = (index, step, successes, attempts)
        self._n += 1

    def seen(self) -> np.ndarray:
        """Times each prompt was rolled out (groups) [P]."""
        return np.array([len(h) for h in self.history], dtype=np.int64)

    def last_step(self) -> np.ndarray:
        """Step of each prompt's latest observation, -1 if never seen [P]."""
        return np.array([h[-1][0] if h else -1 for h in self.history], dtype=np.int64)

    def counts(self, step: int, decay: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """Decayed (successes, attempts) per prompt [P] each:

        S_i = sum_obs decay^(step - t_obs) * s_obs,   A_i = sum_obs decay^(step - t_obs) * a_obs
        """
        obs = self._flat[: self._n]  # [O, 4]
        idx = obs[:, 0].astype(np.int64)  # [O]
        w = np.power(decay, np.maximum(step - obs[:, 1], 0.0))  # [O]
        s = np.bincount(idx, weights=w * obs[:, 2], minlength=self.size)  # [P]
        a = np.bincount(idx, weights=w * obs[:, 3], minlength=self.size)  # [P]
        return s, a

    def success_rate(self, *, prior_a: float = 1.0, prior_b: float = 1.0, step: int = 0) -> np.ndarray:
        """Posterior mean success rate (S + prior_a) / (A + prior_a + prior_b) per prompt [P]."""
        s, a = self.counts(step)
        return (s + prior_a) / (a + prior_a + prior_b)

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": [[list(o) for o in h] for h in self.history],
            "categories": list(self.categories),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["history"]) != self.size:
            raise ValueError(
                f"checkpoint has statistics of {len(state['history'])} prompts, the pool has {self.size}"
            )
        self.history = [
            [(int(t), float(s), int(a), float(v)) for t, s, a, v in h] for h in state["history"]
        ]
        self.categories = list(state["categories"])
        self._n = 0
        for i, h in enumerate(self.history):  # a prompt's sums depend only on its own order
            for t, succ, att, _ in h:
                self._record(i, t, succ, att)


def _check_b(stats: PromptStats, b: int) -> None:
    if b > stats.size:
        raise ValueError(f"cannot pick {b} distinct prompts from a pool of {stats.size}")


@SAMPLERS.register("uniform")
def uniform(stats: PromptStats, b: int, step: int, rng: np.random.Generator) -> np.ndarray:
    """``b`` distinct prompts drawn uniformly at random from the pool (the standard sampler)."""
    _check_b(stats, b)
    return rng.choice(stats.size, size=b, replace=False)


@SAMPLERS.register(
    "vade",
    bounds={"prior_a": "> 0", "prior_b": "> 0", "decay": "(0, 1]"},
)
def vade(
    stats: PromptStats,
    b: int,
    step: int,
    rng: np.random.Generator,
    *,
    prior_a: float = 1.0,
    prior_b: float = 1.0,
    decay: float = 0.95,
) -> np.ndarray:
    """VADE ("VADE: Variance-Aware Dynamic Sampling via Online Sample-Level Difficulty Estimation for
    Multimodal RL").

    Each prompt's correctness probability has a Beta posterior whose evidence decays with age:

        alpha_i = prior_a + S_i,   beta_i = prior_b + (A_i - S_i),
        S_i, A_i = sum over observations of decay^(step - t) * (successes, attempts)

    Thompson sampling: draw theta_i ~ Beta(alpha_i, beta_i) and pick the ``b`` prompts with the largest
    theta_i (1 - theta_i), the reward variance of a group (0 for prompts always or never solved, which
    give GRPO no gradient). The decay is the abstract's prior decay: old evidence fades as the policy
    changes, so the posterior returns toward the prior (our reading: one exponential scale per step
    since each observation; the prior itself is the second scale).
    """
    _check_b(stats, b)
    s, a = stats.counts(step, decay)
    theta = rng.beta(prior_a + s, prior_b + (a - s))  # [P]
    info = theta * (1.0 - theta)  # [P]
    return np.argsort(-info, kind="stable")[:b]


@SAMPLERS.register(
    "difficulty_targeted",
    bounds={"target": "(0, 1)", "prior_a": "> 0", "prior_b": "> 0", "temperature": ">= 0"},
)
def difficulty_targeted(
    stats: PromptStats,
    b: int,
    step: int,
    rng: np.random.Generator,
    *,
    target: float = 0.5,
    prior_a: float = 1.0,
    prior_b: float = 1.0,
    temperature: float = 0.05,
) -> np.ndarray:
    """Difficulty-targeted online data selection ("Improving Data Efficiency for LLM Reinforcement
    Fine-tuning Through Difficulty-targeted Online Data Selection and Rollout Replay"; the paper's
    attention-based estimator for unseen prompts is not built): prefer prompts whose predicted
    success is near ``target`` (0.5 gives the largest group variance).

        p_i = (S_i + prior_a) / (A_i + prior_a + prior_b)          (posterior mean, no decay)
        P(pick i) ∝ exp(-|p_i - target| / temperature)             (without replacement)

    ``temperature`` = 0 picks the ``b`` closest deterministically (ties broken at random). Unseen
    prompts have p_i = prior_a / (prior_a + prior_b) (0.5 by default), so they are tried early.
    """
    _check_b(stats, b)
    p = stats.success_rate(prior_a=prior_a, prior_b=prior_b, step=step)  # [P]
    dist = np.abs(p - target)  # [P]
    if temperature == 0:
        tie = rng.random(stats.size)  # [P]
        return np.lexsort((tie, dist))[:b]
    logits = -dist / temperature  # [P]
    w = np.exp(logits - logits.max())  # [P]
    return rng.choice(stats.size, size=b, replace=False, p=w / w.sum())


@SAMPLERS.register(
    "curriculum",
    bounds={"start": "(0, 1]", "ramp_steps": ">= 1", "prior_a": "> 0", "prior_b": "> 0"},
)
def curriculum(
    stats: PromptStats,
    b: int,
    step: int,
    rng: np.random.Generator,
    *,
    start: float = 0.25,
    ramp_steps: int = 1000,
    prior_a: float = 1.0,
    prior_b: float = 1.0,
) -> np.ndarray:
    """A standard easy-to-hard curriculum: rank the pool from easiest to hardest by predicted success
    rate (posterior mean, as in ``difficulty_targeted``; unseen prompts in the middle, ties at
    random) and draw uniformly from the easiest fraction

        f(step) = min(1, start + (1 - start) * step / ramp_steps)

    of the pool (at least ``b`` prompts). The ranking is re-estimated every step, so prompts the
    policy has learned move toward the easy end and harder ones enter as f grows.
    """
    _check_b(stats, b)
    p = stats.success_rate(prior_a=prior_a, prior_b=prior_b, step=step)  # [P]
    order = np.lexsort((rng.random(stats.size), -p))  # [P] easiest first
    frac = min(1.0, start + (1.0 - start) * step / ramp_steps)
    eligible = order[: max(b, math.ceil(frac * stats.size))]
    return rng.choice(eligible, size=b, replace=False)


@SAMPLERS.register("sec", bounds={"lr": "(0, 1]", "temperature": "> 0"})
def sec(
    stats: PromptStats,
    b: int,
    step: int,
    rng: np.random.Generator,
    *,
    lr: float = 0.5,
    temperature: float = 0.2,
) -> np.ndarray:
    """Self-Evolving Curriculum ("Self-Evolving Curriculum for LLM Reasoning"): a non-stationary
    bandit over prompt categories.

    Every category c (``stats.categories``: a task of a mixture, a difficulty level, ...) has a value
    Q_c, learned by TD(0) from the gain it gave: at every past step t that trained prompts of c, with
    r_{c,t} the mean absolute advantage of those prompts,

        Q_c <- (1 - lr) Q_c + lr * r_{c,t}        (Q_c = 0 before the first), in step order
        P(c) = softmax(Q / temperature)

    Each of the ``b`` picks draws a category from P and a not-yet-picked prompt of it uniformly.
    Q is recomputed from the shared history, so the strategy keeps no state of its own.
    """
    _check_b(stats, b)
    cats = sorted(set(stats.categories))
    q = np.array([_category_value(stats, c, lr) for c in cats])  # [C]
    members = {c: [i for i in range(stats.size) if stats.categories[i] == c] for c in cats}
    picked: list[int] = []
    taken: set[int] = set()
    while len(picked) < b:
        open_cats = [k for k, c in enumerate(cats) if any(i not in taken for i in members[c])]
        logits = q[open_cats] / temperature  # [C']
        w = np.exp(logits - logits.max())  # [C']
        c = cats[open_cats[rng.choice(len(open_cats), p=w / w.sum())]]
        free = [i for i in members[c] if i not in taken]
        i = int(free[rng.integers(len(free))])
        taken.add(i)
        picked.append(i)
    return np.array(picked)


def _category_value(stats: PromptStats, category: str, lr: float) -> float:
    """SEC's TD(0) value of a category from the history of its prompts (see :func:`sec`)."""
    by_step: dict[int, list[float]] = {}
    for i, h in enumerate(stats.history):
        if stats.categories[i] == category:
            for t, _, _, abs_adv in h:
                by_step.setdefault(t, []).append(abs_adv)
    q = 0.0
    for t in sorted(by_step):
        q = (1 - lr) * q + lr * float(np.mean(by_step[t]))
    return q


def mixture_history(stats: PromptStats) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The categories, and per pair of consecutive observed steps (t, t') the mixture of step t and
    the reward gain after it: (cats [C], x [S, C], y [S]) with

        x_t[c] = groups of category c at step t / groups at step t
        y_t    = mean over the categories c observed at both t and t' of (s_{c,t'} - s_{c,t}),
                 s_{c,t} = successes / attempts of c's groups at step t

    (pairs with no category in common are left out). Measuring the gain within each category keeps
    it from reflecting only which categories, easier or harder, the next step drew."""
    cats = sorted(set(stats.categories))
    col = {c: k for k, c in enumerate(cats)}
    groups: dict[int, np.ndarray] = {}
    succ: dict[int, np.ndarray] = {}
    att: dict[int, np.ndarray] = {}
    for i, h in enumerate(stats.history):
        k = col[stats.categories[i]]
        for t, s, a, _ in h:
            for table in (groups, succ, att):
                table.setdefault(t, np.zeros(len(cats)))
            groups[t][k] += 1
            succ[t][k] += s
            att[t][k] += a
    steps = sorted(groups)
    xs, ys = [], []
    for t, nxt in itertools.pairwise(steps):
        both = (att[t] > 0) & (att[nxt] > 0)  # [C]
        if not both.any():
            continue
        rate_t, rate_n = succ[t][both] / att[t][both], succ[nxt][both] / att[nxt][both]
        xs.append(groups[t] / groups[t].sum())
        ys.append(float(np.mean(rate_n - rate_t)))
    x = np.array(xs).reshape(-1, len(cats))  # [S, C]
    return cats, x, np.array(ys)  # [S]


@SAMPLERS.register("mixture_fit", bounds={"temperature": "> 0", "ridge": "> 0", "floor": "[0, 1]"})
def mixture_fit(
    stats: PromptStats,
    b: int,
    step: int,
    rng: np.random.Generator,
    *,
    temperature: float = 0.05,
    ridge: float = 1.0,
    floor: float = 0.1,
) -> np.ndarray:
    """A task mixture fitted to the reward gain it predicts (after MoDoMoDo, "MoDoMoDo: Multi-Domain
    Data Mixtures for Multimodal LLM Reinforcement Learning"): a linear predictor of the gain from
    the mixture weights, fitted online, and the weights moved toward its best.

    From the shared history (:func:`mixture_history`: the mixture x_t [C] of every past step and the
    reward gain y_t after it), ridge regression gives each category's predicted gain per unit of
    weight,

        theta = (X^T X + ridge * I)^{-1} X^T y                          [C]
        w     = floor / C + (1 - floor) * softmax(theta / temperature)   [C]

    and each of the ``b`` picks draws a category from w (renormalised over the categories with
    prompts left) and a not-yet-picked prompt of it uniformly. The best mixture of a linear
    predictor is its best category; the softmax moves the weights toward it by how much better it
    is predicted to be, and ``floor`` keeps every category sampled (so that the fit keeps seeing
    them). With no history theta = 0 and w is uniform over categories; floor = 1 is always uniform.
    The abstract names the predict-then-optimise strategy without formulas: this online, linear
    form is rlvr's (MoDoMoDo fits the outcome of whole training runs, across runs, with a richer
    model of the domains' interactions).
    """
    _check_b(stats, b)
    cats, x, y = mixture_history(stats)
    c = len(cats)
    theta = np.zeros(c)  # [C]
    if len(y):
        theta = np.linalg.solve(x.T @ x + ridge * np.eye(c), x.T @ y)
    z = theta / temperature
    soft = np.exp(z - z.max())  # [C]
    w = floor / c + (1.0 - floor) * soft / soft.sum()  # [C]
    members = [[i for i in range(stats.size) if stats.categories[i] == cat] for cat in cats]
    picked: list[int] = []
    taken: set[int] = set()
    while len(picked) < b:
        open_cats = [k for k in range(c) if any(i not in taken for i in members[k])]
        p = w[open_cats] / w[open_cats].sum()  # [C']
        k = open_cats[rng.choice(len(open_cats), p=p)]
        free = [i for i in members[k] if i not in taken]
        i = int(free[rng.integers(len(free))])
        taken.add(i)
        picked.append(i)
    return np.array(picked)


def knapsack_value(n: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Knapsack RL's value of giving ``n`` rollouts to a prompt of success rate ``p`` (elementwise):

        Value(n, p) = (1 - p^n - (1 - p)^n) * p (1 - p)^2

    the probability that a group of n samples is not all-equal (a non-zero GRPO gradient) times the
    paper's approximate information gain p (1 - p)^2."""
    n, p = np.asarray(n, dtype=float), np.asarray(p, dtype=float)
    return (1.0 - p**n - (1.0 - p) ** n) * p * (1.0 - p) ** 2


def knapsack_allocation(
    p: np.ndarray, budget: int, *, min_rollouts: int, max_rollouts: int
) -> np.ndarray:
    """Rollouts per prompt [b] maximising sum_i Value(n_i, p_i) subject to sum_i n_i = budget and
    min_rollouts <= n_i <= max_rollouts.

    Value(n, p) is concave in n (its increment p^n (1 - p) + (1 - p)^n p shrinks as n grows), so
    handing out the budget one rollout at a time to the largest increment is optimal (the greedy
    solution of a separable concave knapsack). Ties go to the lower index.
    """
    p = np.asarray(p, dtype=float)
    b = len(p)
    if not b * min_rollouts <= budget <= b * max_rollouts:
        raise ValueError(
            f"a budget of {budget} rollouts cannot give {b} prompts between {min_rollouts} and "
            f"{max_rollouts} each"
        )
    n = np.full(b, min_rollouts, dtype=np.int64)  # [b]
    for _ in range(budget - b * min_rollouts):
        gain = knapsack_value(n + 1, p) - knapsack_value(n, p)  # [b]
        gain[n >= max_rollouts] = -np.inf
        n[int(np.argmax(gain))] += 1
    return n


@SAMPLERS.register(
    "knapsack",
    needs={"group_size"},
    bounds={"min_rollouts": ">= 1", "max_rollouts": ">= 1", "prior_a": "> 0", "prior_b": "> 0"},
)
def knapsack(
    stats: PromptStats,
    b: int,
    step: int,
    rng: np.random.Generator,
    *,
    group_size: int,
    min_rollouts: int = 2,
    max_rollouts: int = 32,
    prior_a: float = 1.0,
    prior_b: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Knapsack RL ("Knapsack RL: Unlocking Exploration of LLMs via Optimizing Budget Allocation"):
    ``b`` prompts drawn uniformly, and the step's b * G rollouts allocated among them
    by :func:`knapsack_allocation` with each prompt's posterior-mean success rate

        p_i = (S_i + prior_a) / (A_i + prior_a + prior_b)

    (unseen prompts: prior_a / (prior_a + prior_b)). Easy and hopeless prompts get ``min_rollouts``;
    the budget moves to prompts whose groups are likely to be mixed. Returns (indices [b], rollouts
    per prompt [b]); the trainer then samples a group of that size for each prompt.
    """
    _check_b(stats, b)
    if not min_rollouts <= group_size <= max_rollouts:
        raise ValueError(
            f"knapsack needs min_rollouts ({min_rollouts}) <= samples_per_prompt ({group_size}) "
            f"<= max_rollouts ({max_rollouts})"
        )
    idx = rng.choice(stats.size, size=b, replace=False)  # [b]
    p = stats.success_rate(prior_a=prior_a, prior_b=prior_b, step=step)[idx]  # [b]
    return idx, knapsack_allocation(
        p, b * group_size, min_rollouts=min_rollouts, max_rollouts=max_rollouts
    )


def informative_groups(rewards: np.ndarray, *, atol: float = 0.0) -> np.ndarray:
    """DAPO dynamic sampling's filter: True for groups whose rewards are not all equal.

    ``rewards`` [B, G] -> keep [B]: max_g r - min_g r > atol. A group with one reward for every sample
    has zero advantage under any group-relative estimator and gives no gradient.
    """
    rewards = np.asarray(rewards, dtype=float)
    if rewards.ndim != 2:
        raise ValueError(f"rewards must have shape [B, G], got {rewards.shape}")
    return (rewards.max(axis=1) - rewards.min(axis=1)) > atol


@GROUP_FILTERS.register("informative")
def informative(rewards: np.ndarray) -> np.ndarray:
    """DAPO's dynamic sampling ("DAPO: An Open-Source LLM Reinforcement Learning System at Scale") as
    a group filter (``sampling.dynamic_sampling = true`` is this one):
    keep [B] the groups whose rewards are not all equal."""
    return informative_groups(rewards)
