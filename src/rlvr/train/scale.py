"""Scale-out plumbing for the training loop: learner ranks (torch.distributed) and where rollouts come
from (the local sampler, shards over the learner ranks, or Ray rollout workers).

Learners are data-parallel. Every rank runs the same loop with the same seeds, so every rank picks the
same prompts, scores the same rollouts and computes the same advantages; only the learner's work is
split. Each rank takes a contiguous share of the rows of every mini-batch and back-propagates its part
of the *global* aggregate (its rows' losses embedded in the zero [n_mb, T] tensor of the whole
mini-batch, aggregated with the whole mini-batch's mask). Aggregations are linear in the per-token
loss, so the sum of the ranks' gradients is exactly the gradient of the one-rank loss: token-mean over
the global batch, not a mean of per-rank means. ``allreduce_grads`` sums them; every rank then clips and
steps identically.

Rollouts, when spread out, are sampled with one random stream per row (``stream_seeds``), so the tokens
do not depend on how the prompts were split between ranks or workers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from rlvr.models.lora import is_lora, merged_weights
from rlvr.models.shard import full_weights, gathered, is_sharded
from rlvr.rollout.batch import Rollout
from rlvr.rollout.sampler import generate, stream_seeds

__all__ = [
    "SOLO",
    "Learners",
    "Ready",
    "RolloutSource",
    "allreduce_grads",
    "broadcast",
    "close_learners",
    "gather_objects",
    "init_learners",
    "launch_learners",
    "split_rows",
    "under_launcher",
]


@dataclass(frozen=True)
class Learners:
    """This process's place in the learner group."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Rank 0 writes the run directory, evaluates and drives the rollout workers."""
        return self.rank == 0

    def share(self, start: int, stop: int) -> tuple[int, int]:
        """This rank's contiguous part of rows [start, stop): as even as possible, rank order."""
        n = stop - start
        return start + n * self.rank // self.world, start + n * (self.rank + 1) // self.world


SOLO = Learners()


def under_launcher() -> bool:
    """True in a process that torchrun (or another launcher) started as one rank of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_learners(expected: int, device: torch.device) -> Learners:
    """Join the process group the launcher described in the environment (WORLD_SIZE, RANK,
    MASTER_ADDR, ...): gloo on CPU, NCCL on CUDA. ``expected`` is ``scale.learners``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != expected:
        raise RuntimeError(
            f"scale.learners = {expected} but the launcher started {world} process(es) "
            "(WORLD_SIZE); start with `rlvr train ... scale.learners=N`, which runs torchrun for you"
        )
    if world == 1:
        return SOLO
    if device.type == "cuda":  # one GPU per rank on each node: "cuda" means this rank's
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Learners(dist.get_rank(), dist.get_world_size())


def close_learners(learners: Learners) -> None:
    """Leave the process group (each rank, when its part of the run is over)."""
    if learners.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def launch_learners(argv: Sequence[str], learners: int) -> int:
    """Run ``rlvr <argv>`` as ``learners`` ranks on this machine with torchrun (torch.distributed.run);
    returns its exit status (non-zero when any rank failed: torchrun stops the others)."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={learners}",
        "-m",
        "rlvr.cli",
        *argv,
    ]
    return subprocess.call(cmd)


def allreduce_grads(
    params: Sequence[torch.nn.Parameter], learners: Learners, *scalars: float
) -> list[float]:
    """Sum every parameter's gradient over the ranks, and ``scalars`` with them, in one flat
    all-reduce; returns the summed scalars. A parameter without a gradient on a rank counts as zeros."""
    if learners.world == 1:
        return list(scalars)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat(
        [g.reshape(-1) for g in grads]
        + [torch.tensor(scalars, dtype=grads[0].dtype, device=grads[0].device)]
    )  # [sum of numels + len(scalars)]
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p, g in zip(params, grads, strict=True):
        k = g.numel()
        p.grad = flat[offset : offset + k].view_as(p).clone()
        offset += k
    return flat[offset:].tolist()


def gather_objects(obj: Any, learners: Learners) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if learners.world == 1:
        return [obj]
    out: list[Any] = [None] * learners.world
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: Any, learners: Learners) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if learners.world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def split_rows(fn: Callable[..., Tensor], inputs: Sequence[Tensor], learners: Learners) -> Tensor:
    """``fn(*inputs)`` of N rows, each rank computing its share of the rows and all-gathering the
    rest: the same [N, ...] result on every rank, for 1/M of the work (a frozen reference's or the
    critic's forward over the batch, which every rank needs whole). With one rank, ``fn(*inputs)``."""
    if learners.world == 1:
        return fn(*inputs)
    n = inputs[0].shape[0]
    lo, hi = learners.share(0, n)
    mine = fn(*(x[lo:hi] for x in inputs))  # [hi - lo, ...]
    width = -(-n // learners.world)  # the largest share: shares differ by at most one row
    padded = mine.new_zeros((width, *mine.shape[1:]))  # [width, ...]
    padded[: hi - lo] = mine
    parts = [torch.empty_like(padded) for _ in range(learners.world)]
    dist.all_gather(parts, padded.contiguous())
    sizes = [b - a for a, b in (Learners(r, learners.world).share(0, n) for r in range(learners.world))]
    return torch.cat([part[:k] for part, k in zip(parts, sizes, strict=True)])  # [N, ...]


class Ready:
    """A rollout that is already there (a checkpointed prefetch, or one generated synchronously)."""

    def __init__(self, roll: Rollout) -> None:
        self.roll = roll

    def result(self) -> Rollout:
        return self.roll


class _Shared:
    """Rank 0's pending rollout from the workers, broadcast to the other ranks when it is awaited
    (with one rank, passed through)."""

    def __init__(self, pending: Any, learners: Learners) -> None:
        self.pending, self.learners, self.roll = pending, learners, None

    def result(self) -> Rollout:
        if self.roll is None:
            mine = self.pending.result() if self.pending is not None else None
            self.roll = broadcast(mine, self.learners)
        return self.roll


class _Sharded:
    """Each rank's share of the prompts, generated locally; joined on every rank when awaited (with
    one rank, the only share)."""

    def __init__(self, part: Rollout | None, learners: Learners, pad_id: int) -> None:
        self.part, self.learners, self.pad_id, self.roll = part, learners, pad_id, None

    def result(self) -> Rollout:
        if self.roll is None:
            parts = [p for p in gather_objects(self.part, self.learners) if p is not None]
            self.roll = Rollout.cat(parts, pad_id=self.pad_id)  # pads where one generate puts them
        return self.roll


class RolloutSource:
    """Rollouts spread over Ray workers or over the learner ranks, with per-row random streams.

    With ``remote``, every rank knows that rank 0's Ray workers generate: rank 0 submits to them and
    the other ranks receive the rollout from it; otherwise each rank generates its share of the
    prompts. Each call draws one base seed from ``generator`` (the trainer's sampling generator,
    checkpointed), and row k of prompt j samples with ``stream_seeds(base, [j], [G])``: the same
    tokens however the prompts are split. The workers get the learner's weights before a call whose
    ``version`` (updates applied so far) is newer than theirs; every rollout carries the version that
    generated it.
    """

    def __init__(
        self,
        learners: Learners,
        generator: torch.Generator,
        *,
        remote: bool = False,
    ) -> None:
        self.learners, self.generator = learners, generator
        self.remote = remote  # Ray workers generate (driven by rank 0); else the ranks' shares
        self.pool: Any = None  # rank 0's WorkerPool, from start_workers
        self.owns_ray = False
        self.synced = -1  # the weights version the workers have

    def submit(
        self,
        model: torch.nn.Module,
        prompts: list[list[int]],
        *,
        num_samples: int,
        version: int,
        **gen_kw: Any,
    ) -> Any:
        """Start generating ``num_samples`` completions per prompt; ``.result()`` gives the Rollout."""
        base = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        seeds = stream_seeds(base, range(len(prompts)), [num_samples] * len(prompts))  # N seeds
        lr = self.learners
        if self.remote:
            pending = None
            new_weights = version != self.synced
            # a sharded policy: every rank joins in gathering the full weights for rank 0 to send
            weights = full_weights(model) if new_weights and is_sharded(model) else None
            if lr.main:
                if new_weights and is_lora(model):  # the workers run a plain model: merged
                    weights = {k: v.to("cpu") for k, v in merged_weights(model).items()}
                if new_weights:  # ordered before the generate
                    self.pool.sync(model, version, wait=False, weights=weights)
                pending = self.pool.submit(prompts, num_samples=num_samples, row_seeds=seeds, **gen_kw)
            self.synced = version
            return _Shared(pending, lr)
        lo, hi = lr.share(0, len(prompts))  # this rank's prompts
        part = None
        with gathered(model):  # a sharded policy: whole on every rank, then each decodes its share
            if hi > lo:
                part = generate(
                    model,
                    prompts[lo:hi],
                    num_samples=num_samples,
                    row_seeds=seeds[lo * num_samples : hi * num_samples],
                    **gen_kw,
                )
                part.policy_version = version
        return _Sharded(part, lr, gen_kw["pad_id"])

    def start_workers(
        self,
        model_dir: str,
        workers: int,
        *,
        threads: int = 1,
        device: str = "cpu",
        address: str | None = None,
    ) -> None:
        """Start ``workers`` Ray rollout workers on ``model_dir`` (a local Ray instance unless
        ``address`` names a cluster); the first ``submit`` gives them the learner's weights."""
        from rlvr.rollout.workers import WorkerPool

        try:
            import ray
        except ImportError:
            raise ImportError(
                "scale.workers > 0 needs Ray: pip install ray==2.60.0 (the version rlvr is tested with)"
            ) from None
        self.owns_ray = not ray.is_initialized()  # a Ray started here is shut down by close()
        gpus = None  # Ray's default: one GPU per worker on CUDA
        if device.startswith("cuda") and address is None:  # this machine's GPUs, shared evenly
            gpus = min(1.0, torch.cuda.device_count() / workers)
        self.pool = WorkerPool(
            model_dir, workers, threads=threads, device=device, address=address, num_gpus=gpus
        )

    @property
    def restarts(self) -> int:
        """Rollout workers restarted so far (a worker that died mid-step has its prompts redone)."""
        return int(getattr(self.pool, "restarts", 0))

    def close(self) -> None:
        """Stop the workers, and the local Ray instance if ``start_workers`` started it."""
        if self.pool is not None:
            self.pool.close()
            self.pool = None
            if self.owns_ray:
                import ray

                ray.shutdown()
