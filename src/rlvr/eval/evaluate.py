"""Sample n completions per held-out problem and measure what the model can do with them.

For every power of two k <= n: unbiased pass@k and maj@k, each with a 95% bootstrap interval over
problems; and, over all n samples: mean response length, mean token entropy, and the mean number of
distinct final answers per problem.

Final answer of a completion (used by maj@k and the distinct-answer count, never by correctness):
the last ``<answer>...</answer>`` (:func:`~rlvr.rewards.verifiers.extract_answer`), else
:func:`~rlvr.rewards.math.extract_math_answer` in ``auto`` mode (last ``\\boxed{}``, else the last
number); whitespace collapsed; an empty or missing answer is no answer. Answers are compared as
strings ("12" and "12.0" are two answers). Correctness is always the verifier's score >= 1.

maj@k: :func:`~rlvr.eval.passk.majority_at_k` over the first k samples of each problem: the most
frequent final answer wins, ties broken by first occurrence, samples without an answer do not vote;
the problem is solved when the first sample carrying the voted answer is correct by the verifier.

Entropy: the sampler returns the log-prob of each sampled token under the distribution it sampled
from (softmax(logits / temperature)). Since E_{x ~ p}[-log p(x)] = H(p), the mean of -old_logp over
completion tokens is an unbiased estimate of the mean per-token entropy (token-weighted, over all
samples of all problems)::

    entropy = sum_{i,t} -old_logp[i,t] * mask[i,t] / sum_{i,t} mask[i,t]

When the rollout carries the exact per-token entropy (``Rollout.entropy``, from the logits), that is
used instead. With ``top_p < 1`` the tokens come from the nucleus, so the estimate is the nucleus
samples' mean surprisal under the full distribution; with ``temperature = 0`` it is not an entropy.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rlvr.data.prompts import format_prompt
from rlvr.data.tasks import Problem
from rlvr.eval.passk import (
    bootstrap_ci,
    distinct_answers,
    encode_answers,
    majority_at_k,
    mean_pass_at_k,
)
from rlvr.rewards.math import extract_math_answer
from rlvr.rewards.verifiers import extract_answer
from rlvr.rollout.sampler import generate

__all__ = ["EvalResult", "evaluate", "final_answer", "plan_batches", "summary_ks"]

_SPACE = re.compile(r"\s+")


def summary_ks(summary: dict[str, float]) -> list[int]:
    """The k values of the ``pass@k`` entries of a summary dict (as written by EvalResult.summary)."""
    return sorted(int(k.split("@")[1]) for k in summary if k.startswith("pass@") and "_ci" not in k)


def final_answer(completion: str) -> str | None:
    """The final answer of a completion for voting: answer tags, else boxed / last number; None if
    there is none (see the module docstring)."""
    found = extract_answer(completion)
    if not found:
        found = extract_math_answer(completion, mode="auto")
    if found is None:
        return None
    found = _SPACE.sub(" ", found).strip()
    return found or None


def _majority(answers: Sequence[str | None]) -> str | None:
    """The most frequent answer, ties broken by first occurrence (dicts keep insertion order and
    max returns the first maximum); None when no sample has an answer."""
    votes: dict[str, int] = {}
    for a in answers:
        if a is not None:
            votes[a] = votes.get(a, 0) + 1
    return max(votes, key=votes.__getitem__) if votes else None


@dataclass
class EvalResult:
    """Metrics of n samples on each of P problems (k over the powers of two <= n).

    pass_at / ci: mean unbiased pass@k with its 95% bootstrap interval; maj_at / maj_ci: the same for
    maj@k; correct: per problem, samples out of n the verifier accepted; distinct: per problem,
    distinct final answers among the n samples; voted: per problem, the majority answer of all n
    samples (None if no sample had one); mean_length: tokens per completion; length_correct /
    length_wrong: the same over the correct / the other samples (nan when there are none); entropy:
    mean token entropy in nats (see the module docstring).
    """

    n: int
    correct: list[int]  # [P], out of n
    pass_at: dict[int, float]  # k -> mean pass@k
    ci: dict[int, tuple[float, float]]  # k -> (low, high)
    mean_length: float
    samples: list[dict[str, Any]] = field(default_factory=list)
    maj_at: dict[int, float] = field(default_factory=dict)  # k -> mean maj@k
    maj_ci: dict[int, tuple[float, float]] = field(default_factory=dict)  # k -> (low, high)
    distinct: list[int] = field(default_factory=list)  # [P]
    voted: list[str | None] = field(default_factory=list)  # [P]
    entropy: float = float("nan")
    length_correct: float = float("nan")
    length_wrong: float = float("nan")

    @property
    def distinct_answers(self) -> float:
        """Mean number of distinct final answers per problem."""
        return float(np.mean(self.distinct)) if self.distinct else float("nan")

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {"mean_length": self.mean_length}
        for k, v in self.pass_at.items():
            out[f"pass@{k}"] = v
            out[f"pass@{k}_ci_low"], out[f"pass@{k}_ci_high"] = self.ci[k]
        for k, v in self.maj_at.items():
            out[f"maj@{k}"] = v
            out[f"maj@{k}_ci_low"], out[f"maj@{k}_ci_high"] = self.maj_ci[k]
        if self.distinct:
            out["distinct_answers"] = self.distinct_answers
        if not np.isnan(self.entropy):
            out["entropy"] = self.entropy
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


def plan_batches(
    num_problems: int, n: int, *, batch_prompts: int, max_batch_seqs: int
) -> list[tuple[int, int, list[int]]]:
    """Generate calls for ``n`` samples of each problem with at most ``max_batch_seqs`` sequences
    per call: ``(first problem, problem count, samples per call)`` per group of problems.

    n <= max_batch_seqs: min(batch_prompts, max_batch_seqs // n) problems per call, n samples each;
    n > max_batch_seqs: one problem per group, its n samples in calls of up to max_batch_seqs.
    """
    if n < 1 or max_batch_seqs < 1 or batch_prompts < 1:
        raise ValueError(
            f"evaluate: n, batch_prompts and max_batch_seqs must be >= 1, got n={n}, "
            f"batch_prompts={batch_prompts}, max_batch_seqs={max_batch_seqs}"
        )
    if n <= max_batch_seqs:
        per = min(batch_prompts, max_batch_seqs // n)
        return [(s, min(per, num_problems - s), [n]) for s in range(0, num_problems, per)]
    splits = [min(max_batch_seqs, n - s) for s in range(0, n, max_batch_seqs)]
    return [(s, 1, splits) for s in range(num_problems)]


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
    max_batch_seqs: int = 4096,
    seed: int = 0,
    keep_samples: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> EvalResult:
    """Sample ``n`` completions for each problem; a sample is correct when ``reward_fn`` gives 1.

    ``reward_fn`` is a per-sample function ``(prompt, completion, answer, **meta) -> float`` or a
    :class:`~rlvr.rewards.runner.RewardRunner` (its first component is the verifier). Each generate
    call holds at most ``max_batch_seqs`` sequences (and at most ``batch_prompts`` prompts), so n in
    the hundreds or thousands works; ``on_batch(problems_done)`` is called after each group.
    """
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    was_training = model.training
    model.eval()
    correct: list[int] = []
    ok_rows: list[list[bool]] = []  # [P][n]
    answers: list[list[str | None]] = []  # [P][n]
    lengths: list[float] = []
    ent_sum, ent_tokens = 0.0, 0.0
    samples: list[dict[str, Any]] = []
    plan = plan_batches(len(problems), n, batch_prompts=batch_prompts, max_batch_seqs=max_batch_seqs)
    try:
        for start, count, splits in plan:
            chunk = problems[start : start + count]
            prompts = [format_prompt(tokenizer, p.question, messages=p.messages) for p in chunk]
            ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
            per_prompt: list[list[str]] = [[] for _ in chunk]  # [B][n]
            per_len: list[list[float]] = [[] for _ in chunk]  # [B][n], tokens of each completion
            for g in splits:
                roll = generate(
                    model,
                    ids,
                    num_samples=g,
                    max_new_tokens=max_new_tokens,
                    eos_id=tokenizer.eos_token_id,
                    pad_id=tokenizer.pad_token_id,
                    temperature=temperature,
                    top_p=top_p,
                    generator=gen,
                )
                texts = roll.texts(tokenizer)  # [B * g], prompt i owns rows i*g .. i*g + g - 1
                row_len = roll.lengths.float().tolist()  # [B * g]
                for i in range(len(chunk)):
                    per_prompt[i].extend(texts[i * g : (i + 1) * g])
                    per_len[i].extend(row_len[i * g : (i + 1) * g])
                tok_ent = roll.entropy if roll.entropy is not None else -roll.old_logp  # [N, T]
                ent_sum += float((tok_ent * roll.mask).sum())
                ent_tokens += float(roll.mask.sum())
            texts = [t for row in per_prompt for t in row]  # [B * n]
            lengths.extend(x for row in per_len for x in row)  # prompt-major, as ok_rows
            scores = _score_chunk(reward_fn, chunk, texts, n)  # [B * n]
            for i, p in enumerate(chunk):
                row = [scores[i * n + j] >= 1.0 for j in range(n)]
                ok_rows.append(row)
                correct.append(sum(row))
                answers.append([final_answer(t) for t in per_prompt[i]])
                if len(samples) < keep_samples:
                    samples.append(
                        {
                            "question": p.question,
                            "answer": p.answer,
                            "completion": per_prompt[i][0],
                            "reward": scores[i * n],
                        }
                    )
            if on_batch is not None:
                on_batch(len(chunk))
    finally:
        if was_training:
            model.train()

    return outcome_result(
        correct,
        ok_rows,
        answers,
        n=n,
        seed=seed,
        lengths=lengths,
        samples=samples,
        entropy=ent_sum / ent_tokens if ent_tokens else float("nan"),
    )


def outcome_result(
    correct: list[int],
    ok_rows: list[list[bool]],
    answers: list[list[str | None]],
    *,
    n: int,
    seed: int,
    lengths: list[float],
    samples: list[dict[str, Any]],
    entropy: float,
) -> EvalResult:
    """The :class:`EvalResult` of ``n`` samples per problem from their outcomes: ``correct`` [P]
    (correct samples per problem), ``ok_rows`` [P][n] (each sample's verdict) and ``answers`` [P][n]
    (each sample's final answer or None); ``lengths`` [P * n] in the order of ``ok_rows``. pass@k and
    maj@k for every power of two k <= n, with bootstrap CIs over problems."""
    ks = [2**i for i in range(int(np.log2(n)) + 1)]
    answer_ids = encode_answers(answers) if answers else np.zeros((0, n), dtype=np.int64)  # [P, n]
    ok = np.array(ok_rows, dtype=bool).reshape(len(correct), n)  # [P, n]
    pass_at, ci, maj_at, maj_ci = {}, {}, {}, {}
    for k in ks:
        per = mean_pass_at_k(correct, n, k)  # [P]
        pass_at[k] = float(np.mean(per))
        ci[k] = bootstrap_ci(per, seed=seed)
        maj = majority_at_k(answer_ids, ok, k).astype(np.float64)  # [P]
        maj_at[k] = float(np.mean(maj))
        maj_ci[k] = bootstrap_ci(maj, seed=seed)
    lens = np.asarray(lengths, dtype=np.float64)  # [P * n]
    flat_ok = ok.reshape(-1)  # [P * n]
    by_outcome = [float("nan"), float("nan")]  # wrong, correct
    if lens.size == flat_ok.size:
        for v in (0, 1):
            sel = lens[flat_ok == bool(v)]
            by_outcome[v] = float(sel.mean()) if sel.size else float("nan")
    return EvalResult(
        n=n,
        correct=correct,
        pass_at=pass_at,
        ci=ci,
        mean_length=float(np.mean(lengths)) if lengths else float("nan"),
        samples=samples,
        maj_at=maj_at,
        maj_ci=maj_ci,
        distinct=distinct_answers(answer_ids).tolist(),
        voted=[_majority(row) for row in answers],
        entropy=entropy,
        length_correct=by_outcome[1],
        length_wrong=by_outcome[0],
    )
