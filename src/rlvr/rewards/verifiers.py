"""Answer extraction, format check and the reasoning-gym task verifier."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

import reasoning_gym

from rlvr.registry import Registry

__all__ = [
    "REWARDS",
    "BatchedReward",
    "RewardFn",
    "extract_answer",
    "format_reward",
    "make_task_reward",
]

RewardFn = Callable[..., float]


@functools.cache
def _score_answer_fn(source: str) -> Callable[..., float]:
    """reasoning-gym's ``score_answer`` of the task ``source``, built once per process.

    ``reasoning_gym.get_score_answer_fn`` builds the task's dataset with its default config at every
    call (17 us for chain_sum, more for tasks that load word lists): once per sample, that was most of
    the scoring time of a step.
    """
    return reasoning_gym.get_score_answer_fn(source)


class BatchedReward:
    """Base class of a reward that scores a whole step at once (reward models, group statistics).

    A factory in :data:`REWARDS` returns either a plain per-sample function
    ``fn(prompt, completion, answer, **meta) -> float`` or an instance of a subclass of this class,
    which the trainer calls once per step with the N = B*G samples in order (sample i belongs to
    prompt ``i // group_size``)::

        fn(prompts, completions, answers, metas, *, group_size, policy=None) -> list[float]  # N

    ``policy`` is ``(model, tokenizer)`` of the current policy when the subclass sets
    ``needs_policy = True``, else None. A score may be ``None``: that sample could not be scored and
    the runner gives it ``scoring.failure_score``, counted as a failure of the component
    (``reward_failures/NAME``); the reward may say why in ``failure_reasons`` ({sample index: text},
    set by its last call). Batched rewards run in the trainer's process (they may hold a
    model on the GPU); per-sample functions may run in a process pool.
    """

    batched = True
    needs_policy = False
    failure_reasons: dict[int, str] = {}  # noqa: RUF012 - read only; a call sets its own dict

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
        raise NotImplementedError


REWARDS = Registry("reward")

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_FORMAT = re.compile(r"^\s*<answer>[^<>]*</answer>\s*$", re.DOTALL)


def extract_answer(completion: str) -> str | None:
    """The text inside the last ``<answer>...</answer>`` of a completion, stripped; None if absent."""
    found = _ANSWER.findall(completion)
    return found[-1].strip() if found else None


def format_reward(prompt: str, completion: str, answer: str, **meta: Any) -> float:
    """1.0 when the completion is exactly one ``<answer>...</answer>`` block, else 0.0."""
    return 1.0 if _FORMAT.match(completion) else 0.0


@REWARDS.register("format")
def make_format_reward() -> RewardFn:
    """Factory for :func:`format_reward`: the answer-tag half of the standard format reward of
    "DeepSeek-R1: Incentivizing Reasoning Capability in LLMs via Reinforcement Learning"."""
    return format_reward


@REWARDS.register("answer")
def make_task_reward(*, partial_credit: bool = False) -> RewardFn:
    """Factory for the reasoning-gym verifier of the problem's own task (the standard rule-based
    outcome reward of RLVR).

    The extracted answer is scored by the task's ``score_answer``. Scoring is strict by default:
    1.0 only for full credit, else 0.0 (some tasks, such as ``chain_sum``, give partial credit when the
    right number appears inside a longer output, which a policy learns to exploit). With
    ``partial_credit=True`` the task's score is returned as it is.
    """

    def task_reward(prompt: str, completion: str, answer: str, **meta: Any) -> float:
        extracted = extract_answer(completion)
        if extracted is None:
            return 0.0
        source = meta.get("source_dataset")
        if source is None:
            raise ValueError("answer reward: problem metadata has no 'source_dataset'")
        score = _score_answer_fn(source)(
            extracted, {"question": prompt, "answer": answer, "metadata": meta}
        )
        score = float(score)
        return score if partial_credit else (1.0 if score >= 1.0 else 0.0)

    return task_reward


@REWARDS.register("env")
def make_env_reward() -> RewardFn:
    """The return of a multi-turn episode (task.source = 'env'), the standard RL return: the sum of
    the environment's rewards,
    which the trainer puts in the sample's metadata as ``env_return``."""

    def env_return(prompt: str, completion: str, answer: str, **meta: Any) -> float:
        if "env_return" not in meta:
            raise ValueError("env reward: only multi-turn episodes (task.source = 'env') have a return")
        return float(meta["env_return"])

    return env_return


@REWARDS.register("env_success")
def make_env_success_reward() -> RewardFn:
    """1.0 when a multi-turn episode ended with the environment's ``info["success"]``, else 0.0 (the
    verifier of task.source = 'env'; the standard success indicator of agent benchmarks)."""

    def env_success(prompt: str, completion: str, answer: str, **meta: Any) -> float:
        if "env_success" not in meta:
            raise ValueError(
                "env_success reward: only multi-turn episodes (task.source = 'env') have an outcome"
            )
        return float(meta["env_success"])

    return env_success
