"""OmegaPRM's automated process supervision: Monte-Carlo rollouts from a solution's prefixes and a
binary search for its first wrong step ("Improve Mathematical Reasoning in Language Models by
Automated Process Supervision").

A prefix of a solution (its first j + 1 steps) is judged by k rollouts: continuations sampled from
it, each checked by the outcome verifier. Its Monte-Carlo estimate is

    c_j = (1/k) sum_{r=1..k} 1[rollout r from prefix_j reaches a correct answer]

and the first wrong step is the first j with c_j = 0. Assuming that a prefix with a wrong step
cannot be completed correctly (c is 0 from the first error on), a binary search finds it with
ceil(log2(K + 1)) checks instead of K::

    lo, hi = 0, K                 (hi = K - 1 when the whole solution is known wrong: c_{K-1} = 0)
    while lo < hi:  mid = (lo + hi) // 2;  c_mid > 0 ? lo = mid + 1 : hi = mid
    first error = lo              (K: none found)

Each step gets the label 1 (its prefix can still succeed) before the first error and 0 (it cannot)
from the first error on: under the search's assumption a later prefix has c = 0 too. A solution that
the verifier accepts is all 1 without a rollout. :func:`first_error_search` labels one solution
with a ``rollout(prefix) -> correct?`` callable; :func:`first_error_search_many` runs many searches
in lock step, asking for the rollouts of all the prefixes checked in one round at once (one
``generate`` call in training).

Registered here: ``omega_steps``, the step reward that runs the search during training with the
policy's sampler (:class:`OmegaSteps`). rlvr's simplification of the paper: the paper builds a
tree of rollouts (MCTS, reusing rollouts across searches and selecting them by a PRM-free UCT rule)
to collect PRM training data; here each completion of the batch gets its own binary search, its
labels are its step rewards (read by ``credit = "pure_min"``), and no PRM is trained on them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rlvr.rewards.steps import StepReward, split_steps, worst_step
from rlvr.rewards.verifiers import REWARDS

if TYPE_CHECKING:
    import torch

__all__ = ["OmegaSteps", "StepSearch", "first_error_search", "first_error_search_many"]


@dataclass
class StepSearch:
    """The result of one search: ``labels[j]`` 1.0 / 0.0 per step (its prefix can / cannot still
    succeed), ``first_error`` (the index of the first wrong step, None when every step is right),
    ``mc`` {step index: c_j} for the prefixes that were rolled out, ``rollouts`` used."""

    labels: list[float]
    first_error: int | None
    mc: dict[int, float] = field(default_factory=dict)
    rollouts: int = 0


def first_error_search_many(
    num_steps: Sequence[int],
    rollouts: Callable[[list[tuple[int, int]], int], list[int]],
    *,
    k: int,
    outcomes: Sequence[bool | None] | None = None,
) -> list[StepSearch]:
    """Binary searches for the first wrong step of several solutions at once (the module docstring).

    ``num_steps[i]`` is K_i, the steps of solution i; ``outcomes[i]`` whether the whole solution is
    correct (True: all labels 1, no rollout; False: the search skips its last prefix, known 0; None:
    unknown, the last prefix is rolled out like the others). ``rollouts(queries, k)`` gets the
    round's queries, (solution i, step j) pairs meaning "the prefix of solution i ending at step j",
    and returns for each the number of its k rollouts that succeeded (0..k). Rounds go on until every
    search is done: at most ceil(log2(K + 1)) rounds, each query costing k rollouts.
    """
    if k < 1:
        raise ValueError(f"first_error_search: k must be >= 1, got {k}")
    outcomes = [None] * len(num_steps) if outcomes is None else list(outcomes)
    if len(outcomes) != len(num_steps):
        raise ValueError(
            f"first_error_search: {len(num_steps)} solutions and {len(outcomes)} outcomes; expected "
            "one outcome per solution"
        )
    lo, hi = [], []  # the first error lies in [lo, hi]; hi = K means "none so far"
    for n, out in zip(num_steps, outcomes, strict=True):
        if n < 0:
            raise ValueError(f"first_error_search: a solution has {n} steps, expected >= 0")
        lo.append(n if out else 0)  # a correct solution: nothing to search
        hi.append(max(n - 1, 0) if out is False else n)
    mc: list[dict[int, float]] = [{} for _ in num_steps]
    used = [0] * len(num_steps)
    while True:
        queries = [(i, (lo[i] + hi[i]) // 2) for i in range(len(num_steps)) if lo[i] < hi[i]]
        if not queries:
            break
        wins = rollouts(queries, k)
        if len(wins) != len(queries):
            raise ValueError(
                f"first_error_search: rollouts returned {len(wins)} counts for {len(queries)} queries"
            )
        for (i, mid), w in zip(queries, wins, strict=True):
            if not 0 <= int(w) <= k:
                raise ValueError(f"first_error_search: {w} successes out of k = {k} rollouts")
            mc[i][mid] = int(w) / k
            used[i] += k
            if w > 0:
                lo[i] = mid + 1
            else:
                hi[i] = mid
    out = []
    for i, n in enumerate(num_steps):
        first = lo[i] if lo[i] < n else None
        labels = [1.0 if first is None or j < first else 0.0 for j in range(n)]
        out.append(StepSearch(labels, first, mc[i], used[i]))
    return out


def first_error_search(
    prefixes: Sequence[str],
    rollout: Callable[[str], bool],
    *,
    k: int,
    outcome: bool | None = None,
) -> StepSearch:
    """OmegaPRM's binary search on one solution: ``prefixes[j]`` is the text up to the end of step j
    (:func:`~rlvr.rewards.steps.split_steps`), ``rollout(prefix)`` samples one continuation and says
    whether it reaches a correct answer (called k times per checked prefix, in order). ``outcome``:
    whether the whole solution is correct, if known (:func:`first_error_search_many`)."""

    def count(queries: list[tuple[int, int]], k: int) -> list[int]:
        return [sum(bool(rollout(prefixes[j])) for _ in range(k)) for _, j in queries]

    return first_error_search_many([len(prefixes)], count, k=k, outcomes=[outcome])[0]


class OmegaSteps(StepReward):
    """``omega_steps``: each completion's steps labelled by :func:`first_error_search_many` with the
    policy's own rollouts, step score ``right`` before the first wrong step and ``wrong`` from it on;
    as an outcome reward, the worst step (``wrong`` for a completion with a wrong step, 0 without
    steps).

    Rollouts: the prefix of a completion is appended to its chat prompt (``format_prompt``, as the
    trainer samples) and k continuations of at most ``max_new_tokens`` tokens are sampled by
    :func:`~rlvr.rollout.sampler.generate` (all the round's prefixes in one call, at
    ``temperature``, from a generator seeded with ``seed`` and the call's count); prefix +
    continuation is checked by the per-sample reward ``verifier`` (built with its default knobs):
    a score > 0 is a success. The completion itself is checked first: one the verifier accepts is
    all ``right`` without a rollout, one it rejects skips its last prefix. The step scores are those
    of the outcome call (the trainer scores the outcome first), cached for ``step_rewards``; a call
    on other rows reuses the outcome calls' answers, metadata and policy.
    """

    needs_policy = True

    def __init__(
        self,
        *,
        delimiter: str = "\n",
        k: int = 4,
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        verifier: str = "math",
        right: float = 1.0,
        wrong: float = -1.0,
        seed: int = 0,
    ) -> None:
        if not delimiter:
            raise ValueError("omega_steps: the knob 'delimiter' must not be empty")
        if k < 1 or max_new_tokens < 1:
            raise ValueError("omega_steps: the knobs 'k' and 'max_new_tokens' must be >= 1")
        if temperature < 0:
            raise ValueError(f"omega_steps: the knob 'temperature' must be >= 0, got {temperature}")
        if right == 0 or wrong == 0:
            raise ValueError(
                "omega_steps: 'right' and 'wrong' must be nonzero (a 0 step reward reads as no step)"
            )
        if verifier not in REWARDS:
            raise ValueError(f"omega_steps: the knob 'verifier' names no reward: {verifier!r}")
        check = REWARDS[verifier]()
        if getattr(check, "batched", False):
            raise ValueError(
                f"omega_steps: the knob 'verifier' must name a per-sample reward (math, exact_match, "
                f"answer, ...), got the batched reward {verifier!r}"
            )
        self.delimiter, self.k, self.max_new_tokens = delimiter, int(k), int(max_new_tokens)
        self.temperature, self.right, self.wrong = float(temperature), float(right), float(wrong)
        self.verifier_name, self.check, self.seed = verifier, check, int(seed)
        self._problems: dict[str, tuple[str, dict[str, Any]]] = {}  # prompt -> (answer, meta)
        self._policy: tuple[Any, Any] | None = None
        self._calls = 0
        self.searches: list[StepSearch] = []  # the last call's searches (rollouts used, c_j)

    def correct(self, prompt: str, text: str) -> bool:
        answer, meta = self._problems[prompt]
        return float(self.check(prompt, text, answer, **meta)) > 0

    def search(
        self, prompts: Sequence[str], completions: Sequence[str], policy: tuple[Any, Any] | None
    ) -> list[StepSearch]:
        """The binary search of every completion, its rollouts sampled from ``policy``."""
        import torch

        from rlvr.data.prompts import format_prompt
        from rlvr.rollout.sampler import generate

        if policy is None:
            raise ValueError(
                "omega_steps rolls out with the policy, but no policy was passed (call it with "
                "policy=(model, tokenizer))"
            )
        missing = sorted({p for p in prompts if p not in self._problems})
        if missing:
            raise ValueError(
                f"omega_steps: no reference answer for the prompt {missing[0][:200]!r}; the step "
                "scores read the answers of the outcome call (call the reward with the answers first)"
            )
        model, tok = policy
        steps = [split_steps(c, self.delimiter) for c in completions]
        outcomes = [
            self.correct(p, c) if s else None
            for p, c, s in zip(prompts, completions, steps, strict=True)
        ]
        device = next(model.parameters()).device
        gen = torch.Generator(device=device).manual_seed(self.seed + self._calls)
        self._calls += 1

        def rollouts(queries: list[tuple[int, int]], k: int) -> list[int]:
            heads = [format_prompt(tok, prompts[i]) + steps[i][j] for i, j in queries]
            ids = tok(heads, add_special_tokens=False)["input_ids"]
            was_training = model.training
            model.eval()
            try:
                roll = generate(
                    model,
                    ids,
                    num_samples=k,
                    max_new_tokens=self.max_new_tokens,
                    eos_id=tok.eos_token_id,
                    pad_id=tok.pad_token_id,
                    temperature=self.temperature,
                    generator=gen,
                )
            finally:
                model.train(was_training)
            rows, lengths = roll.completion_ids.tolist(), roll.lengths.tolist()
            wins = []
            for q, (i, j) in enumerate(queries):
                texts = [
                    tok.decode(rows[q * k + r][: lengths[q * k + r]], skip_special_tokens=True)
                    for r in range(k)
                ]
                wins.append(sum(self.correct(prompts[i], steps[i][j] + t) for t in texts))
            return wins

        return first_error_search_many([len(s) for s in steps], rollouts, k=self.k, outcomes=outcomes)

    def _scores(self, found: list[StepSearch]) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        s = max((len(f.labels) for f in found), default=0)
        scores = torch.zeros((len(found), s))  # [N, S]
        mask = torch.zeros((len(found), s))  # [N, S]
        for i, f in enumerate(found):
            for j, label in enumerate(f.labels):
                scores[i, j] = self.right if label > 0 else self.wrong
                mask[i, j] = 1.0
        return scores, mask

    def score_steps(
        self, prompts: Sequence[str], completions: Sequence[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.searches = self.search(prompts, completions, self._policy)
        return self._scores(self.searches)

    def __call__(
        self,
        prompts: list[str],
        completions: list[str],
        answers: list[str],
        metas: list[dict[str, Any]],
        *,
        group_size: int,
        policy: tuple[Any, Any] | None = None,
    ) -> list[float]:
        if not len(prompts) == len(completions) == len(answers) == len(metas):
            raise ValueError(
                f"omega_steps: {len(prompts)} prompts, {len(completions)} completions, "
                f"{len(answers)} answers and {len(metas)} metas; expected as many of each"
            )
        self._problems.update(
            (p, (a, dict(m or {}))) for p, a, m in zip(prompts, answers, metas, strict=True)
        )
        self._policy = policy  # kept: a later step_rewards call on other rows rolls out with it
        self.searches = self.search(prompts, completions, policy)
        scores, mask = self._scores(self.searches)
        self._last = ((tuple(prompts), tuple(completions)), scores, mask)  # step_rewards' cache
        return worst_step(scores, mask)


@REWARDS.register(
    "omega_steps",
    bounds={"k": ">= 1", "max_new_tokens": ">= 1", "temperature": ">= 0"},
)
def make_omega_steps(
    *,
    delimiter: str = "\n",
    k: int = 4,
    max_new_tokens: int = 256,
    temperature: float = 1.0,
    verifier: str = "math",
    right: float = 1.0,
    wrong: float = -1.0,
    seed: int = 0,
) -> OmegaSteps:
    """OmegaPRM's automated process labels as a step reward (:class:`OmegaSteps`, "Improve
    Mathematical Reasoning in Language Models by Automated Process Supervision"): the first wrong
    step of each completion (steps split by ``delimiter``) found by a binary search over its
    prefixes, each judged by ``k`` policy rollouts of ``max_new_tokens`` tokens checked by
    ``verifier`` (c_j = 0: wrong); steps before it score ``right``, the others ``wrong``. Give it
    weight 0 to use it for token-level credit only (``credit = "pure_min"``)."""
    return OmegaSteps(
        delimiter=delimiter,
        k=k,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        verifier=verifier,
        right=right,
        wrong=wrong,
        seed=seed,
    )
