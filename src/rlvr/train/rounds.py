"""One generation round: sample G completions per prompt (or play G episodes), score and shape them.

:class:`Rounds` is built once per run with everything that does not change during it (the policy, the
sampler's knobs, the reward runner, the shaping, where rollouts are generated); ``Rounds.run`` is called
for every round of every step and returns a :class:`~rlvr.train.batch.Batch`.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import numpy as np
import torch

from rlvr.data.guidance import Guide, apply_guide
from rlvr.data.prompts import format_prompt
from rlvr.data.tasks import Problem
from rlvr.rollout import Rollout, generate
from rlvr.rollout.branch_points import BRANCH_POINTS, boundary_ids
from rlvr.rollout.branching import generate_branched
from rlvr.train.batch import Batch
from rlvr.train.config import Config
from rlvr.train.scale import RolloutSource
from rlvr.train.score import Scorer

__all__ = ["Rounds", "autocast", "branch_knobs", "gen_knobs", "prompt_ids"]


def autocast(cfg: Config, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """``model.dtype`` = 'bfloat16': bfloat16 autocast on ``device`` (float32 weights and optimizer,
    as TRL's bf16 = true); 'float32': nothing."""
    if cfg.model.dtype == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


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


def gen_knobs(cfg: Config, tokenizer: Any, max_new_tokens: int | None = None) -> dict[str, Any]:
    """The sampler's keyword arguments for training rollouts (``max_new_tokens``: the step's cap when
    ``[schedule]`` sets one, else ``rollout.max_new_tokens``)."""
    r = cfg.rollout
    return {
        "max_new_tokens": r.max_new_tokens if max_new_tokens is None else max_new_tokens,
        "eos_id": tokenizer.eos_token_id,
        "pad_id": tokenizer.pad_token_id,
        "temperature": r.temperature,
        "top_p": r.top_p,
    }


def branch_knobs(cfg: Config, step: int) -> dict[str, Any] | None:
    """The knobs of :func:`~rlvr.rollout.branching.generate_branched` when step ``step`` samples its
    groups as trees (``rollout.branching``, up to ``rollout.branch_steps``); None: i.i.d. groups."""
    r = cfg.rollout
    if not r.branching or (r.branch_steps and step > r.branch_steps):
        return None
    return {
        "points": r.branching,
        "roots": r.branch_roots,
        "width": r.branch_width,
        "top_k": r.branch_top_k,
        "threshold": r.branch_threshold,
        "max_prob": r.branch_max_prob,
        "explore": r.branch_explore,
        "depth": r.branch_depth,
    }


class Rounds:
    """Generates and scores the rounds of a run's steps (built once per run).

    Rollouts come from ``generate`` here with the run's sampling generator, from a
    :class:`~rlvr.train.scale.RolloutSource` (Ray workers, or shards over the learner ranks), or, for
    ``task.source = 'env'``, from multi-turn episodes played here. ``critic``: the run's critic,
    whose values guide a branch-point rule that needs them (``rollout.branching = 'value'``).
    """

    def __init__(
        self,
        cfg: Config,
        model: Any,
        tokenizer: Any,
        scorer: Scorer,
        generator: torch.Generator,
        source: RolloutSource | None = None,
        critic: Any = None,
    ) -> None:
        from rlvr.train.setup import env_knobs

        self.cfg, self.model, self.tokenizer, self.scorer = cfg, model, tokenizer, scorer
        self.generator, self.source = generator, source
        self.env = env_knobs(cfg)[0] if cfg.task.source == "env" else None  # the environment's knobs
        self.g = cfg.rollout.samples_per_prompt
        self.max_new_tokens = cfg.rollout.max_new_tokens  # the step's cap ([schedule] may change it)
        r = cfg.rollout  # the tokens that end a step, for a branch-point rule that needs them
        needs_steps = bool(r.branching) and "step_ids" in BRANCH_POINTS.needs(r.branching)
        self.step_ids = boundary_ids(tokenizer, r.branch_delimiter) if needs_steps else []
        # the critic's forward, for a branch-point rule that reads values (none for another rule)
        needs_values = bool(r.branching) and "values" in BRANCH_POINTS.needs(r.branching)
        self.value_fn = critic if needs_values else None

    def source_metrics(self) -> dict[str, float]:
        """The Ray workers' restarts so far (none without workers)."""
        if self.source is not None and self.cfg.scale.workers:
            return {"worker_restarts": self.source.restarts}
        return {}

    def close(self) -> None:
        """Stop the rollout workers, if any."""
        if self.source is not None:
            self.source.close()

    def submit(self, problems: list[Problem], version: int) -> Any:
        """Start generating ``problems`` on the rollout source (asynchronous rollouts): the pending
        rollout, whose ``result()`` a later step's round takes."""
        ids, k = prompt_ids(self.tokenizer, problems, self.g)
        knobs = gen_knobs(self.cfg, self.tokenizer, self.max_new_tokens)
        with autocast(self.cfg, next(self.model.parameters()).device):
            return self.source.submit(self.model, ids, num_samples=k, version=version, **knobs)  # type: ignore[union-attr]

    def run(
        self,
        problems: list[Problem],
        *,
        picked: np.ndarray | None = None,
        guides: list[Guide] | None = None,
        counts: list[int] | None = None,
        pending: Any = None,
        step: int = 1,
    ) -> Batch:
        """G completions (``counts[j]`` with a knapsack allocation) of each problem, scored (CPU).

        ``guides`` (one per problem): hints added to the question and prefixes that start the reply;
        a prefix is on the prompt side (masked from the loss) and the rewards score prefix + completion.
        ``pending``: a generation already started for these problems (asynchronous rollouts).
        ``step``: the training step; the generating weights have had ``step - 1`` updates.
        """
        model, tokenizer, b, g = self.model, self.tokenizer, len(problems), self.g
        version = step - 1  # the weights' version: updates applied before this step
        sizes = [int(c) for c in counts] if counts is not None else [g] * b
        t0 = time.perf_counter()
        sample_meta, episodes = None, {}
        precision = autocast(self.cfg, next(model.parameters()).device)
        if self.env is not None:
            with precision:
                roll, texts, sample_meta, episodes = self._play(problems)
            gen_time = time.perf_counter() - t0
        else:
            model.eval()
            if pending is not None:
                roll = pending.result()
            else:
                ids, num_samples = prompt_ids(tokenizer, problems, g, guides, counts)
                knobs = gen_knobs(self.cfg, tokenizer, self.max_new_tokens)
                tree = branch_knobs(self.cfg, step)
                with precision:
                    if tree is not None:  # one prompt row per problem, grown into sizes[j] rows
                        ids = ids if counts is None else prompt_ids(tokenizer, problems, g, guides)[0]
                        roll = generate_branched(
                            model,
                            ids,
                            sizes,
                            generator=self.generator,
                            step_ids=self.step_ids,
                            value_fn=self.value_fn,
                            **tree,
                            **knobs,
                        )
                    elif self.source is None:
                        roll = generate(
                            model, ids, num_samples=num_samples, generator=self.generator, **knobs
                        )
                    else:
                        roll = self.source.submit(
                            model, ids, num_samples=num_samples, version=version, **knobs
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
        raw, correct, fails = self.scorer.score(
            problems, roll, texts, sizes, policy=(model, tokenizer), sample_meta=sample_meta
        )
        return Batch(
            problems=problems,
            roll=roll,
            texts=texts,
            raw=raw,
            correct=correct,
            sizes=sizes,
            picked=picked,
            guides=guides,
            failures=fails,
            gen_time=gen_time,
            step=step,
            episodes=episodes,
        )

    def greedy(self, problems: list[Problem]) -> tuple[torch.Tensor, float]:
        """One greedy (argmax) completion per problem, generated here with the current weights and
        scored by the run's rewards as groups of one -> (rewards [B] after shaping, seconds). Draws
        no random numbers; the completions are not trained on (ReMax's baseline)."""
        model, tokenizer = self.model, self.tokenizer
        t0 = time.perf_counter()
        ids, _ = prompt_ids(tokenizer, problems, 1)
        knobs = gen_knobs(self.cfg, tokenizer, self.max_new_tokens) | {"temperature": 0.0}
        model.eval()
        with autocast(self.cfg, next(model.parameters()).device):
            roll = generate(model, ids, num_samples=1, **knobs)
        model.train()
        texts = roll.texts(tokenizer)
        self.scorer.score(problems, roll, texts, [1] * len(problems), policy=(model, tokenizer))
        return roll.rewards.cpu(), time.perf_counter() - t0  # type: ignore[union-attr]

    def _play(
        self, problems: list[Problem]
    ) -> tuple[Rollout, list[str], list[dict[str, Any]], dict[str, float]]:
        """G multi-turn episodes per problem, batched (rlvr.envs.run_episodes) -> (roll with the turn
        fields, transcripts, per-episode {env_return, env_success} for the rewards, episode metrics)."""
        from rlvr.envs import episode_metrics, make_env, run_episodes

        r, g, model = self.cfg.rollout, self.g, self.model
        model.eval()
        ep = run_episodes(
            model,
            self.tokenizer,
            [make_env(p, **self.env) for p in problems for _ in range(g)],  # type: ignore[arg-type]
            [int(p.meta.get("seed", 0)) for p in problems for _ in range(g)],
            group=torch.arange(len(problems)).repeat_interleave(g),  # [N]
            max_turns=r.max_turns,
            max_new_tokens=self.max_new_tokens,
            max_episode_tokens=r.max_episode_tokens or 2**31,
            temperature=r.temperature,
            top_p=r.top_p,
            generator=self.generator,
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
