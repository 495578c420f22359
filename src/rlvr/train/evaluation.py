"""Held-out evaluation of a run: before training, every ``eval.every`` steps, and after, with the
summary that compares the two (pass@1 gain with its interval, reasoning boundary, crossover k)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rlvr.data.tasks import Problem
from rlvr.eval import (
    EvalResult,
    bootstrap_ci,
    crossover_k,
    evaluate,
    mean_pass_at_k,
    reasoning_boundary,
    summary_ks,
)
from rlvr.rewards.runner import RewardRunner
from rlvr.train.config import Config
from rlvr.utils import atomic_write_text, console

__all__ = [
    "by_family",
    "eval_record",
    "evaluate_problems",
    "format_eval",
    "run_eval",
    "summarise",
]


def evaluate_problems(
    model: Any,
    tokenizer: Any,
    problems: list[Problem],
    cfg: Config,
    verifier: RewardRunner,
    *,
    n: int,
    keep_samples: int = 0,
    max_batch_seqs: int | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> EvalResult:
    """``n`` samples per held-out problem with the run's eval settings: completions scored by the
    verifier, or for task.source = 'env' whole episodes, correct when the environment says success."""
    from rlvr.train.setup import env_knobs

    e = cfg.eval
    batch = {} if max_batch_seqs is None else {"max_batch_seqs": max_batch_seqs}
    if cfg.task.source == "env":
        from rlvr.envs import evaluate_episodes, make_env

        knobs = env_knobs(cfg)[0]
        return evaluate_episodes(
            model,
            tokenizer,
            problems,
            lambda p: make_env(p, **knobs),
            n=n,
            max_turns=cfg.rollout.max_turns,
            max_new_tokens=e.max_new_tokens,
            max_episode_tokens=cfg.rollout.max_episode_tokens or 2**31,
            temperature=e.temperature,
            top_p=e.top_p,
            seed=cfg.train.seed,
            keep_samples=keep_samples,
            on_batch=on_batch,
            **({"max_batch_episodes": max_batch_seqs} if max_batch_seqs else {}),
        )
    return evaluate(
        model,
        tokenizer,
        problems,
        verifier,
        n=n,
        max_new_tokens=e.max_new_tokens,
        temperature=e.temperature,
        top_p=e.top_p,
        seed=cfg.train.seed,
        keep_samples=keep_samples,
        on_batch=on_batch,
        **batch,
    )


def run_eval(
    model: Any,
    tokenizer: Any,
    problems: list[Problem],
    cfg: Config,
    verifier: RewardRunner,
    *,
    label: str,
    progress: bool,
) -> EvalResult:
    """The run's evaluation (``eval.samples`` per problem, 8 samples kept) with a progress bar."""
    columns = [TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, disable=not progress) as bar:
        job = bar.add_task(label, total=len(problems))
        return evaluate_problems(
            model,
            tokenizer,
            problems,
            cfg,
            verifier,
            n=cfg.eval.samples,
            keep_samples=8,
            on_batch=lambda k: bar.update(job, advance=k),
        )


def by_family(problems: list[Any], correct: list[int], n: int) -> dict[str, dict[str, float]]:
    """Held-out pass@1 and pass@n of each task family of a mixture (``meta["source_dataset"]``;
    each family was scored by its own scorer): family -> {problems, pass@1, pass@n}; empty when
    the problems come from one family (or have no family)."""
    groups: dict[str, list[int]] = {}
    for p, c in zip(problems, correct, strict=True):
        groups.setdefault(str(p.meta.get("source_dataset", "")), []).append(c)
    if len(groups) < 2:
        return {}
    return {
        fam: {
            "problems": len(cs),
            "pass@1": sum(cs) / (len(cs) * n),
            f"pass@{n}": sum(c > 0 for c in cs) / len(cs),
        }
        for fam, cs in sorted(groups.items())
    }


def eval_record(res: EvalResult) -> dict[str, Any]:
    """What ``eval_before.json`` / ``eval_after.json`` hold."""
    return {
        "summary": res.summary(),
        "correct": res.correct,
        "n": res.n,
        "length_correct": res.length_correct,
        "length_wrong": res.length_wrong,
        "samples": res.samples,
    }


def format_eval(label: str, s: dict[str, float]) -> str:
    """One console line of an evaluation's pass@k and mean length."""
    ks = summary_ks(s)
    body = "  ".join(f"pass@{k} {100 * s[f'pass@{k}']:.1f}%" for k in ks)
    return f"held-out ({label}): {body}  mean length {s['mean_length']:.1f}"


def summarise(after: EvalResult, before_path: Path, seed: int) -> dict[str, Any]:
    """The summary's comparison of the trained model with the base (from ``eval_before.json`` when
    it exists): pass@1 gain with a bootstrap interval, the reasoning boundary and the crossover k."""
    out: dict[str, Any] = {"after": after.summary()}
    if not before_path.exists():
        return out
    before = json.loads(before_path.read_text())
    out["before"] = before["summary"]
    diff = np.array(mean_pass_at_k(after.correct, after.n, 1)) - np.array(
        mean_pass_at_k(before["correct"], before["n"], 1)
    )
    lo, hi = bootstrap_ci(diff, seed=seed)
    out["pass@1_gain"] = float(diff.mean())
    out["pass@1_gain_ci"] = [lo, hi]
    if before["n"] == after.n:  # which problems each model ever solves in n samples
        out["boundary"] = reasoning_boundary(before["correct"], after.correct)
        ks = summary_ks(out["after"])
        out["crossover_k"] = crossover_k(
            {k: out["before"][f"pass@{k}"] for k in ks},
            {k: out["after"][f"pass@{k}"] for k in ks},
        )
    return out


def write_eval(path: Path, res: EvalResult) -> None:
    """An evaluation's record, written atomically."""
    atomic_write_text(path, json.dumps(eval_record(res)))
