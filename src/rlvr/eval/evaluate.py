"""Sample n completions per held-out problem and report pass@k for every power of two k <= n."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rlvr.data.prompts import format_prompt
from rlvr.data.tasks import Problem
from rlvr.eval.passk import bootstrap_ci, mean_pass_at_k
from rlvr.rollout.sampler import generate

__all__ = ["EvalResult", "evaluate", "summary_ks"]


def summary_ks(summary: dict[str, float]) -> list[int]:
    """The k values of the ``pass@k`` entries of a summary dict (as written by EvalResult.summary)."""
    return sorted(int(k.split("@")[1]) for k in summary if k.startswith("pass@") and "_ci" not in k)


@dataclass
class EvalResult:
    """pass@k (mean over problems) with a 95% bootstrap interval, per-problem correct counts."""

    n: int
    correct: list[int]  # per problem, out of n
    pass_at: dict[int, float]  # k -> mean pass@k
    ci: dict[int, tuple[float, float]]  # k -> (low, high)
    mean_length: float
    samples: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {"mean_length": self.mean_length}
        for k, v in self.pass_at.items():
            out[f"pass@{k}"] = v
            out[f"pass@{k}_ci_low"], out[f"pass@{k}_ci_high"] = self.ci[k]
        return out


def _score_chunk(reward_fn: Any, chunk: Sequence[Problem], texts: list[str], n: int) -> list[float]:
    """Scores of ``n`` completions per problem: a per-sample function, or a reward runner (its first
    component; failures count as incorrect)."""
    if hasattr(reward_fn, "score"):
        res = reward_fn.score(
            [p.question for p in chunk for _ in range(n)],
            texts,
            [p.answer for p in chunk for _ in range(n)],
            [p.meta for p in chunk for _ in range(n)],
            group_size=n,
        )
        return [row[0] for row in res.parts]
    return [
        reward_fn(chunk[i // n].question, t, chunk[i // n].answer, **chunk[i // n].meta)
        for i, t in enumerate(texts)
    ]


def evaluate(
    model: torch.nn.Module,
    tokenizer: Any,
    problems: Sequence[Problem],
    reward_fn: Callable[..., float] | Any,
    *,
    n: int = 8,
    max_new_tokens: int = 16,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_prompts: int = 64,
    seed: int = 0,
    keep_samples: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> EvalResult:
    """Sample ``n`` completions for each problem; a sample is correct when ``reward_fn`` gives 1.

    ``reward_fn`` is a per-sample function ``(prompt, completion, answer, **meta) -> float`` or a
    :class:`~rlvr.rewards.runner.RewardRunner` (its first component is the verifier).
    """
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    was_training = model.training
    model.eval()
    correct: list[int] = []
    lengths: list[float] = []
    samples: list[dict[str, Any]] = []
    for start in range(0, len(problems), batch_prompts):
        chunk = problems[start : start + batch_prompts]
        prompts = [format_prompt(tokenizer, p.question, messages=p.messages) for p in chunk]
        ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
        roll = generate(
            model,
            ids,
            num_samples=n,
            max_new_tokens=max_new_tokens,
            eos_id=tokenizer.eos_token_id,
            pad_id=tokenizer.pad_token_id,
            temperature=temperature,
            top_p=top_p,
            generator=gen,
        )
        texts = roll.texts(tokenizer)
        lengths.extend(roll.lengths.float().tolist())
        scores = _score_chunk(reward_fn, chunk, texts, n)  # [len(chunk) * n]
        for i, p in enumerate(chunk):
            ok = 0
            for j in range(n):
                r = scores[i * n + j]
                ok += int(r >= 1.0)
                if len(samples) < keep_samples and j == 0:
                    samples.append(
                        {
                            "question": p.question,
                            "answer": p.answer,
                            "completion": texts[i * n + j],
                            "reward": r,
                        }
                    )
            correct.append(ok)
        if on_batch is not None:
            on_batch(len(chunk))
    if was_training:
        model.train()
    ks = [2**i for i in range(int(np.log2(n)) + 1)]
    pass_at, ci = {}, {}
    for k in ks:
        per = mean_pass_at_k(correct, n, k)
        pass_at[k] = float(np.mean(per))
        ci[k] = bootstrap_ci(per, seed=seed)
    return EvalResult(
        n=n,
        correct=correct,
        pass_at=pass_at,
        ci=ci,
        mean_length=float(np.mean(lengths)),
        samples=samples,
    )
