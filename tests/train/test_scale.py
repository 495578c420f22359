"""Scale-out: learner ranks (torch.distributed, gloo) give the one-rank update; the config's checks."""

from __future__ import annotations

import re
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rlvr.models.hf import load_model
from rlvr.models.shard import full_weights, gathered, shard_policy
from rlvr.rollout import generate, sequence_logp
from rlvr.train.components import build_components
from rlvr.train.config import ConfigError, load_config
from rlvr.train.learner import Learner
from rlvr.train.scale import SOLO, Learners, allreduce_grads, split_rows

# (overrides, label): the default token-mean, a per-sequence aggregation with several mini-batches and
# micro-batches, and a sequence-level objective with two epochs
CASES = [
    [],
    ["algo.aggregation='seq_mean_token_mean'", "algo.minibatches=2", "algo.micro_batches=2"],
    ["algo.objective='gspo'", "algo.epochs=2", "algo.aggregation='seq_mean_token_mean'"],
]
LABELS = ["token_mean", "minibatches", "gspo_epochs"]


def _setup(path: str, overrides: list[str]):
    """A model, its optimizer, a fixed rollout of 4 prompts x 4 samples and advantages."""
    torch.manual_seed(0)
    cfg = load_config(
        "grpo",
        [
            f"model.path='{path}'",
            "rollout.prompts_per_step=4",
            "rollout.samples_per_prompt=4",
            "optim.lr=0.01",
            *overrides,
        ],
    )
    model, tok = load_model(path)
    model.train()
    prompts = [
        tok(f"{a} + {b} =", add_special_tokens=False)["input_ids"]
        for a, b in [(1, 2), (3, 4), (5, 6), (7, 8)]
    ]
    roll = generate(
        model,
        prompts,
        num_samples=4,
        max_new_tokens=6,
        eos_id=tok.eos_token_id,
        pad_id=tok.pad_token_id,
        generator=torch.Generator().manual_seed(3),
    )
    adv = torch.linspace(-1.0, 1.0, len(roll))  # [N]
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr)  # the update is the gradient itself
    return cfg, model, opt, roll, adv


def _update(rank: int, world: int, path: str, overrides: list[str], *, shard: bool = False):
    """One case's update on this rank's share (the policy sharded by FSDP2 with ``shard``); returns
    the model and the rollout after it, and the update's statistics."""
    cfg, model, opt, roll, adv = _setup(path, overrides)
    if shard:
        shard_policy(model, world, torch.device("cpu"))
        opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr)  # over the shards
    learner = Learner(model, opt, build_components(cfg), cfg, learners=Learners(rank, world))
    stats = learner.update_policy(roll, adv, torch.Generator().manual_seed(1))
    return model, roll, stats


def _chunked_grads(model, roll, rank: int, world: int, *, chunk: int | None) -> dict:
    """Gradients of a sum of this rank's rows' log-probs (rows split over the ranks), full tensors."""
    model.zero_grad(set_to_none=True)
    lo, hi = Learners(rank, world).share(0, len(roll))
    sub = roll.select(torch.arange(lo, hi))
    logp, _ = sequence_logp(
        model,
        sub.prompt_ids,
        sub.prompt_mask,
        sub.completion_ids,
        sub.attention,
        logit_chunk=chunk,
    )  # [m, T]
    ((logp * sub.mask).sum() * world).backward()  # FSDP averages over the ranks: x world is the sum
    return {n: p.grad.full_tensor() for n, p in model.named_parameters()}


def _rank(rank: int, world: int, port: int, path: str, out: str) -> None:
    """Every case of CASES in one process group (one spawn for all of them), plain and sharded."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        for c, overrides in enumerate(CASES):
            model, _, stats = _update(rank, world, path, overrides)
            params = [p.detach().clone() for p in model.parameters()]
            torch.save({"params": params, "stats": stats}, f"{out}.{c}.{rank}")
        # a frozen model's forward split over the ranks' rows and gathered: 16 rows, then 15 (uneven)
        _, model, _, roll, _ = _setup(path, [])
        x = (roll.prompt_ids, roll.prompt_mask, roll.completion_ids, roll.attention)
        with torch.no_grad():
            split = [
                split_rows(
                    lambda *a: sequence_logp(model, *a)[0], [t[:k] for t in x], Learners(rank, world)
                )
                for k in (16, 15)
            ]
        torch.save(split, f"{out}.split.{rank}")
        for c, overrides in enumerate(CASES):
            model, roll, stats = _update(rank, world, path, overrides, shard=True)
            torch.save({"weights": full_weights(model), "stats": stats}, f"{out}.fsdp{c}.{rank}")
        # the chunked head through a sharded root (headless): the plain path's gradients
        grads = {k: _chunked_grads(model, roll, rank, world, chunk=k) for k in (None, 3)}
        with gathered(model):  # ranks decode different numbers of tokens without a collective
            n = generate(
                model,
                [[1, 2]],
                num_samples=1 + 3 * rank,
                max_new_tokens=4 + 4 * rank,
                eos_id=-1,
                pad_id=0,
            )
        torch.save({"grads": grads, "rows": len(n)}, f"{out}.chunk.{rank}")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_learner_ranks_give_the_one_rank_update(micro_base, tmp_path):
    out = str(tmp_path / "rank")
    args = (2, _free_port(), str(micro_base), out)
    mp.start_processes(_rank, args=args, nprocs=2, start_method="spawn")
    for c, (overrides, label) in enumerate(zip(CASES, LABELS, strict=True)):
        cfg, model, opt, roll, adv = _setup(str(micro_base), overrides)
        before = [p.detach().clone() for p in model.parameters()]
        gen = torch.Generator().manual_seed(1)
        solo = Learner(model, opt, build_components(cfg), cfg).update_policy(roll, adv, gen)
        ranks = [torch.load(f"{out}.{c}.{r}") for r in range(2)]
        moved = 0.0
        for k, p in enumerate(model.parameters()):
            for r in ranks:  # both ranks hold the same parameters, equal to the one-rank update
                gap = float((r["params"][k] - p.detach()).abs().max())
                assert gap < 1e-6, (label, k, gap)
            moved = max(moved, float((p.detach() - before[k]).abs().max()))
        assert moved > 1e-4, label  # the update did something
        for key in ("loss", "grad_norm"):  # (entropy is a mean of per-micro-batch means)
            assert ranks[0]["stats"][key] == pytest.approx(solo[key], rel=1e-5, abs=1e-6), (label, key)
        # sharded (FSDP2): rank 0's gathered weights are the one-rank update too
        fsdp = [torch.load(f"{out}.fsdp{c}.{r}") for r in range(2)]
        assert fsdp[1]["weights"] == {}  # gathered to rank 0 only
        named = dict(model.named_parameters())
        assert set(named) <= set(fsdp[0]["weights"])
        for name, p in named.items():
            gap = float((fsdp[0]["weights"][name] - p.detach()).abs().max())
            assert gap < 1e-6, ("fsdp", label, name, gap)
        for key in ("loss", "grad_norm"):
            for r in fsdp:
                assert r["stats"][key] == pytest.approx(solo[key], rel=1e-5, abs=1e-6), (label, key)
    _, model, _, roll, _ = _setup(str(micro_base), [])
    with torch.no_grad():
        whole = sequence_logp(
            model, roll.prompt_ids, roll.prompt_mask, roll.completion_ids, roll.attention
        )[0]
    for r in range(2):
        split = torch.load(f"{out}.split.{r}")
        assert [tuple(t.shape) for t in split] == [tuple(whole.shape), (15, whole.shape[1])]
        assert (
            float((split[0] - whole).abs().max()) < 1e-5
            and float((split[1] - whole[:15]).abs().max()) < 1e-5
        )
    chunk = [torch.load(f"{out}.chunk.{r}") for r in range(2)]
    assert [c["rows"] for c in chunk] == [1, 4]
    for c in chunk:  # the same full gradients on both ranks, with and without the chunked head
        plain, chunked = c["grads"][None], c["grads"][3]
        assert max(float(g.abs().max()) for g in plain.values()) > 0
        for name, g in plain.items():
            assert float((chunked[name] - g).abs().max()) < 1e-5, name
            assert float((chunk[0]["grads"][None][name] - g).abs().max()) < 1e-6, name


def _one_rank_sharded(rank: int, port: int, path: str, device: str, out: str) -> None:
    """The sharding helpers in a one-rank group on ``device`` (NCCL on CUDA): an update, generation
    with the weights gathered, and the gathered weights."""
    torch.set_num_threads(1)
    backend = "nccl" if device == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        cfg, model, _, roll, adv = _setup(path, CASES[1])
        model.to(device)
        shard_policy(model, 1, torch.device(device))
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, fused=True)
        learner = Learner(model, opt, build_components(cfg), cfg, learners=Learners(0, 1))
        stats = learner.update_policy(roll.to(device), adv.to(device), torch.Generator().manual_seed(1))
        with gathered(model):
            after = generate(model, [[1, 2]], num_samples=4, max_new_tokens=6, eos_id=-1, pad_id=0,
                             generator=torch.Generator(device).manual_seed(5))  # fmt: skip
        torch.save(
            {"weights": full_weights(model), "stats": stats, "tokens": after.completion_ids.cpu()}, out
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")),
    ],
)
def test_sharded_helpers_on_each_device(micro_base, tmp_path, device):
    """One FSDP2 rank (gloo on the CPU, NCCL on a GPU): the update (fused AdamW on the shards) and
    the generation that follows equal a plain model's; on the device machine this is the GPU check
    of the sharded path (its one GPU cannot hold two NCCL ranks)."""
    out = str(tmp_path / "one")
    mp.start_processes(
        _one_rank_sharded,
        args=(_free_port(), str(micro_base), device, out),
        nprocs=1,
        start_method="spawn",
    )
    got = torch.load(out)
    cfg, model, _, roll, adv = _setup(str(micro_base), CASES[1])
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, fused=True)
    learner = Learner(model, opt, build_components(cfg), cfg)
    solo = learner.update_policy(roll.to(device), adv.to(device), torch.Generator().manual_seed(1))
    for name, p in model.named_parameters():
        assert float((got["weights"][name] - p.detach().cpu()).abs().max()) < 1e-5, name
    assert got["stats"]["loss"] == pytest.approx(solo["loss"], rel=1e-5, abs=1e-6)
    after = generate(model, [[1, 2]], num_samples=4, max_new_tokens=6, eos_id=-1, pad_id=0,
                     generator=torch.Generator(device).manual_seed(5))  # fmt: skip
    assert torch.equal(got["tokens"], after.completion_ids.cpu())


def test_learner_shares_are_contiguous_and_even():
    assert [Learners(r, 3).share(0, 10) for r in range(3)] == [(0, 3), (3, 6), (6, 10)]
    assert [Learners(r, 2).share(4, 8) for r in range(2)] == [(4, 6), (6, 8)]
    assert SOLO.share(0, 7) == (0, 7) and SOLO.main and not Learners(1, 2).main
    # one rank: nothing to reduce, the scalars come back as they were
    p = torch.nn.Parameter(torch.ones(2))
    assert allreduce_grads([p], SOLO, 1.5, 2.0) == [1.5, 2.0] and p.grad is None


def test_scale_config_errors():
    with pytest.raises(ConfigError, match=re.escape("set scale.workers >= 1")):
        load_config("grpo", ["scale.staleness=1"])
    with pytest.raises(ConfigError, match=re.escape("does not combine with sampling.dynamic_sampling")):
        load_config("grpo", ["scale.workers=1", "scale.staleness=1", "sampling.dynamic_sampling=true"])
    with pytest.raises(ConfigError, match=re.escape("x 'scale.learners' = 3 must divide")):
        load_config("grpo", ["scale.learners=3"])
    with pytest.raises(ConfigError, match=re.escape("'scale.is_cap' = 0.5")):
        load_config("grpo", ["scale.is_cap=0.5"])
    with pytest.raises(ConfigError, match=re.escape("'scale.is_mode' = 'tis': valid names")):
        load_config("grpo", ["scale.is_mode='tis'"])
    with pytest.raises(ConfigError, match=re.escape("'scale.is_low' = 2")):
        load_config("grpo", ["scale.is_low=2.0"])
    assert load_config("grpo", ["scale.is_mode='seq_mask_tis'"]).scale.is_mode == "seq_mask_tis"
    with pytest.raises(ConfigError, match=re.escape("no Ray workers to place")):
        load_config("grpo", ["scale.ray_address='ray://x:10001'"])
    with pytest.raises(ConfigError, match=re.escape("do not combine with task.source = 'env'")):
        load_config("grpo", ["scale.learners=2", "task.source='env'", "task.env='calculator'"])
    with pytest.raises(ConfigError, match=re.escape("set scale.learners >= 2")):
        load_config("grpo", ["scale.shard='fsdp'"])
    with pytest.raises(ConfigError, match=re.escape("'scale.shard' = 'zero3': expected")):
        load_config("grpo", ["scale.shard='zero3'"])
    cfg = load_config("grpo", ["scale.workers=2", "scale.staleness=1"])
    assert (cfg.scale.workers, cfg.scale.staleness, cfg.scale.learners) == (2, 1, 1)
