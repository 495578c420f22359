"""Batch collection: the stages that turn prompts into one step's batch of scored groups.

:class:`Collector` is built once per run and called once per step. Its stages, in order:

1. **replay**: part of the batch from the replay buffer (``sampling.replay_fraction``);
2. **prompts**: the rollouts generating ahead (asynchronous), the task's stream, or a pool sampler
   (``sampling.strategy``; knapsack also sizes the groups);
3. **round**: generate and score (``Rounds.run``);
4. **guidance**: groups whose samples all failed are re-rolled with hints or a solution prefix;
5. **group filters**: groups that fail a filter (``sampling.filters``; dynamic sampling's drops
   groups whose rewards are all equal) are dropped and rounds repeat (``sampling.max_rounds``),
   filling with dropped groups when they run out;
6. **assembly** of the kept groups, then **demonstrations** (only when a component needs ``demo``:
   a worked solution appended to each eligible group as an off-policy row, ``rlvr.train.demos``),
   **baseline** (only when a component needs
   ``greedy_rewards``: one greedy rollout per kept prompt with the current weights, scored and not
   trained on; ReMax), **remember** (replay buffer, solution traces) and **prefetch** (start the
   next steps' rollouts with the current weights).

After the step's advantages are known, :meth:`Collector.observe` feeds every rolled-out group back to
the pool sampler's tracker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rlvr.data.guidance import GUIDES, Guide, TraceStore
from rlvr.data.samplers import GROUP_FILTERS, SAMPLERS, PromptStats
from rlvr.data.tasks import Problem
from rlvr.rollout.replay import ReplayBuffer
from rlvr.train.batch import Batch, group_rows
from rlvr.train.config import Config
from rlvr.train.demos import Demonstrations
from rlvr.train.rounds import Rounds
from rlvr.train.state import TrainState

__all__ = ["Collection", "Collector", "Guidance", "ReplayStage", "prompt_pool"]


def prompt_pool(task: Any, size: int) -> list[Problem]:
    """A finite pool of training prompts: a dataset's training rows (the first ``size`` of them when
    ``size`` > 0), or the first ``size`` problems of a generated task's stream."""
    rows = getattr(task, "train_problems", None)
    if rows is not None:
        return list(rows[:size] if size else rows)
    if not size:
        raise ValueError("a generated task has no finite pool; set sampling.pool_size")
    return task.next(size)


@dataclass
class Collection:
    """One step's collection: the batch that trains, and every round it came from."""

    batch: Batch  # the kept groups, on the learner's device
    rounds: list[Batch]  # every round of the step: replayed groups, generated and guided rounds
    kept: list[tuple[int, int]]  # (round, group) of the groups in ``batch``, in its order
    dropped: int = 0  # groups dropped by dynamic sampling (not filled back)
    filled: int = 0  # dropped groups that trained because the rounds ran out
    generated: int = 0  # completions generated this step
    metrics: dict[str, float] = field(default_factory=dict)  # the stages' own numbers


class ReplayStage:
    """Rollout replay: recent informative groups that later steps train on again."""

    def __init__(self, buffer: ReplayBuffer, fraction: float, rng: np.random.Generator) -> None:
        self.buffer, self.fraction, self.rng = buffer, fraction, rng

    def take(self, b: int, step: int, device: torch.device) -> Batch | None:
        """Up to round(fraction * B) groups young enough at ``step``, as one batch; None if none."""
        old = self.buffer.sample(round(self.fraction * b), step, self.rng)
        return Batch.join(old, device) if old else None

    def remember(self, rounds: list[Batch], kept: list[tuple[int, int]], step: int) -> None:
        """Keep the step's freshly generated, informative training groups (on the CPU); none once
        the fraction is 0 (after policy reincarnation, ``algo.reincarnate_at``)."""
        if self.fraction <= 0:
            return
        for rnd, j in kept:
            x = rounds[rnd]
            rows = x.group(j)
            if x.replayed or float(x.rewards[rows].max() - x.rewards[rows].min()) == 0.0:
                continue
            one = x.groups([j])
            roll = replace(
                one.roll.to("cpu"),
                ref_logp=None,
                values=None,
                entropy=None,
                sum_pi_sq=None,
                teacher_logp=None,
                self_teacher_logp=None,
                self_teacher_entropy=None,
                self_teacher_mask=None,
                greedy_rewards=None,
                seq_hidden=None,
            )  # recomputed (the baseline stage's greedy rewards too: a later step's weights)
            self.buffer.add(
                replace(
                    one, roll=roll, raw=one.raw.cpu(), correct=one.correct.cpu(), guides=None, step=step
                )
            )


class Guidance:
    """Re-rolls of groups whose samples all failed, with guidance of tier 1, 2, ... ``max_tier``
    (``[guidance]``: hints in the question, or a prefix of a known solution)."""

    def __init__(
        self,
        guide: Callable[..., Guide | None],
        max_tier: int,
        knobs: dict[str, Any],
        traces: TraceStore | None,
        rng: np.random.Generator,
    ) -> None:
        self.guide, self.max_tier, self.knobs, self.traces, self.rng = (
            guide,
            max_tier,
            knobs,
            traces,
            rng,
        )

    def rescue(
        self, rounds: list[Batch], rnd: int, run_round: Callable[[list[Problem], list[Guide]], Batch]
    ) -> dict[tuple[int, int], tuple[int, int]]:
        """Re-roll the failed groups of ``rounds[rnd]`` (one generation round per tier for all groups
        still failing). Returns {(rnd, j): (guided round, its group)} for the groups that a guided
        re-roll rescued (some sample correct); the guided rounds are appended to ``rounds``."""
        x = rounds[rnd]
        failing = [j for j in range(len(x.problems)) if float(x.correct[x.group(j)].sum()) == 0.0]
        rescued: dict[tuple[int, int], tuple[int, int]] = {}
        for tier in range(1, self.max_tier + 1):
            todo: list[tuple[int, Guide]] = []
            for j in failing:
                p = x.problems[j]
                known = self.traces.get(p.question) if self.traces else []
                hint = self.guide(p, tier=tier, traces=known, rng=self.rng, **self.knobs)
                if hint is not None:
                    todo.append((j, hint))
            if not todo:
                break
            y = run_round([x.problems[j] for j, _ in todo], [h for _, h in todo])
            rounds.append(y)
            still = []
            for jj, (j, _) in enumerate(todo):
                if float(y.correct[y.group(jj)].sum()) > 0:
                    rescued[(rnd, j)] = (len(rounds) - 1, jj)
                else:
                    still.append(j)
            failing = still
            if not failing:
                break
        return rescued

    def remember(self, rounds: list[Batch]) -> None:
        """Keep this step's successful completions (prefix included) as the prompts' known solutions."""
        if self.traces is None:
            return
        for x in rounds:
            if x.replayed:
                continue
            for j, p in enumerate(x.problems):
                rows = x.group(j)
                for text, ok in zip(x.texts[rows], x.correct[rows].tolist(), strict=True):
                    if ok:
                        self.traces.add(p.question, text)

    @staticmethod
    def metrics(rounds: list[Batch], kept: list[tuple[int, int]]) -> dict[str, float]:
        """Rescued groups that train, their mean tier, rollouts spent on guidance."""
        used = [rounds[rnd].guides[j].tier for rnd, j in kept if rounds[rnd].guides]  # type: ignore[index]
        return {
            "guided_groups": len(used),
            "guide_tier_mean": float(np.mean(used)) if used else 0.0,
            "guide_rollouts": sum(len(x.texts) for x in rounds if x.guides is not None),
        }


class Collector:
    """Collects each step's batch (see the module docstring for the stages)."""

    def __init__(
        self,
        cfg: Config,
        rounds: Rounds,
        state: TrainState,
        device: torch.device,
        needs: frozenset[str] = frozenset(),
    ) -> None:
        """``needs``: the optional inputs of the chosen components (``Components.needs``); the
        baseline stage runs when they include ``greedy_rewards``, the demonstration stage when they
        include ``demo`` or ``demo_group``."""
        sampling, guidance = cfg.sampling, cfg.guidance
        self.cfg, self.rounds, self.state, self.device = cfg, rounds, state, device
        self.greedy = "greedy_rewards" in needs
        self.demos = Demonstrations(cfg, rounds) if {"demo", "demo_group"} & needs else None
        self.b = cfg.rollout.prompts_per_step
        self.task = state.task
        self.pool: list[Problem] | None = None  # the finite prompt pool a sampler picks from
        if sampling.strategy != "uniform" or sampling.pool_size:
            self.pool = prompt_pool(self.task, sampling.pool_size)
            state.prompt_stats = PromptStats(
                len(self.pool), [str(p.meta.get(sampling.category_field, "")) for p in self.pool]
            )
        named = (["informative"] if sampling.dynamic_sampling else []) + sampling.filters
        self.filters = [GROUP_FILTERS[name] for name in dict.fromkeys(named)]  # each once, in order
        self.sampler = SAMPLERS[sampling.strategy]
        self.sizes_groups = "group_size" in self.sampler.needs  # type: ignore[attr-defined]
        self.replay = None
        if sampling.replay_fraction > 0:
            state.replay = ReplayBuffer(
                sampling.replay_capacity, sampling.replay_max_age, Batch.from_state
            )
            self.replay = ReplayStage(state.replay, sampling.replay_fraction, state.sample_rng)  # type: ignore[arg-type]
        self.guidance = None
        if guidance.strategy:
            state.traces = TraceStore(guidance.traces_per_prompt)
            self.guidance = Guidance(
                GUIDES[guidance.strategy],
                guidance.max_tier,
                guidance.knobs,
                state.traces,
                state.sample_rng,  # type: ignore[arg-type]
            )

    def _prompts(
        self, n: int, step: int
    ) -> tuple[list[Problem], np.ndarray | None, list[int] | None, Any]:
        """The next ``n`` prompts -> (problems, pool indices, samples per prompt, pending rollout)."""
        if self.state.ahead:  # asynchronous: this step's rollouts, started during an earlier step
            problems, pending = self.state.ahead.popleft()
            return problems, None, None, pending
        if self.pool is None:
            return self.task.next(n), None, None, None
        sampling = self.cfg.sampling
        extra = {"group_size": self.cfg.rollout.samples_per_prompt} if self.sizes_groups else {}
        picked = self.sampler(
            self.state.prompt_stats, n, step, self.state.sample_rng, **extra, **sampling.knobs
        )
        counts = None
        if isinstance(picked, tuple):
            picked, counts = picked  # [n] pool indices, [n] rollouts each (knapsack)
        return [self.pool[i] for i in picked], picked, counts, None

    def collect(self, step: int) -> Collection:
        """The batch of step ``step`` (1-based)."""
        sampling, b = self.cfg.sampling, self.b
        rounds: list[Batch] = []
        kept: list[tuple[int, int]] = []  # (round, group) of the groups that will train
        dropped: list[tuple[int, int]] = []  # groups that failed a filter
        if self.replay is not None and (old := self.replay.take(b, step, self.device)) is not None:
            rounds.append(old)
            kept = [(0, j) for j in range(len(old.problems))]
        to_generate = b - len(kept)  # prompts to generate for in each round
        rescued: dict[tuple[int, int], tuple[int, int]] = {}  # failed group -> its guided re-roll
        for _ in range(sampling.max_rounds if self.filters else 1):
            problems, picked, counts, pending = self._prompts(to_generate, step)
            rounds.append(
                self.rounds.run(problems, picked=picked, counts=counts, pending=pending, step=step)
            )
            base = len(rounds) - 1
            if self.guidance is not None:

                def guided(problems: list[Problem], guides: list[Guide]) -> Batch:
                    return self.rounds.run(problems, guides=guides, step=step)

                rescued.update(self.guidance.rescue(rounds, base, guided))
            for j in range(to_generate):
                rnd, jj = rescued.get((base, j), (base, j))
                (kept if self._passes(rounds[rnd], jj) else dropped).append((rnd, jj))
            if len(kept) >= b:
                break
        filled = max(0, b - len(kept))  # still short after max_rounds: train on dropped groups
        kept = (kept + dropped[len(dropped) - filled :])[:b]
        batch = Batch.assemble(rounds, kept)
        demos: dict[str, float] = {}
        if self.demos is not None:  # a demonstration row at the end of the eligible groups
            batch, demos = self.demos.attach(batch)
        baseline = self._baseline(batch) if self.greedy else {}
        generated = sum(len(x.texts) for x in rounds if not x.replayed)
        self.state.rollouts_total += generated
        if self.replay is not None:
            self.replay.remember(rounds, kept, step)
        if self.guidance is not None:
            self.guidance.remember(rounds)
        batch = replace(batch, roll=batch.roll.to(self.device))
        self._prefetch(step)
        out = Collection(batch, rounds, kept, len(dropped) - filled, filled, generated)
        out.metrics = self._metrics(out) | baseline | demos
        return out

    def _baseline(self, batch: Batch) -> dict[str, float]:
        """The baseline stage: ``batch.roll.greedy_rewards`` [N], the reward of one greedy rollout
        of each group's prompt (its G rows share it); returns its metrics. Replayed groups get their
        prompt's greedy reward under the current weights too."""
        r, secs = self.rounds.greedy(batch.problems)  # [B]
        sizes = torch.tensor(batch.sizes)
        batch.roll.greedy_rewards = r.repeat_interleave(sizes).to(batch.roll.mask.device)  # [N]
        return {"greedy_reward_mean": float(r.mean()), "greedy_rollouts": len(r), "greedy_time": secs}

    def _passes(self, x: Batch, j: int) -> bool:
        """Whether group ``j`` of round ``x`` passes every group filter (dynamic sampling's too)."""
        if not self.filters:
            return True
        rows = x.group(j)
        supply: dict[str, Callable[[], Any]] = {
            "correct": lambda: x.correct[rows].view(1, -1).cpu().numpy(),  # [1, G]
            "lengths": lambda: x.roll.lengths[rows].view(1, -1).cpu().numpy(),  # [1, G]
            "truncated": lambda: np.array([[f == "length" for f in x.roll.finish[rows]]]),  # [1, G]
            "max_len": lambda: self.rounds.max_new_tokens,
        }
        grid = x.rewards[rows].view(1, -1).cpu().numpy()  # [1, G]
        return all(
            bool(fn(grid, **{k: supply[k]() for k in fn.needs})[0])  # type: ignore[attr-defined]
            for fn in self.filters
        )

    def _prefetch(self, step: int) -> None:
        """Asynchronous rollouts: start the next steps' generation with the current weights."""
        ahead, staleness = self.state.ahead, self.cfg.scale.staleness
        while self.rounds.source is not None and len(ahead) < min(
            staleness, self.cfg.train.steps - step
        ):
            problems = self.task.next(self.b)
            ahead.append((problems, self.rounds.submit(problems, version=step - 1)))

    def observe(self, got: Collection, adv: Tensor, step: int) -> None:
        """Record every rolled-out group of the step in the pool sampler's tracker: successes,
        attempts and, for the groups that trained, their mean absolute advantage (0 for dropped
        groups, whose advantage is 0)."""
        stats = self.state.prompt_stats
        if stats is None:
            return
        mask = got.batch.roll.mask
        per_seq = (
            adv.abs() if adv.dim() == 1 else (adv.abs() * mask).sum(-1) / mask.sum(-1).clamp(min=1)
        )  # [N]
        rows = group_rows(got.batch.sizes)
        abs_adv = {key: float(per_seq[rows[n]].mean()) for n, key in enumerate(got.kept)}
        for rnd, x in enumerate(got.rounds):
            if x.picked is None:
                continue
            for j, i in enumerate(x.picked):
                sl = x.group(j)
                stats.update(
                    int(i),
                    step=step,
                    successes=float(x.correct[sl].sum()),
                    attempts=sl.stop - sl.start,
                    abs_adv=abs_adv.get((rnd, j), 0.0),
                )

    def _metrics(self, got: Collection) -> dict[str, float]:
        """The collection's numbers for metrics.jsonl."""
        rounds = got.rounds
        fails: dict[str, int] = {}
        for x in rounds:
            for name, c in x.failures.items():
                fails[name] = fails.get(name, 0) + c
        m: dict[str, float] = {
            "reward_failures": sum(fails.values()),
            "rollouts": got.generated,
            "rollouts_total": self.state.rollouts_total,
        }
        if self.filters:
            m["sampling_rounds"] = sum(1 for x in rounds if not x.replayed and x.guides is None)
            m["groups_dropped"] = got.dropped
            m["sampling_filled"] = got.filled
        m.update({f"reward_failures/{name}": c for name, c in fails.items()})
        if self.replay is not None:
            m["replayed_groups"] = sum(1 for rnd, _ in got.kept if rounds[rnd].replayed)
        if self.guidance is not None:
            m.update(Guidance.metrics(rounds, got.kept))
        m.update(_episode_metrics(rounds))
        if self.sizes_groups:
            m["group_size_min"], m["group_size_max"] = min(got.batch.sizes), max(got.batch.sizes)
        t_gen = sum(x.gen_time for x in rounds)
        m["tokens_per_s"] = sum(float(x.roll.lengths.sum()) for x in rounds) / max(t_gen, 1e-9)
        m["gen_time"] = t_gen
        return m


def _episode_metrics(rounds: list[Batch]) -> dict[str, float]:
    """Episode metrics of the step's generated rounds, weighted by their episodes."""
    parts = [x.episodes for x in rounds if x.episodes and not x.replayed]
    total = sum(i["episodes"] for i in parts)
    keys = sorted({k for i in parts for k in i} - {"episodes"})
    out = {}
    for k in keys:
        have = [(i[k], i["episodes"]) for i in parts if k in i]
        out[k] = sum(v * w for v, w in have) / sum(w for _, w in have)
    return out if total else {}
