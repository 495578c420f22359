"""The training loop: sample, score, estimate advantages, update. One loop for every recipe.

The loop knows components only through the registries: a recipe names them and the loop passes them
numbers. Optional inputs (a reference model's log-probs, entropies, reward components, ...; see
``rlvr.algos.INPUTS``) are computed only when a chosen component, or a KL coefficient > 0, needs them,
and are passed to the component as keyword arguments of the same name.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import shutil
import signal
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import Tensor

from rlvr.algos import SHAPING
from rlvr.algos.credit import value_loss
from rlvr.algos.kl import adaptive_kl_coef
from rlvr.algos.weights import truncated_is
from rlvr.data.guidance import GUIDES, Guide, TraceStore, apply_guide
from rlvr.data.prompts import format_prompt
from rlvr.data.samplers import SAMPLERS, PromptStats, informative_groups
from rlvr.data.tasks import Problem, ReasoningGymTask
from rlvr.eval import (
    EvalResult,
    bootstrap_ci,
    crossover_k,
    evaluate,
    mean_pass_at_k,
    reasoning_boundary,
    summary_ks,
)
from rlvr.eval.report import write_report
from rlvr.models.critic import ValueModel
from rlvr.models.hf import check_model_dir, load_model, load_tokenizer
from rlvr.models.shard import (
    drop_aliases,
    full_optimizer_state,
    full_weights,
    gathered,
    grad_norm,
    is_sharded,
    load_optimizer_state,
    shard_policy,
)
from rlvr.models.tiny import EMBEDDED, ensure_base
from rlvr.rewards.runner import RewardComponent, RewardRunner
from rlvr.rewards.steps import StepReward, step_token_rewards
from rlvr.rollout import Rollout, generate, sequence_logp
from rlvr.rollout.replay import ReplayBuffer, ReplayGroup
from rlvr.train.checkpoint import (
    latest_checkpoint,
    load_trainer_state,
    remove_partial,
    save_checkpoint,
)
from rlvr.train.config import Config, ConfigError, chosen_components
from rlvr.train.scale import (
    SOLO,
    Learners,
    Ready,
    RolloutSource,
    allreduce_grads,
    broadcast,
    close_learners,
    gather_objects,
    init_learners,
    split_rows,
)
from rlvr.utils import (
    append_jsonl,
    atomic_dir,
    atomic_write_text,
    console,
    fsync_file,
    pick_device,
    reuse_freed_memory,
    seed_everything,
)

__all__ = [
    "Components",
    "NonFiniteError",
    "TrainingInterrupted",
    "advantage_inputs",
    "build_components",
    "build_rewards",
    "build_task",
    "build_verifier",
    "credit_inputs",
    "env_knobs",
    "evaluate_problems",
    "lr_at",
    "prompt_pool",
    "token_inputs",
    "train",
]


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM arrived; a checkpoint was saved and the run can be resumed."""

    def __init__(self, signum: int, run_dir: Path, step: int) -> None:
        self.signum, self.run_dir, self.step = signum, run_dir, step
        super().__init__(
            f"{signal.Signals(signum).name} at step {step}: checkpoint saved; continue with "
            f"`rlvr train --resume {run_dir}`"
        )


class NonFiniteError(RuntimeError):
    """Too many updates in a row were skipped for a non-finite loss or gradient."""


@dataclass
class Components:
    """The chosen algorithm components with the knobs routed to each."""

    advantage: Callable[..., Tensor]
    objective: Callable[..., Tensor]
    aggregation: Callable[..., Tensor]
    kl: Callable[..., Tensor]
    token_weights: Callable[..., Tensor]
    credit: Callable[..., Tensor] | None = None
    """Token-level credit assigner; when set it replaces ``advantage``."""
    kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def needs(self) -> frozenset[str]:
        fns = (self.advantage, self.objective, self.aggregation, self.token_weights, self.credit)
        return frozenset().union(*(fn.needs for fn in fns if fn is not None))  # type: ignore[attr-defined]

    @property
    def needs_ref(self) -> bool:
        return bool({"ref_logp", "seq_ref_logp", "kl"} & self.needs)


def build_components(cfg: Config) -> Components:
    a = cfg.algo
    parts = chosen_components(a)
    kwargs = {
        role: {k: v for k, v in a.knobs.items() if k in reg.knobs(name)}
        for role, (reg, name) in parts.items()
    }
    fns = {role: reg[name] for role, (reg, name) in parts.items()}
    return Components(**fns, kwargs=kwargs)


def build_task(cfg: Config, tokenizer: Any = None) -> Any:
    """The recipe's problems: training stream seeded by train.seed, held-out set by task.split_seed.

    A reasoning-gym task (one, or a weighted mixture) or a dataset file. ``tokenizer`` is needed only
    to check prompt lengths (``task.max_prompt_tokens``). Raises :class:`ConfigError` naming the field,
    file or rows: an unknown task, bad generation knobs, too few distinct questions, a missing file,
    bad rows, or rows the chosen verifier cannot score.
    """
    t = cfg.task
    if t.source == "file":
        return _build_file_task(cfg, tokenizer)
    if t.source == "env":
        from rlvr.envs import build_env_task

        try:
            return build_env_task(
                t.env,
                seed=cfg.train.seed,
                heldout_seed=t.split_seed,
                heldout_size=t.heldout_size,
                **env_knobs(cfg)[1],
            )
        except (TypeError, ValueError) as err:
            raise ConfigError(f"'task.env_kwargs' of environment {t.env!r}: {err}") from None
    name, kwargs = t.name, dict(t.kwargs)
    if t.mixture:
        from reasoning_gym.composite import DatasetSpec

        name = "composite"
        kwargs = {
            "datasets": [
                DatasetSpec(
                    name=tname,
                    weight=float(spec.get("weight", 1.0)),
                    config={k: v for k, v in spec.items() if k != "weight"},
                )
                for tname, spec in t.mixture.items()
            ]
        }
    where = (
        f"'task.mixture' ({', '.join(t.mixture)})"
        if t.mixture
        else f"'task' (name = {t.name!r}, kwargs = {t.kwargs})"
    )
    try:
        return ReasoningGymTask(
            name,
            seed=cfg.train.seed,
            heldout_seed=t.split_seed,
            heldout_size=t.heldout_size,
            **kwargs,
        )
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None


def _build_file_task(cfg: Config, tokenizer: Any) -> Any:
    from rlvr.data.files import DatasetError, FileDataset

    t = cfg.task
    count = None
    if t.max_prompt_tokens:
        if tokenizer is None:
            raise ValueError("task.max_prompt_tokens needs the tokenizer")

        def count(p: Problem) -> int:
            return len(
                tokenizer(
                    format_prompt(tokenizer, p.question, messages=p.messages), add_special_tokens=False
                )["input_ids"]
            )

    try:
        with warnings.catch_warnings(record=True) as caught:  # on_bad_row = skip: say it once, plainly
            warnings.simplefilter("always")
            data = FileDataset(
                t.path,
                prompt_field=t.prompt_field,
                messages_field=t.messages_field,
                answer_field=t.answer_field,
                heldout_size=0 if t.heldout_path else t.heldout_size,
                heldout_path=t.heldout_path,
                split_seed=t.split_seed,
                seed=cfg.train.seed,
                max_prompt_tokens=t.max_prompt_tokens,
                count_tokens=count,
                on_bad_row=t.on_bad_row,
            )
        for w in caught:
            console.print(f"[yellow]warning:[/yellow] {escape(str(w.message))}", highlight=False)
    except (DatasetError, FileNotFoundError, ValueError) as err:
        raise ConfigError(f"'task.path' = {t.path!r}: {err}") from None
    builtin = t.verifier == "answer" and not cfg.rewards.get("answer", {}).get("function")
    if builtin and not all("source_dataset" in p.meta for p in data.heldout[:8]):
        raise ConfigError(
            f"'task.verifier' = 'answer' scores reasoning-gym problems by their 'source_dataset' "
            f"field, which the rows of {t.path} lack; set task.verifier (and a reward) to "
            "'math', 'exact_match', 'code' or your own function"
        )
    return data


def env_knobs(cfg: Config) -> tuple[dict[str, Any], dict[str, Any]]:
    """``task.env_kwargs`` split into (the environment factory's knobs, its problem stream's knobs)."""
    from rlvr.envs import ENVS

    own = ENVS.knobs(cfg.task.env)
    kw = cfg.task.env_kwargs
    return {k: v for k, v in kw.items() if k in own}, {k: v for k, v in kw.items() if k not in own}


def build_rewards(cfg: Config, log: Callable[[str], None] = console.print) -> RewardRunner:
    """The run's reward components (recipe ``rewards``) with ``scoring`` workers, timeout, failures."""
    sc = cfg.scoring
    return RewardRunner(
        [
            RewardComponent(name, float(spec.get("weight", 1.0)), dict(spec))
            for name, spec in cfg.rewards.items()
        ],
        workers=sc.workers,
        timeout=sc.timeout,
        failure_score=sc.failure_score,
        log=log,
    )


def build_verifier(cfg: Config, log: Callable[[str], None] = console.print) -> RewardRunner:
    """The correctness check (``task.verifier``) used by evaluation: a sample is correct when it
    scores >= 1. Its knobs come from ``rewards.<verifier>`` when the run has that reward."""
    name = cfg.task.verifier
    spec = dict(cfg.rewards.get(name, {}))
    return RewardRunner(
        [RewardComponent(name, 1.0, spec)],
        timeout=cfg.scoring.timeout,
        failure_score=0.0,
        log=log,
    )


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
    }
    return {k: supply[k]() for k in needs}


def _need_field(roll: Rollout, name: str) -> Tensor:
    value = getattr(roll, name)
    if value is None:  # train() resolves a step reward whenever a component needs them
        raise ConfigError(f"the credit assigner needs {name!r}, which this batch does not carry")
    return value


def step_source(runner: RewardRunner, comps: Components, cfg: Config) -> StepReward | None:
    """The run's step reward, when the credit assigner needs ``process_rewards``; else None.

    Exactly one reward component must be a :class:`~rlvr.rewards.steps.StepReward` (``arith_steps``,
    ``prm``); its step scores become the process rewards (weight 0 keeps it out of the outcome reward).
    """
    if comps.credit is None or "process_rewards" not in comps.credit.needs:  # type: ignore[attr-defined]
        return None
    found = [n for n, fn in zip(runner.names, runner.fns, strict=True) if isinstance(fn, StepReward)]
    if len(found) != 1:
        raise ConfigError(
            f"algo.credit = {cfg.algo.credit!r} needs process rewards from exactly one step reward in "
            f"[rewards] (arith_steps, prm), found {len(found)}"
            + (f" ({', '.join(found)})" if found else "")
            + "; add one, e.g. `rewards.arith_steps.weight=0.0` to use it for credit only"
        )
    if cfg.task.source == "env" or cfg.guidance.strategy:
        raise ConfigError(
            f"algo.credit = {cfg.algo.credit!r} (process rewards) works on plain completions; "
            "it cannot be combined with multi-turn episodes (task.source = 'env') or guidance"
        )
    return runner.fns[runner.names.index(found[0])]  # type: ignore[return-value]


def _episode_field(roll: Rollout, name: str) -> Tensor:
    value = getattr(roll, name)
    if value is None:
        raise ConfigError(
            f"the credit assigner needs {name!r}, which only multi-turn episodes have "
            "(task.source = 'env')"
        )
    return value


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
    }
    return {k: supply[k]() for k in needs}


def lr_at(step: int, *, lr: float, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """Learning rate of step ``step`` (1-based).

    warm-up (step <= warmup):  lr * step / warmup
    after, with p = (step - warmup) / (total - warmup) in [0, 1]:
      constant: lr;  linear: lr * (1 - (1 - min_ratio) p);
      cosine:   lr * (min_ratio + (1 - min_ratio) (1 + cos(pi p)) / 2)
    """
    if warmup and step <= warmup:
        return lr * step / warmup
    if schedule == "constant":
        return lr
    p = min(1.0, max(0.0, (step - warmup) / max(1, total - warmup)))
    if schedule == "linear":
        return lr * (1 - (1 - min_ratio) * p)
    if schedule == "cosine":
        return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * p)))
    raise ValueError(f"unknown schedule {schedule!r}")


def _score_step(
    runner: RewardRunner,
    verifier: RewardRunner,
    kv: int | None,
    problems: list[Problem],
    texts: list[str],
    g: int,
    model: Any,
    tokenizer: Any,
    sample_meta: list[dict[str, Any]] | None = None,
) -> tuple[Tensor, Tensor, dict[str, int]]:
    """Score a step's N = B*G completions -> (parts [N, K], correct [N] 0/1, failures per component).

    ``correct`` is the verifier's column of ``parts`` when the run's rewards include the verifier,
    else the verifier is run on its own.
    """
    prompts = [p.question for p in problems for _ in range(g)]
    answers = [p.answer for p in problems for _ in range(g)]
    metas = [p.meta for p in problems for _ in range(g)]
    if sample_meta is not None:  # per-sample facts, e.g. a multi-turn episode's return
        metas = [{**m, **extra} for m, extra in zip(metas, sample_meta, strict=True)]
    policy = (model, tokenizer) if runner.needs_policy else None
    res = runner.score(prompts, texts, answers, metas, group_size=g, policy=policy)
    parts = torch.tensor(res.parts, dtype=torch.float32)  # [N, K]
    if kv is not None:
        verdict = parts[:, kv]  # [N]
    else:
        verdict = torch.tensor(
            [row[0] for row in verifier.score(prompts, texts, answers, metas, group_size=g).parts]
        )  # [N]
    return parts, (verdict >= 1.0).float(), res.failures


def _group_rows(sizes: list[int]) -> list[slice]:
    """Row slice of each group, for groups of ``sizes`` samples stored one after another."""
    ends = np.cumsum(sizes).tolist()
    return [slice(end - size, end) for size, end in zip(sizes, ends, strict=True)]


def _buckets(sizes: list[int]) -> list[tuple[int, list[int], Tensor | None]]:
    """Groups of equal size, for components that take a [B, G] grid: (size s, group indices, rows
    [n_s] of those groups in group order). With one size for all, rows is None (the whole batch)."""
    if len(set(sizes)) <= 1:
        return [(sizes[0] if sizes else 0, list(range(len(sizes))), None)]
    groups = _group_rows(sizes)
    out = []
    for s in sorted(set(sizes)):
        js = [j for j, n in enumerate(sizes) if n == s]
        rows = torch.tensor([r for j in js for r in range(groups[j].start, groups[j].stop)])  # [n_s]
        out.append((s, js, rows))
    return out


@dataclass
class _Round:
    """One generation round of a step: B prompts x G samples, scored (and shaped). A sampler that
    allocates rollouts per prompt (knapsack) gives the groups different sizes (``sizes``)."""

    problems: list[Problem]
    picked: np.ndarray | None  # [B] pool indices, when a sampler picked from a pool
    roll: Rollout
    texts: list[str]
    parts: Tensor  # [N, K] unweighted reward components
    raw: Tensor  # [N] their weighted sum
    rewards: Tensor  # [N] after shaping
    correct: Tensor  # [N] verifier outcome 0/1
    fails: dict[str, int]
    gen_time: float
    guides: list[Guide] | None = None  # [B] the guidance each prompt was generated with
    replayed: bool = False  # groups from the replay buffer, not generated this step
    sizes: list[int] | None = None  # [B] samples per group, when they differ
    info: dict[str, float] = field(default_factory=dict)  # episode metrics of a multi-turn round

    def group(self, j: int) -> slice:
        """Rows of group ``j``."""
        if self.sizes is None:
            g = len(self.texts) // len(self.problems)
            return slice(j * g, (j + 1) * g)
        return _group_rows(self.sizes)[j]

    def size(self, j: int) -> int:
        sl = self.group(j)
        return sl.stop - sl.start


def _autocast(cfg: Config, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """``model.dtype`` = 'bfloat16': bfloat16 autocast on ``device`` (float32 weights and optimizer,
    as TRL's bf16 = true); 'float32': nothing."""
    if cfg.model.dtype == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _round(
    model: Any,
    tokenizer: Any,
    problems: list[Problem],
    picked: np.ndarray | None,
    cfg: Config,
    gen: torch.Generator,
    runner: RewardRunner,
    verifier: RewardRunner,
    kv: int | None,
    shapers: list[tuple[Callable[..., Tensor], dict[str, Any]]],
    guides: list[Guide] | None = None,
    counts: list[int] | None = None,
    env: dict[str, Any] | None = None,
    source: RolloutSource | None = None,
    version: int = 0,
    pending: Any = None,
    steps: StepReward | None = None,
) -> _Round:
    """Generate G completions for each problem, score them and shape the rewards (CPU tensors).

    ``guides`` (one per problem): hints added to the question and prefixes that start the reply;
    a prefix is on the prompt side (masked from the loss) and the rewards score prefix + completion.
    ``counts`` (one per problem): samples per problem in place of G (a knapsack allocation).
    ``env`` (the environment's knobs): play G multi-turn episodes per problem instead.
    ``source``: generate on Ray workers or across the learner ranks (weights ``version``) instead of
    with ``gen`` here; ``pending``: a generation already started for these problems (asynchronous).
    ``steps``: the step reward whose scores become ``roll.process_rewards`` (token-level credit).
    """
    r, b, g = cfg.rollout, len(problems), cfg.rollout.samples_per_prompt
    sizes = [int(c) for c in counts] if counts is not None else [g] * b
    t0 = time.perf_counter()
    sample_meta, info = None, {}
    precision = _autocast(cfg, next(model.parameters()).device)
    if env is not None:
        with precision:
            roll, texts, sample_meta, info = _play(model, tokenizer, problems, cfg, gen, env)
        gen_time = time.perf_counter() - t0
    else:
        model.eval()
        if pending is not None:
            roll = pending.result()
        else:
            ids, num_samples = prompt_ids(tokenizer, problems, g, guides, counts)
            with precision:
                if source is None:
                    roll = generate(
                        model, ids, num_samples=num_samples, generator=gen, **gen_knobs(cfg, tokenizer)
                    )
                else:
                    roll = source.submit(
                        model, ids, num_samples=num_samples, version=version, **gen_knobs(cfg, tokenizer)
                    ).result()
        model.train()
        gen_time = time.perf_counter() - t0
        if counts is not None:
            roll.group = torch.arange(b, device=roll.group.device).repeat_interleave(
                torch.tensor(sizes, device=roll.group.device)
            )  # [N]
        texts = roll.texts(tokenizer)
        if guides:  # the reply the rewards see starts with the guide's prefix
            owner = roll.group.tolist()
            texts = [guides[owner[i]].assistant_prefix + t for i, t in enumerate(texts)]
    n = len(texts)
    parts = torch.zeros(n, len(runner.names))  # [N, K]
    correct = torch.zeros(n)  # [N]
    rewards = torch.zeros(n)  # [N] after shaping
    raw = torch.zeros(n)  # [N] the weighted sum of the components
    fails: dict[str, int] = {}
    for s, js, rows in _buckets(sizes):  # groups of one size together: rewards and shaping see [B, G]
        sel = list(range(n)) if rows is None else rows.tolist()
        p_s, c_s, f_s = _score_step(
            runner,
            verifier,
            kv,
            [problems[j] for j in js],
            [texts[i] for i in sel],
            s,
            model,
            tokenizer,
            None if sample_meta is None else [sample_meta[i] for i in sel],
        )
        raw_s = p_s @ torch.tensor(runner.weights)  # [n_s] the weighted sum of the components
        if shapers:  # reward shaping, in recipe order, on the [B_s, s] grid
            lengths = roll.lengths if rows is None else roll.lengths[rows.to(roll.lengths.device)]
            shape_in = {
                "lengths": lengths.view(-1, s).float().cpu(),  # [B_s, s]
                "correct": c_s.view(-1, s),  # [B_s, s]
                "max_len": r.max_new_tokens,
            }
            grid = raw_s.view(-1, s)  # [B_s, s]
            for fn, knobs in shapers:
                grid = fn(grid, **{k: shape_in[k] for k in fn.needs}, **knobs)  # type: ignore[attr-defined]
            shaped = grid.reshape(-1)  # [n_s]
        else:
            shaped = raw_s
        if rows is None:
            parts, correct, rewards, raw = p_s, c_s, shaped, raw_s
        else:
            parts[rows], correct[rows], rewards[rows], raw[rows] = p_s, c_s, shaped, raw_s
        for name, c in f_s.items():
            fails[name] = fails.get(name, 0) + c
    roll.rewards, roll.reward_parts = rewards.to(roll.mask.device), parts.to(roll.mask.device)
    if steps is not None:
        owner = roll.group.tolist()  # [N] problem of each row
        scores, step_mask = steps.step_rewards([problems[j].question for j in owner], texts)  # [N, S]
        roll.process_rewards = step_token_rewards(
            tokenizer, roll.completion_ids, roll.lengths, texts, scores, step_mask, steps.delimiter
        )  # [N, T]
    return _Round(
        problems,
        picked,
        roll,
        texts,
        parts,
        raw,
        rewards,
        correct,
        fails,
        gen_time,
        guides,
        sizes=None if counts is None else sizes,
        info=info,
    )


def prompt_ids(
    tokenizer: Any,
    problems: list[Problem],
    g: int,
    guides: list[Guide] | None = None,
    counts: Any = None,
) -> tuple[list[list[int]], int]:
    """The problems' chat prompts as token ids, and the samples to draw per row: G rows per problem,
    or, with ``counts`` (a knapsack allocation), one row per sample and 1 sample each."""
    prompts = []
    for k, p in enumerate(problems):
        guide = guides[k] if guides else None
        question, messages = apply_guide(p, guide)
        prompts.append(
            format_prompt(tokenizer, question, messages=messages)
            + (guide.assistant_prefix if guide else "")
        )
    ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    if counts is None:
        return ids, g
    return [row for row, c in zip(ids, counts, strict=True) for _ in range(int(c))], 1


def gen_knobs(cfg: Config, tokenizer: Any) -> dict[str, Any]:
    """The sampler's keyword arguments for training rollouts."""
    r = cfg.rollout
    return {
        "max_new_tokens": r.max_new_tokens,
        "eos_id": tokenizer.eos_token_id,
        "pad_id": tokenizer.pad_token_id,
        "temperature": r.temperature,
        "top_p": r.top_p,
    }


def _play(
    model: Any,
    tokenizer: Any,
    problems: list[Problem],
    cfg: Config,
    gen: torch.Generator,
    env: dict[str, Any],
) -> tuple[Rollout, list[str], list[dict[str, Any]], dict[str, float]]:
    """G multi-turn episodes per problem, batched (rlvr.envs.run_episodes) -> (roll with the turn
    fields, transcripts, per-episode {env_return, env_success} for the rewards, episode metrics)."""
    from rlvr.envs import episode_metrics, make_env, run_episodes

    r, g = cfg.rollout, cfg.rollout.samples_per_prompt
    model.eval()
    ep = run_episodes(
        model,
        tokenizer,
        [make_env(p, **env) for p in problems for _ in range(g)],
        [int(p.meta.get("seed", 0)) for p in problems for _ in range(g)],
        group=torch.arange(len(problems)).repeat_interleave(g),  # [N]
        max_turns=r.max_turns,
        max_new_tokens=r.max_new_tokens,
        max_episode_tokens=r.max_episode_tokens or 2**31,
        temperature=r.temperature,
        top_p=r.top_p,
        generator=gen,
    )
    model.train()
    roll = ep.roll
    dev = roll.mask.device
    roll.turn, roll.turn_rewards, roll.turn_states = (
        ep.turn.to(dev),  # [N, T]
        ep.turn_rewards.to(dev),  # [N, K]
        ep.turn_states.to(dev),  # [N, K]
    )
    meta = [
        {"env_return": float(ret), "env_success": float(ok)}
        for ret, ok in zip(ep.returns.tolist(), ep.success.tolist(), strict=True)
    ]
    info = {k: v for k, v in episode_metrics(ep).items() if math.isfinite(v)}
    info["episodes"] = float(len(ep.texts))
    return roll, ep.texts, meta, info


def _episode_info(rounds: list[_Round]) -> dict[str, float]:
    """Episode metrics of the step's generated rounds, weighted by their episodes."""
    parts = [x.info for x in rounds if x.info and not x.replayed]
    total = sum(i["episodes"] for i in parts)
    keys = sorted({k for i in parts for k in i} - {"episodes"})
    out = {}
    for k in keys:
        have = [(i[k], i["episodes"]) for i in parts if k in i]
        out[k] = sum(v * w for v, w in have) / sum(w for _, w in have)
    return out if total else {}


def _assemble(rounds: list[_Round], kept: list[tuple[int, int]]) -> _Round:
    """The step's batch from the kept groups ``(round, group)`` of its rounds, in that order, as one
    round (``sizes`` set when its groups differ in size)."""
    if len(rounds) == 1 and kept == [(0, j) for j in range(len(rounds[0].problems))]:
        return rounds[0]
    rows = [torch.arange(rounds[rnd].group(j).start, rounds[rnd].group(j).stop) for rnd, j in kept]
    roll = Rollout.cat([rounds[rnd].roll.select(row) for (rnd, _), row in zip(kept, rows, strict=True)])
    sizes = [len(row) for row in rows]
    roll.group = torch.arange(len(kept), device=roll.group.device).repeat_interleave(
        torch.tensor(sizes, device=roll.group.device)
    )  # [N] contiguous

    def gather(attr: str) -> Tensor:
        return torch.cat(
            [getattr(rounds[rnd], attr)[row] for (rnd, _), row in zip(kept, rows, strict=True)]
        )

    return _Round(
        problems=[rounds[rnd].problems[j] for rnd, j in kept],
        picked=None,
        roll=roll,
        texts=[
            rounds[rnd].texts[i] for (rnd, _), row in zip(kept, rows, strict=True) for i in row.tolist()
        ],
        parts=gather("parts"),
        raw=gather("raw"),
        rewards=gather("rewards"),
        correct=gather("correct"),
        fails={},
        gen_time=0.0,
        sizes=sizes if len(set(sizes)) > 1 else None,
    )


def _replayed_round(groups: list[ReplayGroup], device: torch.device) -> _Round:
    """Replayed groups as one round (not generated this step: no generation time, no failures)."""
    return _Round(
        problems=[x.problem for x in groups],
        picked=None,
        roll=Rollout.cat([x.roll for x in groups]).to(device),
        texts=[t for x in groups for t in x.texts],
        parts=torch.cat([x.parts for x in groups]),
        raw=torch.cat([x.raw for x in groups]),
        rewards=torch.cat([x.rewards for x in groups]),
        correct=torch.cat([x.correct for x in groups]),
        fails={},
        gen_time=0.0,
        replayed=True,
    )


def _remember(
    replay: ReplayBuffer, rounds: list[_Round], kept: list[tuple[int, int]], step: int
) -> None:
    """Put the step's freshly generated, informative training groups in the replay buffer (CPU)."""
    for rnd, j in kept:
        x = rounds[rnd]
        rows = x.group(j)
        if x.replayed or float(x.rewards[rows].max() - x.rewards[rows].min()) == 0.0:
            continue
        idx = torch.arange(rows.start, rows.stop)
        roll = x.roll.select(idx).to("cpu")
        roll = replace(roll, ref_logp=None, values=None, entropy=None)  # recomputed when replayed
        replay.add(
            ReplayGroup(
                problem=x.problems[j],
                roll=roll,
                texts=x.texts[rows],
                parts=x.parts[rows].cpu(),
                correct=x.correct[rows].cpu(),
                rewards=x.rewards[rows].cpu(),
                raw=x.raw[rows].cpu(),
                step=step,
            )
        )


def _remember_traces(traces: TraceStore, rounds: list[_Round]) -> None:
    """Keep this step's successful completions (prefix included) as the prompts' known solutions."""
    for x in rounds:
        if x.replayed:
            continue
        for j, p in enumerate(x.problems):
            rows = x.group(j)
            for text, ok in zip(x.texts[rows], x.correct[rows].tolist(), strict=True):
                if ok:
                    traces.add(p.question, text)


def _guide_failed(
    rounds: list[_Round],
    rnd: int,
    guide: Callable[..., Guide | None],
    gd: Any,
    traces: TraceStore | None,
    rng: np.random.Generator,
    run_round: Callable[[list[Problem], Any, list[Guide] | None], _Round],
) -> dict[tuple[int, int], tuple[int, int]]:
    """Re-roll the groups of ``rounds[rnd]`` whose samples all failed, with guidance of tier 1, 2, ...
    ``gd.max_tier`` (one generation round per tier for all groups still failing). Returns
    {(rnd, j): (guided round, its group)} for the groups that a guided re-roll rescued (some sample
    correct); the guided rounds are appended to ``rounds``."""
    x = rounds[rnd]
    failing = [j for j in range(len(x.problems)) if float(x.correct[x.group(j)].sum()) == 0.0]
    swaps: dict[tuple[int, int], tuple[int, int]] = {}
    for tier in range(1, gd.max_tier + 1):
        todo: list[tuple[int, Guide]] = []
        for j in failing:
            p = x.problems[j]
            hint = guide(
                p, tier=tier, traces=traces.get(p.question) if traces else [], rng=rng, **gd.knobs
            )
            if hint is not None:
                todo.append((j, hint))
        if not todo:
            break
        y = run_round([x.problems[j] for j, _ in todo], None, [h for _, h in todo])
        rounds.append(y)
        still = []
        for jj, (j, _) in enumerate(todo):
            if float(y.correct[y.group(jj)].sum()) > 0:
                swaps[(rnd, j)] = (len(rounds) - 1, jj)
            else:
                still.append(j)
        failing = still
        if not failing:
            break
    return swaps


def _guide_metrics(
    rounds: list[_Round],
    kept: list[tuple[int, int]],
    swaps: dict[tuple[int, int], tuple[int, int]],
    g: int,
) -> dict[str, float]:
    """Guidance metrics: rescued groups that train, their mean tier, rollouts spent on guidance."""
    used = [rounds[rnd].guides[j].tier for rnd, j in kept if rounds[rnd].guides]  # type: ignore[index]
    return {
        "guided_groups": len(used),
        "guide_tier_mean": float(np.mean(used)) if used else 0.0,
        "guide_rollouts": sum(len(x.texts) for x in rounds if x.guides is not None),
    }


def _wandb_run(cfg: Config, run_dir: Path) -> Any:
    """A W&B run for ``train.wandb_project`` (id = the run directory's name, resumed when it exists)."""
    return _wandb_module(cfg).init(
        project=cfg.train.wandb_project,
        id=run_dir.name,
        name=run_dir.name,
        dir=str(run_dir),
        config=cfg.to_dict(),
        resume="allow",
    )


def _wandb_module(cfg: Config) -> Any:
    try:
        import wandb
    except ImportError:
        raise ConfigError(
            f"'train.wandb_project' = {cfg.train.wandb_project!r} needs the wandb package: "
            "pip install wandb"
        ) from None
    return wandb


def prompt_pool(task: Any, size: int) -> list[Problem]:
    """A finite pool of training prompts: a dataset's training rows (the first ``size`` of them when
    ``size`` > 0), or the first ``size`` problems of a generated task's stream."""
    rows = getattr(task, "train_problems", None)
    if rows is not None:
        return list(rows[:size] if size else rows)
    if not size:
        raise ValueError("a generated task has no finite pool; set sampling.pool_size")
    return task.next(size)


def _advantages(
    comps: Components,
    roll: Rollout,
    scored: Tensor,
    returns: Tensor,
    sizes: list[int],
    reward_weights: Tensor,
) -> tuple[Tensor, Tensor]:
    """Advantages of the batch: the token-level credit assigner when the recipe has one, else the
    outcome estimator -> (adv [N] or [N, T], value targets [N, T]). Components see [B, G] grids, so
    groups of different sizes (a knapsack allocation) are passed one size at a time."""
    adv_out: Tensor | None = None
    buckets = _buckets(sizes)
    if buckets[0][2] is not None:
        returns = returns.clone()  # filled per bucket where an assigner gives its own targets
    for s, _, rows in buckets:
        sub = roll if rows is None else roll.select(rows)
        sc = scored if rows is None else scored[rows.to(scored.device)]  # [n_s]
        grid = sc.view(-1, s)  # [B_s, s]
        if comps.credit is not None:  # token-level credit: every token its own advantage
            adv = comps.credit(
                grid,
                sub.mask,
                **credit_inputs(sub, comps.credit.needs, comps.kl),  # type: ignore[attr-defined]
                **comps.kwargs["credit"],
            )  # [n_s, T], or (advantages, returns) [n_s, T] each for a critic's assigner (gae)
            ret = None
            if isinstance(adv, tuple):
                adv, ret = adv
        else:
            adv = comps.advantage(
                grid,
                **advantage_inputs(sub, comps.advantage.needs, grid.shape[0], s, reward_weights),  # type: ignore[attr-defined]
                **comps.kwargs["advantage"],
            ).reshape(-1)  # [n_s]
            ret = None
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


def _track(
    stats: PromptStats,
    rounds: list[_Round],
    kept: list[tuple[int, int]],
    adv: Tensor,
    mask: Tensor,
    sizes: list[int],
    step: int,
) -> None:
    """Record every rolled-out group of the step: successes, attempts and, for the groups that
    trained, their mean absolute advantage (0 for dropped groups, whose advantage is 0)."""
    per_seq = (
        adv.abs() if adv.dim() == 1 else (adv.abs() * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    )  # [N]
    rows = _group_rows(sizes)
    abs_adv = {key: float(per_seq[rows[n]].mean()) for n, key in enumerate(kept)}
    for rnd, x in enumerate(rounds):
        if x.picked is None:
            continue
        for j, i in enumerate(x.picked):
            stats.update(
                int(i),
                step=step,
                successes=float(x.correct[x.group(j)].sum()),
                attempts=x.size(j),
                abs_adv=abs_adv.get((rnd, j), 0.0),
            )


def _tb_scalars(tb: Any, scalars: dict[str, float], step: int) -> None:
    """A step's scalars as one TensorBoard event holding every value (``simple_value``, what
    ``SummaryWriter.add_scalar`` writes one event each for): 0.15 ms a step instead of 2 ms."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    values = [Summary.Value(tag=k, simple_value=float(v)) for k, v in scalars.items()]
    tb._get_file_writer().add_summary(Summary(value=values), step)


def _learn(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    roll: Rollout,
    adv: Tensor,
    comps: Components,
    cfg: Config,
    gen: torch.Generator,
    sizes: list[int] | None = None,
    *,
    kl_coef: float = 0.0,
    learners: Learners = SOLO,
) -> dict[str, float]:
    """Several epochs of mini-batch updates on one rollout batch; returns averaged metrics.

    ``kl_coef`` weighs the per-token KL term of the loss (used when ``algo.kl_in == "loss"``);
    ``sizes`` are the samples per group, in row order (default: groups of G). With several
    ``learners``, each rank back-propagates its share of every mini-batch's rows and the gradients
    are summed over the ranks (see ``rlvr.train.scale``): the update of one rank on the whole batch.
    """
    a, temp = cfg.algo, cfg.rollout.temperature
    n = len(roll)
    stats_acc: dict[str, list[float]] = {}

    def note(key: str, value: float) -> None:
        stats_acc.setdefault(key, []).append(value)

    mb_size = n // a.minibatches
    lo, hi = learners.share(0, mb_size)  # this rank's rows of each mini-batch
    micro = (hi - lo) // a.micro_batches
    params = [p for p in model.parameters() if p.requires_grad]
    sharded = is_sharded(model)  # FSDP: gradients reduced (averaged) over the ranks in the backward
    precision = _autocast(cfg, params[0].device)  # the forward only; backward and optimizer in fp32
    for _epoch in range(a.epochs):
        # shuffle whole groups, so that mini-batches keep a prompt's samples together and the
        # shared-prompt forward applies
        if sizes is None:  # groups of G
            sizes = [cfg.rollout.samples_per_prompt] * (n // cfg.rollout.samples_per_prompt)
        b = len(sizes)
        groups = torch.randperm(b, generator=gen) if a.minibatches > 1 else torch.arange(b)
        spans = _group_rows(sizes)
        order = torch.cat([torch.arange(spans[k].start, spans[k].stop) for k in groups.tolist()])  # [N]
        for start in range(0, n, mb_size):
            mb_idx = order[start : start + mb_size].to(adv.device)
            mb = roll.select(mb_idx)
            mb_adv = adv[mb_idx]  # [n_mb]
            opt.zero_grad(set_to_none=True)
            total = 0.0
            for c in range(lo, hi, micro):
                rows = torch.arange(c, min(c + micro, hi), device=adv.device)
                sub = mb.select(rows)
                with precision:
                    logp, ent = sequence_logp(
                        model,
                        sub.prompt_ids,
                        sub.prompt_mask,
                        sub.completion_ids,
                        sub.attention,
                        temperature=temp,
                    )  # [m, T] float32
                stats: dict[str, float] = {}
                loss_tok = comps.objective(
                    logp,
                    sub.old_logp,
                    mb_adv[rows],
                    sub.mask,
                    stats=stats,
                    **token_inputs(sub, comps.objective.needs, logp, ent),  # type: ignore[attr-defined]
                    **comps.kwargs["objective"],
                )  # [m, T]
                weights = comps.token_weights(
                    sub.mask,
                    **token_inputs(sub, comps.token_weights.needs, logp, ent),  # type: ignore[attr-defined]
                    **comps.kwargs["token_weights"],
                )  # [m, T], no gradient
                loss_tok = loss_tok * weights
                if sub.is_weight is not None:  # stale rollouts: truncated importance weights
                    loss_tok = loss_tok * sub.is_weight
                if kl_coef > 0 and a.kl_in == "loss" and sub.ref_logp is not None:
                    kl = comps.kl(logp, sub.ref_logp)  # [m, T]
                    loss_tok = loss_tok + kl_coef * kl
                    note("kl", float((kl.detach() * sub.mask).sum() / sub.mask.sum().clamp(min=1)))
                if a.entropy_coef:
                    loss_tok = loss_tok - a.entropy_coef * ent
                # aggregations are linear: embedding each micro-batch in a zero [n_mb, T] tensor and
                # summing gives exactly the mini-batch aggregate
                full = torch.zeros_like(mb.old_logp).index_copy(0, rows, loss_tok)  # [n_mb, T]
                loss = comps.aggregation(full, mb.mask, **comps.kwargs["aggregation"])
                (loss * learners.world if sharded else loss).backward()  # FSDP's mean -> the sum
                total += float(loss.detach())
                for k, v in stats.items():
                    note(k, v)
                note("entropy", float((ent.detach() * sub.mask).sum() / sub.mask.sum().clamp(min=1)))
            if sharded:  # FSDP summed the gradients; the ranks' parts of the loss are summed here
                total = sum(gather_objects(total, learners))
            elif learners.world > 1:  # the ranks' parts of the global aggregate: sum them
                (total,) = allreduce_grads(params, learners, total)
            gnorm = grad_norm(list(model.parameters()), cfg.optim.grad_clip)  # clipped when > 0
            if not (torch.isfinite(gnorm) and math.isfinite(total)):
                note("skipped_updates", 1.0)
                note("nonfinite_loss", total)  # nan / inf: which quantity, for the log line
                note("nonfinite_grad_norm", float(gnorm))
                opt.zero_grad(set_to_none=True)
                continue
            opt.step()
            note("loss", total)
            note("grad_norm", float(gnorm))
    if learners.world > 1:  # every rank's micro-batch statistics
        merged: dict[str, list[float]] = {}
        for part in gather_objects(stats_acc, learners):
            for k, v in part.items():
                merged.setdefault(k, []).extend(v)
        stats_acc = merged
    return {k: float(np.mean(v)) for k, v in stats_acc.items()}


def _correct_stale(
    model: torch.nn.Module, roll: Rollout, version: int, cap: float, temperature: float
) -> dict[str, float]:
    """Rollouts generated by older weights (``roll.policy_version`` < ``version``): recompute the
    log-probs under the current (proximal) policy, make them the objective's ``old_logp`` and weight
    each token by the truncated importance ratio (``truncated_is``). Returns the metrics."""
    lag = version - roll.policy_version  # updates between the behaviour and the current weights
    out = {"staleness": float(lag)}
    if lag <= 0:
        return out
    with torch.no_grad():
        prox, _ = sequence_logp(
            model,
            roll.prompt_ids,
            roll.prompt_mask,
            roll.completion_ids,
            roll.attention,
            temperature=temperature,
        )  # [N, T]
    stats: dict[str, float] = {}
    roll.is_weight = truncated_is(prox, roll.old_logp, roll.mask, cap=cap, stats=stats)  # [N, T]
    roll.old_logp = prox * roll.mask
    return out | stats


def _learn_critic(
    critic: ValueModel,
    opt: torch.optim.Optimizer,
    roll: Rollout,
    returns: Tensor,
    cfg: Config,
) -> dict[str, float]:
    """Fit the critic to ``returns`` [N, T] (clipped value loss), ``algo.epochs`` x ``minibatches``."""
    a, n = cfg.algo, len(roll)
    mb = n // a.minibatches
    losses = []
    for _epoch in range(a.epochs):
        for start in range(0, n, mb):
            idx = torch.arange(start, start + mb, device=returns.device)
            sub = roll.select(idx)
            v = critic(sub.prompt_ids, sub.prompt_mask, sub.completion_ids, sub.attention)  # [m, T]
            loss = value_loss(v, sub.values, returns[idx], sub.mask, clip=cfg.critic.value_clip)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(critic.parameters(), cfg.optim.grad_clip)
            opt.step()
            losses.append(float(loss.detach()))
    counted = roll.mask > 0
    return {"value_loss": float(np.mean(losses)), "value_mean": float(roll.values[counted].mean())}


class _stop_on_signals:
    """Context manager: SIGINT/SIGTERM append the signal number to ``flag`` instead of killing the
    process, so the loop can finish its step and save a checkpoint. A second signal kills as usual.
    Only in the main thread (Python allows handlers nowhere else)."""

    def __init__(self, flag: list[int]) -> None:
        self.flag = flag
        self.saved: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.flag:  # second signal: restore and re-raise the default behaviour
            signal.signal(signum, self.saved.get(signum, signal.SIG_DFL))
            signal.raise_signal(signum)
            return
        self.flag.append(signum)
        console.print(
            f"[yellow]{signal.Signals(signum).name}: finishing this step and saving a checkpoint "
            "(send it again to stop at once)"
        )

    def __enter__(self) -> _stop_on_signals:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self.saved[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self.saved.items():
            signal.signal(s, handler)


def _save_reference(
    run_dir: Path, step: int, model: Any, tokenizer: Any, keep: int = 2, weights: Any = None
) -> None:
    """Save a reset reference model as references/step_N (atomic), keeping the newest ``keep``
    (``weights``: the full state dict of a sharded model)."""
    root = run_dir / "references"
    with atomic_dir(root / f"step_{step}") as tmp:
        model.save_pretrained(tmp, safe_serialization=True, state_dict=weights)
        tokenizer.save_pretrained(tmp)
    old = sorted((int(p.name.split("_")[1]), p) for p in root.glob("step_*") if p.is_dir())
    for _, path in old[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def new_run_dir(cfg: Config, root: Path) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = root / f"{cfg.name}-{stamp}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


def _eval(
    model: Any,
    tokenizer: Any,
    problems: list[Problem],
    cfg: Config,
    label: str,
    progress: bool,
    verifier: RewardRunner,
) -> EvalResult:
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


def _eval_record(res: EvalResult) -> dict[str, Any]:
    return {"summary": res.summary(), "correct": res.correct, "n": res.n, "samples": res.samples}


def train(
    cfg: Config,
    *,
    run_dir: str | Path | None = None,
    runs_root: str | Path = "runs",
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train with ``cfg``; write the run directory; return the summary (also in summary.json)."""
    if cfg.model.path:
        check_model_dir(cfg.model.path)  # a model directory without config or weights fails first
    if cfg.train.wandb_project:  # a missing wandb package fails before any work, too
        _wandb_module(cfg)
    tokenizer = None
    if cfg.task.max_prompt_tokens:  # prompt lengths are checked with the model's tokenizer
        tokenizer = load_tokenizer(
            Path(cfg.model.path)
            if cfg.model.path
            else ensure_base(EMBEDDED[cfg.model.embedded], progress=progress)
        )
    task = build_task(cfg, tokenizer)  # a bad task fails here, before a run dir or model exists
    device = pick_device(cfg.model.device)
    reuse_freed_memory()  # no page faults to re-touch each step's tensors
    learners = init_learners(cfg.scale.learners, device)  # this process's rank among the learners
    main = learners.main  # only rank 0 writes the run directory, evaluates and prints
    if not main:
        progress = False
    run_dir = Path(run_dir) if run_dir else broadcast(new_run_dir(cfg, Path(runs_root)), learners)
    try:  # an unusable run directory fails here, before any model is loaded
        run_dir.mkdir(parents=True, exist_ok=True)
        if main:
            atomic_write_text(run_dir / ".write-test", "ok\n")
            (run_dir / ".write-test").unlink()
    except OSError as err:
        raise ConfigError(f"run directory {run_dir} is not writable: {err.strerror or err}") from None
    quiet = console.quiet
    console.quiet = quiet or not main
    seed_everything(cfg.train.seed)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)

    if resume and main:
        for p in remove_partial(run_dir):
            console.print(f"removed {p} (left by an interrupted write)")
    ckpt = latest_checkpoint(run_dir) if resume else None
    st = load_trainer_state(ckpt) if ckpt is not None else None  # optimizer, RNG, data position, ...
    if resume and ckpt is None:
        console.print(f"[yellow]no complete checkpoint in {run_dir}; starting from step 0")
    base_path = (
        Path(cfg.model.path)
        if cfg.model.path
        else ensure_base(EMBEDDED[cfg.model.embedded], progress=progress)
    )
    model, tokenizer = load_model(ckpt or base_path, device=device)
    model.train()
    comps = build_components(cfg)
    need_ref = cfg.algo.beta > 0 or comps.needs_ref
    ref = None
    if need_ref:
        reset_at = int(st.get("ref_step", 0)) if st is not None else 0
        if reset_at:  # a reset reference (ProRL) is saved beside the checkpoints
            ref_path = run_dir / "references" / f"step_{reset_at}"
            if not ref_path.is_dir():
                raise FileNotFoundError(f"{ref_path}: the reference model this checkpoint needs")
            ref = load_model(ref_path, device=device)[0].eval()
        elif ckpt:
            ref = load_model(base_path, device=device)[0].eval()
        else:
            ref = copy.deepcopy(model).eval()
        ref.requires_grad_(False)

    runner = build_rewards(cfg)
    verifier = build_verifier(cfg)
    kv = runner.names.index(cfg.task.verifier) if cfg.task.verifier in runner.names else None
    steps = step_source(runner, comps, cfg)  # process rewards for token-level credit, when needed
    reward_weights = torch.tensor(runner.weights, device=device)  # [K]
    shapers = [(SHAPING[name], dict(knobs)) for name, knobs in cfg.shaping.items()]
    sp = cfg.sampling
    pool: list[Problem] | None = None  # the finite prompt pool a sampler picks from
    stats: PromptStats | None = None  # per-prompt statistics, shared by every sampler
    if sp.strategy != "uniform" or sp.pool_size:
        pool = prompt_pool(task, sp.pool_size)
        stats = PromptStats(len(pool), [str(p.meta.get(sp.category_field, "")) for p in pool])
    sampler = SAMPLERS[sp.strategy]
    sample_rng = np.random.default_rng(cfg.train.seed + 2)  # the sampler's draws
    replay = ReplayBuffer(sp.replay_capacity, sp.replay_max_age) if sp.replay_fraction > 0 else None
    env_kw = env_knobs(cfg)[0] if cfg.task.source == "env" else None  # multi-turn episodes
    gd = cfg.guidance
    guide = GUIDES[gd.strategy] if gd.strategy else None
    traces = TraceStore(gd.traces_per_prompt) if guide is not None else None
    rollouts_total = 0  # completions generated so far, dropped ones included
    if cfg.scale.shard == "fsdp":  # after the reference's copy, before the optimizer (it takes shards)
        shard_policy(model, learners.world, device)
    sharded = is_sharded(model)
    o = cfg.optim
    fused = device.type in ("cpu", "cuda")  # one kernel over all parameters (CPU: 0.6 vs 3.8 ms/step)
    opt = torch.optim.AdamW(
        model.parameters(), lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay, fused=fused
    )
    critic, critic_opt = None, None
    if cfg.critic.enabled:  # a value model beside the policy, with its own optimizer
        critic = ValueModel(base_path, device=device)
        critic_opt = torch.optim.AdamW(
            critic.parameters(),
            lr=cfg.critic.lr,
            betas=(o.beta1, o.beta2),
            weight_decay=o.weight_decay,
            fused=fused,
        )
    gen = torch.Generator(device=device).manual_seed(cfg.train.seed)
    cpu_gen = torch.Generator().manual_seed(cfg.train.seed + 1)  # mini-batch shuffling
    sc = cfg.scale
    source = None  # rollouts on Ray workers or across the learner ranks; None: `generate` here
    if sc.workers or learners.world > 1:
        source = RolloutSource(learners, gen, remote=sc.workers > 0)
        if sc.workers and main:  # rank 0 drives the workers and shares their rollouts
            source.start_workers(
                str(ckpt or base_path),
                sc.workers,
                threads=sc.worker_threads,
                device=str(device),
                address=sc.ray_address or None,
            )
    ahead: deque[tuple[list[Problem], Any]] = deque()  # asynchronous: (problems, their generation)
    start = 0
    kl_coef, ref_step = cfg.algo.beta, 0  # the adaptive coefficient and the last reference reset
    metrics_path = run_dir / "metrics.jsonl"
    if st is not None:
        kl_coef, ref_step = float(st.get("kl_coef", kl_coef)), int(st.get("ref_step", 0))
        if critic is not None:
            critic.load_state_dict(st["critic"])
            critic_opt.load_state_dict(st["critic_optimizer"])  # type: ignore[union-attr]
        if sharded:  # the full state, keyed by parameter name: each rank keeps its shards
            load_optimizer_state(model, opt, st["optimizer"])
        else:
            opt.load_state_dict(st["optimizer"])
        gen.set_state(st["generator"])
        cpu_gen.set_state(st["cpu_generator"])
        torch.set_rng_state(st["torch_rng"])
        task.load_state_dict(st["task"])
        rollouts_total = int(st.get("rollouts_total", 0))
        if "sample_rng" in st:
            sample_rng.bit_generator.state = st["sample_rng"]
        if stats is not None:
            stats.load_state_dict(st["prompt_stats"])
        if replay is not None and "replay" in st:
            replay.load_state_dict(st["replay"])
        if traces is not None and "traces" in st:
            traces.load_state_dict(st["traces"])
        start = int(st["step"])
        ahead.extend((probs, Ready(x)) for probs, x in st.get("ahead", []))
        if main and metrics_path.exists():  # drop metrics of steps after the checkpoint
            kept = [
                ln
                for ln in metrics_path.read_text().splitlines()
                if ln.strip() and json.loads(ln)["step"] <= start
            ]
            atomic_write_text(metrics_path, "".join(ln + "\n" for ln in kept))
        console.print(f"resuming {run_dir} from {ckpt.name}")
    elif main:
        atomic_write_text(run_dir / "config.toml", cfg.to_toml())
        metrics_path.unlink(missing_ok=True)
        (run_dir / "samples.jsonl").unlink(missing_ok=True)

    console.print(f"run dir: {run_dir}  device: {device}  model: {base_path}")
    before_path = run_dir / "eval_before.json"
    do_before = cfg.eval.before and main and not before_path.exists()
    if sharded:  # every rank gathers the weights for rank 0's evaluation
        do_before = broadcast(do_before, learners)
    if do_before:
        with gathered(model):
            if main:
                before = _eval(
                    model if ckpt is None else load_model(base_path, device=device)[0],
                    tokenizer,
                    task.heldout,
                    cfg,
                    "eval (base)",
                    progress,
                    verifier,
                )
                atomic_write_text(before_path, json.dumps(_eval_record(before)))
                console.print(_fmt_eval("base", before.summary()))

    r, b, g = cfg.rollout, cfg.rollout.prompts_per_step, cfg.rollout.samples_per_prompt
    columns = [
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "reward {task.fields[reward]:.3f} acc {task.fields[acc]:.3f} len {task.fields[len]:.1f}"
        ),
        TimeElapsedColumn(),
    ]
    tb = None
    if cfg.train.tensorboard and main:  # events after the checkpoint of a resumed run are purged
        from torch.utils.tensorboard import SummaryWriter

        tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start + 1)
    wb = _wandb_run(cfg, run_dir) if cfg.train.wandb_project and main else None
    streak = 0  # steps in a row whose update was skipped (non-finite)

    def run_round(
        problems: list[Problem],
        picked: Any,
        guides: list[Guide] | None,
        counts: Any = None,
        pending: Any = None,
    ) -> _Round:
        return _round(
            model,
            tokenizer,
            problems,
            picked,
            cfg,
            gen,
            runner,
            verifier,
            kv,
            shapers,
            guides,
            counts,
            env_kw,
            source,
            step - 1,  # the weights' version: updates applied before this step
            pending,
            steps,
        )

    sampler_in = {"group_size": g} if "group_size" in sampler.needs else {}  # type: ignore[attr-defined]

    stop_signal: list[int] = []  # SIGINT / SIGTERM received: finish the step, checkpoint, stop
    with (
        _stop_on_signals(stop_signal),
        Progress(*columns, console=console, disable=not progress) as bar,
    ):
        job = bar.add_task(
            "train",
            total=cfg.train.steps,
            completed=start,
            reward=math.nan,
            acc=math.nan,
            len=math.nan,
        )
        for step in range(start + 1, cfg.train.steps + 1):
            t0 = time.perf_counter()
            for grp in opt.param_groups:
                grp["lr"] = lr_at(
                    step,
                    lr=o.lr,
                    total=cfg.train.steps,
                    warmup=o.warmup_steps,
                    schedule=o.schedule,
                    min_ratio=o.min_lr_ratio,
                )
            rounds: list[_Round] = []
            kept: list[tuple[int, int]] = []  # (round, group) of the groups that will train
            dropped: list[tuple[int, int]] = []  # groups whose rewards were all equal
            if replay is not None:  # rollout replay: part of the batch from recent groups
                old = replay.sample(round(sp.replay_fraction * b), step, sample_rng)
                if old:
                    rounds.append(_replayed_round(old, device))
                    kept = [(0, j) for j in range(len(old))]
            fresh = b - len(kept)  # prompts to generate for in each round
            swaps: dict[tuple[int, int], tuple[int, int]] = {}  # failed group -> its guided re-roll
            for _rnd in range(sp.max_rounds if sp.dynamic_sampling else 1):
                counts = None  # samples per prompt, when the sampler allocates them (knapsack)
                waiting = None  # asynchronous: this step's rollouts, started during an earlier step
                if ahead:
                    (problems, waiting), picked = ahead.popleft(), None
                elif pool is None:
                    problems, picked = task.next(fresh), None
                else:
                    picked = sampler(stats, fresh, step, sample_rng, **sampler_in, **sp.knobs)
                    if isinstance(picked, tuple):
                        picked, counts = picked  # [b'] pool indices, [b'] rollouts each
                    problems = [pool[i] for i in picked]
                rounds.append(run_round(problems, picked, None, counts, waiting))
                base = len(rounds) - 1
                if guide is not None:  # groups that all failed: re-roll them with guidance
                    swaps.update(_guide_failed(rounds, base, guide, gd, traces, sample_rng, run_round))
                for j in range(fresh):
                    rnd, jj = swaps.get((base, j), (base, j))
                    x = rounds[rnd]
                    grid = x.rewards[x.group(jj)].view(1, -1).numpy()  # [1, G]
                    keep = informative_groups(grid)[0] if sp.dynamic_sampling else True
                    (kept if keep else dropped).append((rnd, jj))
                if len(kept) >= b:
                    break
            filled = max(0, b - len(kept))  # still short after max_rounds: train on dropped groups
            kept = (kept + dropped[len(dropped) - filled :])[:b]
            t_gen = sum(x.gen_time for x in rounds)
            batch = _assemble(rounds, kept)
            roll, problems, texts = batch.roll, batch.problems, batch.texts
            parts, correct, rewards, raw = batch.parts, batch.correct, batch.rewards, batch.raw
            sizes = [batch.size(j) for j in range(len(problems))]  # [B] samples per group
            fails: dict[str, int] = {}
            for x in rounds:
                for name, c in x.fails.items():
                    fails[name] = fails.get(name, 0) + c
            generated = sum(len(x.texts) for x in rounds if not x.replayed)
            rollouts_total += generated
            if replay is not None:
                _remember(replay, rounds, kept, step)
            if traces is not None:
                _remember_traces(traces, rounds)
            roll = roll.to(device)
            # asynchronous: start the next steps' rollouts with the current weights, then learn
            while source is not None and len(ahead) < min(sc.staleness, cfg.train.steps - step):
                nxt = task.next(b)
                ids, k = prompt_ids(tokenizer, nxt, g)
                knobs = gen_knobs(cfg, tokenizer)
                with _autocast(cfg, device):
                    ahead.append(
                        (nxt, source.submit(model, ids, num_samples=k, version=step - 1, **knobs))
                    )
            off_policy = {}  # staleness and importance-weight statistics of asynchronous rollouts
            if sc.staleness:
                with _autocast(cfg, device):
                    off_policy = _correct_stale(model, roll, step - 1, sc.is_cap, r.temperature)
            rows_in = (roll.prompt_ids, roll.prompt_mask, roll.completion_ids, roll.attention)
            if ref is not None:  # each learner rank runs its share of the rows
                with torch.no_grad(), _autocast(cfg, device):
                    roll.ref_logp = split_rows(
                        lambda *x: sequence_logp(ref, *x, temperature=r.temperature)[0],
                        rows_in,
                        learners,
                    )  # [N, T]
            if critic is not None:
                with torch.no_grad():
                    roll.values = split_rows(critic, rows_in, learners)  # [N, T]
            scored = roll.rewards  # [N] what the advantage sees
            kl_seen = None  # mean per-token KL to the reference, when measured
            if ref is not None and cfg.algo.kl_in == "reward" and kl_coef > 0:
                tok_kl = comps.kl(roll.old_logp, roll.ref_logp) * roll.mask  # [N, T]
                scored = roll.rewards - kl_coef * tok_kl.sum(-1)  # [N] KL inside the reward
                kl_seen = float(tok_kl.sum() / roll.mask.sum().clamp(min=1))
            returns = scored[:, None] * roll.mask  # [N, T] value targets: the outcome, undiscounted
            adv, returns = _advantages(comps, roll, scored, returns, sizes, reward_weights)
            if stats is not None:  # every rolled-out group, dropped ones too, updates the tracker
                _track(stats, rounds, kept, adv, roll.mask, sizes, step)
            t_learn = time.perf_counter()
            learn = _learn(
                model, opt, roll, adv, comps, cfg, cpu_gen, sizes, kl_coef=kl_coef, learners=learners
            )
            if critic is not None:
                learn.update(_learn_critic(critic, critic_opt, roll, returns, cfg))  # type: ignore[arg-type]
            if kl_seen is not None:
                learn["kl"] = kl_seen
            learn["kl_coef"] = kl_coef  # the coefficient this step used
            algo = cfg.algo
            if algo.kl_target > 0 and "kl" in learn:
                kl_coef = adaptive_kl_coef(
                    kl_coef, learn["kl"], target=algo.kl_target, horizon=algo.kl_horizon, n=len(roll)
                )
            if ref is not None and algo.ref_reset_every and step % algo.ref_reset_every == 0:
                weights = full_weights(model, everywhere=True) if sharded else model.state_dict()
                ref.load_state_dict(weights)  # ProRL: the current policy is the new anchor
                ref_step = step
                if main:
                    saved = drop_aliases(model, weights) if sharded else None
                    _save_reference(run_dir, step, model, tokenizer, weights=saved)
            step_time = time.perf_counter() - t0
            zero_var = [
                (grid.std(dim=1) == 0) if s > 1 else torch.ones(grid.shape[0], dtype=torch.bool)
                for s, _, rows in _buckets(sizes)
                for grid in [(rewards if rows is None else rewards[rows]).view(-1, s)]  # [B_s, s]
            ]
            m = {
                "step": step,
                "reward_mean": float(rewards.mean()),
                "accuracy": float(correct.mean()),
                **{f"reward/{name}": float(parts[:, k].mean()) for k, name in enumerate(runner.names)},
                **({"reward_raw_mean": float(raw.mean())} if shapers else {}),
                "reward_failures": sum(fails.values()),
                "rollouts": generated,
                "rollouts_total": rollouts_total,
                **(
                    {
                        "sampling_rounds": sum(1 for x in rounds if not x.replayed and x.guides is None),
                        "groups_dropped": len(dropped) - filled,
                        "sampling_filled": filled,
                    }
                    if sp.dynamic_sampling
                    else {}
                ),
                **{f"reward_failures/{name}": c for name, c in fails.items()},
                **(
                    {"replayed_groups": sum(1 for rnd, _ in kept if rounds[rnd].replayed)}
                    if replay is not None
                    else {}
                ),
                **(_guide_metrics(rounds, kept, swaps, g) if guide is not None else {}),
                **_episode_info(rounds),
                **({"group_size_min": min(sizes), "group_size_max": max(sizes)} if sampler_in else {}),
                # token-level advantages: the spread over counted tokens only
                "adv_std": float(adv.std() if adv.dim() == 1 else adv[roll.mask > 0].std()),
                "zero_var_frac": float(torch.cat(zero_var).float().mean()),
                "response_length": float(roll.lengths.float().mean()),
                "truncated_frac": roll.finish.count("length") / len(roll),
                "tokens_per_s": sum(float(x.roll.lengths.sum()) for x in rounds) / max(t_gen, 1e-9),
                "gen_time": t_gen,
                "learn_time": time.perf_counter() - t_learn,
                "step_time": step_time,
                "lr": opt.param_groups[0]["lr"],
                **off_policy,
                **({"worker_restarts": source.restarts} if source is not None and sc.workers else {}),
                **learn,
            }
            if cfg.eval.every and step % cfg.eval.every == 0 and step < cfg.train.steps:
                with gathered(model):  # sharded: every rank gathers, rank 0 evaluates
                    if main:
                        mid = _eval(
                            model, tokenizer, task.heldout, cfg, f"eval (step {step})", False, verifier
                        )
                        m.update({f"heldout_{k}": v for k, v in mid.summary().items() if "_ci" not in k})
                        model.train()
            if main:  # to disk at each checkpoint, the lines a resume keeps
                append_jsonl(metrics_path, m, sync=False)
            scalars = {
                k: v
                for k, v in m.items()
                if k != "step" and isinstance(v, int | float) and math.isfinite(v)
            }
            if tb is not None:
                _tb_scalars(tb, scalars, step)
            if wb is not None:
                wb.log(scalars, step=step)
            if main and (step % cfg.train.samples_every == 0 or step == 1):
                for j, i in enumerate(sl.start for sl in _group_rows(sizes)):  # first of each group
                    append_jsonl(
                        run_dir / "samples.jsonl",
                        {
                            "step": step,
                            "question": problems[j].question,
                            "answer": problems[j].answer,
                            "completion": texts[i],
                            "reward": float(rewards[i]),
                            "reward_parts": {
                                name: float(parts[i, k]) for k, name in enumerate(runner.names)
                            },
                        },
                    )
            bar.update(
                job, advance=1, reward=m["reward_mean"], acc=m["accuracy"], len=m["response_length"]
            )
            if step % cfg.train.log_every == 0:
                bar.console.print(
                    f"step {step:5d}  reward {m['reward_mean']:.3f}  acc {m['accuracy']:.3f}  "
                    f"len {m['response_length']:.1f}  entropy {m.get('entropy', math.nan):.3f}  "
                    f"clip {m.get('clip_frac', 0.0):.3f}  {m['step_time'] * 1000:.0f} ms/step"
                    + (f"  held-out pass@1 {m['heldout_pass@1']:.3f}" if "heldout_pass@1" in m else "")
                )
            if m.get("skipped_updates"):
                streak += 1
                bar.console.print(
                    f"[yellow]step {step}: non-finite loss {m.get('nonfinite_loss')} / gradient norm "
                    f"{m.get('nonfinite_grad_norm')}; update skipped ({streak} in a row)"
                )
                limit = cfg.train.max_nonfinite_steps
                if limit and streak >= limit:
                    last = latest_checkpoint(run_dir)
                    raise NonFiniteError(
                        f"{streak} steps in a row (up to step {step}) had a non-finite loss or "
                        f"gradient; stopped. Newest checkpoint, from before the first of them: "
                        f"{last if last is not None else 'none (it started before the first one)'}"
                    )
            else:
                streak = 0
            due = step % cfg.train.checkpoint_every == 0 or step == cfg.train.steps
            if streak == 0 and (due or stop_signal):  # never a checkpoint inside a non-finite streak
                ahead = deque((probs, Ready(w.result())) for probs, w in ahead)  # every rank waits
                state = {
                    "step": step,
                    "optimizer": full_optimizer_state(model, opt) if sharded else opt.state_dict(),
                    "generator": gen.get_state(),
                    "cpu_generator": cpu_gen.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "task": task.state_dict(),
                    "rollouts_total": rollouts_total,
                    "sample_rng": sample_rng.bit_generator.state,
                    **({"prompt_stats": stats.state_dict()} if stats is not None else {}),
                    **({"replay": replay.state_dict()} if replay is not None else {}),
                    **({"traces": traces.state_dict()} if traces is not None else {}),
                    "kl_coef": kl_coef,
                    "ref_step": ref_step,
                    **({"ahead": [(probs, w.result()) for probs, w in ahead]} if ahead else {}),
                    **(
                        {"critic": critic.state_dict(), "critic_optimizer": critic_opt.state_dict()}  # type: ignore[union-attr]
                        if critic is not None
                        else {}
                    ),
                }
                weights = drop_aliases(model, full_weights(model)) if sharded else None  # on rank 0
                if main:
                    fsync_file(metrics_path)
                    save_checkpoint(
                        run_dir,
                        step,
                        model,
                        tokenizer,
                        state,
                        keep=cfg.train.keep_checkpoints,
                        weights=weights,
                    )
                if tb is not None:  # the events on disk reach at least the newest checkpoint
                    tb.flush()
            if stop_signal:
                raise TrainingInterrupted(stop_signal[0], run_dir, step)
    runner.close()  # the reward workers, if any
    if main and metrics_path.exists():
        fsync_file(metrics_path)
    if source is not None:
        source.close()  # the rollout workers, if any
    final = full_weights(model) if sharded else None  # the trained weights, on rank 0
    close_learners(learners)
    if tb is not None:
        tb.close()
    if wb is not None:
        wb.finish()

    summary: dict[str, Any] = {
        "run_dir": str(run_dir),
        "steps": cfg.train.steps,
        "device": str(device),
        "model": str(base_path),
    }
    if not main:  # the other ranks end here: rank 0 evaluates and writes the summary
        console.quiet = quiet
        return summary
    if final is not None:  # rank 0 evaluates an unsharded copy
        model = load_model(base_path, device=device)[0]
        model.load_state_dict(final)
    if cfg.eval.after:
        after = _eval(model, tokenizer, task.heldout, cfg, "eval (trained)", progress, verifier)
        atomic_write_text(run_dir / "eval_after.json", json.dumps(_eval_record(after)))
        summary["after"] = after.summary()
        console.print(_fmt_eval("trained", after.summary()))
        if before_path.exists():
            before_rec = json.loads(before_path.read_text())
            summary["before"] = before_rec["summary"]
            diff = np.array(mean_pass_at_k(after.correct, after.n, 1)) - np.array(
                mean_pass_at_k(before_rec["correct"], before_rec["n"], 1)
            )
            lo, hi = bootstrap_ci(diff, seed=cfg.train.seed)
            summary["pass@1_gain"] = float(diff.mean())
            summary["pass@1_gain_ci"] = [lo, hi]
            if before_rec["n"] == after.n:  # which problems each model ever solves in n samples
                summary["boundary"] = reasoning_boundary(before_rec["correct"], after.correct)
                ks = summary_ks(summary["after"])
                summary["crossover_k"] = crossover_k(
                    {k: summary["before"][f"pass@{k}"] for k in ks},
                    {k: summary["after"][f"pass@{k}"] for k in ks},
                )
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    summary["report"] = str(write_report(run_dir))
    return summary


def _fmt_eval(label: str, s: dict[str, float]) -> str:
    ks = summary_ks(s)
    body = "  ".join(f"pass@{k} {100 * s[f'pass@{k}']:.1f}%" for k in ks)
    return f"held-out ({label}): {body}  mean length {s['mean_length']:.1f}"
