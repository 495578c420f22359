"""Rollout workers as Ray actors: a pool that shards a batch of prompts over processes or machines.

Each worker holds its own copy of the policy and samples with per-row seed streams
(:func:`rlvr.rollout.sampler.stream_seeds`), so the rollouts of a batch are the same however it is
split: the pool gives what one :func:`~rlvr.rollout.sampler.generate` over all prompts with the same
``row_seeds`` gives (tokens equal, ``old_logp`` up to float rounding of the forward).

    pool = WorkerPool(model_dir, num_workers=4)
    pool.sync(policy, version=step)                  # one ray.put, every worker loads it
    pending = pool.submit(prompts, num_samples=G, row_seeds=stream_seeds(seed, range(B), [G] * B))
    roll = pending.result()                          # Rollout, N = B * G rows, prompt order

A worker that dies (its process killed, its node lost) is replaced at ``result()``: the new actor gets
the last synced weights and version and redoes the lost shard, at most ``max_restarts`` times per call.
:class:`RolloutWorker` is a plain class, usable without Ray.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from rlvr.models.hf import load_model, load_tokenizer
from rlvr.rollout.batch import Rollout
from rlvr.rollout.sampler import generate

__all__ = ["PendingRollouts", "RolloutWorker", "WorkerPool", "shard_sizes"]

_RAY_HINT = "the Ray rollout workers need the ray package: pip install ray==2.60.0"


def _ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise ImportError(_RAY_HINT) from err
    return ray


class RolloutWorker:
    """One copy of the policy that samples rollouts; ``WorkerPool`` runs it as a Ray actor."""

    def __init__(self, model_dir: str, *, threads: int = 1, device: str = "cpu") -> None:
        torch.set_num_threads(threads)
        self.model, self.tokenizer = load_model(model_dir, device=device)
        self.model.eval()
        self.version = 0

    def set_weights(self, state: dict[str, Tensor], version: int) -> int:
        """Load a full state dict (any device) and tag later rollouts with ``version``; returns it."""
        self.model.load_state_dict(state, strict=True)
        self.version = int(version)
        return self.version

    def generate(self, prompts: Sequence[Sequence[int]], **kw: Any) -> Rollout:
        """:func:`rlvr.rollout.sampler.generate` on this worker's model; CPU tensors, ``policy_version``
        the version of the weights. ``eos_id`` and ``pad_id`` default to the tokenizer's."""
        kw.setdefault("eos_id", self.tokenizer.eos_token_id)
        kw.setdefault("pad_id", self.tokenizer.pad_token_id)
        roll = generate(self.model, prompts, **kw).to("cpu")
        roll.policy_version = self.version
        return roll

    def pid(self) -> int:
        return os.getpid()


def shard_sizes(total: int, parts: int) -> list[int]:
    """``total`` items in ``min(parts, total)`` contiguous shards as even as possible (larger first)."""
    k = min(parts, total)
    return [total // k + (1 if i < total % k else 0) for i in range(k)] if k else []


@dataclass
class _Shard:
    worker: int  # index in the pool
    prompts: list[list[int]]
    kw: dict[str, Any]  # generate keywords, row_seeds sliced to this shard
    ref: Any = None  # ObjectRef of the Rollout
    actor: Any = None  # the actor it was sent to


class PendingRollouts:
    """The shards of one ``WorkerPool.submit``; ``result()`` waits for them and joins them."""

    def __init__(self, pool: WorkerPool, shards: list[_Shard], pad_id: int) -> None:
        self._pool = pool
        self._shards = shards
        self._pad_id = pad_id

    def result(self) -> Rollout:
        """The Rollout of all prompts, rows in prompt order (group ids 0..B-1), as one ``generate``
        over all prompts would give. Shards of dead workers are redone on replacement workers, at
        most ``pool.max_restarts`` replacements in this call; then a RuntimeError."""
        ray = _ray()
        restarts = 0
        parts: list[Rollout] = []
        for shard in self._shards:
            while True:
                try:
                    parts.append(ray.get(shard.ref))
                    break
                except ray.exceptions.RayActorError as err:
                    if restarts >= self._pool.max_restarts:
                        raise RuntimeError(
                            f"rollout worker {shard.worker} died and {restarts} restarts in this call "
                            f"reached max_restarts={self._pool.max_restarts}; last error: {err}"
                        ) from err
                    restarts += self._pool._replace(shard.worker, shard.actor)
                    self._pool._send(shard)
        roll = Rollout.cat(parts, pad_id=self._pad_id)  # pads where one generate would put them
        roll.policy_version = min(p.policy_version for p in parts)
        return roll


class WorkerPool:
    """``num_workers`` :class:`RolloutWorker` Ray actors that shard each batch of prompts.

    Starts a local Ray (``num_cpus = max(2, num_workers * cpus per worker)``, no dashboard) only when
    Ray is not initialised yet; with ``address`` it joins that cluster. Each actor reserves
    ``num_cpus`` CPUs (default ``threads``) and ``num_gpus`` GPUs (default 1 on a CUDA device, else 0;
    a fraction shares a GPU). ``max_restarts`` bounds the replacements of dead workers per ``result()``;
    ``restarts`` counts them over the pool's life.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        num_workers: int,
        *,
        threads: int = 1,
        device: str = "cpu",
        address: str | None = None,
        max_restarts: int = 3,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
    ) -> None:
        if num_workers < 1:
            raise ValueError(f"WorkerPool: num_workers must be >= 1, got {num_workers}")
        if threads < 1:
            raise ValueError(f"WorkerPool: threads must be >= 1, got {threads}")
        if max_restarts < 0:
            raise ValueError(f"WorkerPool: max_restarts must be >= 0, got {max_restarts}")
        ray = _ray()
        self.model_dir = str(model_dir)
        self.num_workers = num_workers
        self.threads = threads
        self.device = device
        self.max_restarts = max_restarts
        self.restarts = 0
        cpus = float(threads if num_cpus is None else num_cpus)
        gpus = float((1 if device.startswith("cuda") else 0) if num_gpus is None else num_gpus)
        if not ray.is_initialized():
            if address is None:
                ray.init(
                    num_cpus=max(2, math.ceil(num_workers * cpus)),
                    include_dashboard=False,
                    log_to_driver=False,
                )
            else:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
        # Ray's own restarts are off: the pool replaces a dead actor itself and redoes its shard
        self._actor_cls = ray.remote(RolloutWorker).options(
            num_cpus=cpus, num_gpus=gpus, max_restarts=0, max_task_retries=0
        )
        tok = load_tokenizer(self.model_dir)
        self.eos_id: int = tok.eos_token_id
        self.pad_id: int = tok.pad_token_id
        self._weights: Any = None  # ObjectRef of the last synced CPU state dict
        self.version = 0
        self.workers = [self._start() for _ in range(num_workers)]

    def _start(self) -> Any:
        actor = self._actor_cls.remote(self.model_dir, threads=self.threads, device=self.device)
        if self._weights is not None:
            actor.set_weights.remote(self._weights, self.version)  # runs before any later call
        return actor

    def _replace(self, index: int, dead: Any) -> int:
        """Replace worker ``index`` if it still is the dead actor ``dead`` (another pending batch may
        have replaced it already); returns the number of actors started (0 or 1)."""
        if self.workers[index] is not dead:
            return 0
        ray = _ray()
        with contextlib.suppress(Exception):  # already gone is fine
            ray.kill(dead, no_restart=True)
        self.workers[index] = self._start()
        self.restarts += 1
        return 1

    def _send(self, shard: _Shard) -> None:
        shard.actor = self.workers[shard.worker]
        shard.ref = shard.actor.generate.remote(shard.prompts, **shard.kw)

    def sync(
        self,
        model: torch.nn.Module,
        version: int,
        *,
        wait: bool = True,
        weights: dict[str, Tensor] | None = None,
    ) -> None:
        """Send ``model``'s weights to every worker (one ``ray.put`` of the CPU state dict) and tag
        their later rollouts with ``version``. With ``wait``, block until every worker has loaded
        them, replacing a worker found dead (counted in ``restarts``); without, return at once: an
        actor runs its calls in order, so the next ``submit`` still sees the new weights, and a dead
        worker is replaced by ``result()``. ``weights``: the full state dict to send instead of
        ``model.state_dict()`` (a sharded model's, gathered)."""
        ray = _ray()
        if weights is None:
            weights = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
        # ray.put serialises at once, so later in-place updates of the model do not reach the workers
        self._weights = ray.put(weights)
        self.version = int(version)
        actors = list(self.workers)
        refs = [a.set_weights.remote(self._weights, self.version) for a in actors]
        if not wait:
            return
        for i, (actor, ref) in enumerate(zip(actors, refs, strict=True)):
            try:
                ray.get(ref)
            except ray.exceptions.RayActorError:
                self._replace(i, actor)  # the replacement loads the weights first thing

    def submit(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        num_samples: int,
        row_seeds: Sequence[int],
        **gen_kw: Any,
    ) -> PendingRollouts:
        """Send contiguous shards of the B prompts (one per worker, as even as possible; fewer when
        B < num_workers), each with its slice of ``row_seeds`` (B * num_samples entries); returns at
        once. ``gen_kw`` go to :func:`~rlvr.rollout.sampler.generate` (``max_new_tokens``, ...)."""
        b = len(prompts)
        if b == 0:
            raise ValueError("WorkerPool.submit: no prompts")
        if num_samples < 1:
            raise ValueError(f"WorkerPool.submit: num_samples must be >= 1, got {num_samples}")
        n = b * num_samples
        if len(row_seeds) != n:
            raise ValueError(
                f"WorkerPool.submit: row_seeds has {len(row_seeds)} entries but there are {n} rows "
                f"({b} prompts x {num_samples} samples); expected one seed per row"
            )
        if "generator" in gen_kw:
            raise ValueError("WorkerPool.submit: a torch generator cannot be shared; use row_seeds")
        gen_kw.setdefault("eos_id", self.eos_id)
        gen_kw.setdefault("pad_id", self.pad_id)
        shards, start = [], 0
        for w, size in enumerate(shard_sizes(b, self.num_workers)):
            seeds = [int(s) for s in row_seeds[start * num_samples : (start + size) * num_samples]]
            kw = {**gen_kw, "num_samples": num_samples, "row_seeds": seeds}
            shard = _Shard(worker=w, prompts=[list(p) for p in prompts[start : start + size]], kw=kw)
            self._send(shard)
            shards.append(shard)
            start += size
        return PendingRollouts(self, shards, gen_kw["pad_id"])

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        num_samples: int,
        row_seeds: Sequence[int],
        **gen_kw: Any,
    ) -> Rollout:
        """``submit(...).result()``."""
        return self.submit(prompts, num_samples=num_samples, row_seeds=row_seeds, **gen_kw).result()

    def pids(self) -> list[int]:
        """The process ids of the workers, in pool order."""
        ray = _ray()
        return ray.get([w.pid.remote() for w in self.workers])

    def close(self) -> None:
        """Kill the actors (Ray itself stays up: the caller owns it)."""
        ray = _ray()
        for w in self.workers:
            with contextlib.suppress(Exception):  # already gone is fine
                ray.kill(w, no_restart=True)
        self.workers = []
