"""Ray rollout workers: sharding, weight sync, and replacement of a killed worker."""

from __future__ import annotations

import os
import signal
import sys

import pytest
import torch

from rlvr.rollout import generate
from rlvr.rollout.sampler import stream_seeds
from rlvr.rollout.workers import RolloutWorker, WorkerPool, shard_sizes

PROMPTS = [
    "<|user|>1 + 2 =<|end|><|assistant|>",
    "<|user|>17 - 3 + 5 =<|end|><|assistant|>",
    "<|user|>4 =<|end|><|assistant|>",
    "<|user|>8 + 9 - 2 =<|end|><|assistant|>",
    "<|user|>5 + 5 =<|end|><|assistant|>",
]
G, T = 3, 6
SEEDS = stream_seeds(4, range(len(PROMPTS)), [G] * len(PROMPTS))


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def tok(micro_base):
    from rlvr.models.hf import load_tokenizer

    return load_tokenizer(micro_base)


@pytest.fixture(scope="module")
def prompts(tok):
    return [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]


@pytest.fixture(scope="module")
def pool(ray_session, micro_base):
    p = WorkerPool(micro_base, 2)
    yield p
    p.close()


def _local(model, tok, prompts, seeds=SEEDS):
    return generate(
        model,
        prompts,
        num_samples=G,
        max_new_tokens=T,
        eos_id=tok.eos_token_id,
        pad_id=tok.pad_token_id,
        row_seeds=seeds,
    )


def _assert_same(a, b):
    assert len(a) == len(b)
    for name in ("prompt_ids", "prompt_mask", "completion_ids", "mask", "lengths", "group"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.finish == b.finish
    torch.testing.assert_close(a.old_logp, b.old_logp, rtol=0, atol=1e-5)


def test_shard_sizes():
    assert shard_sizes(5, 2) == [3, 2]
    assert shard_sizes(7, 3) == [3, 2, 2]
    assert shard_sizes(4, 4) == [1, 1, 1, 1]
    assert shard_sizes(2, 4) == [1, 1]  # fewer shards than workers
    assert shard_sizes(0, 3) == []
    for total in range(1, 12):
        for parts in range(1, 6):
            s = shard_sizes(total, parts)
            assert sum(s) == total and max(s) - min(s) <= 1 and len(s) == min(total, parts)


def test_missing_ray_says_how_to_install(micro_base, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install ray==2\.60\.0"):
        WorkerPool(micro_base, 1)


def test_rollout_worker_without_ray(micro_base, micro_model, prompts):
    model, tok = micro_model
    worker = RolloutWorker(str(micro_base))
    assert worker.pid() == os.getpid()
    roll = worker.generate(prompts, num_samples=G, max_new_tokens=T, row_seeds=SEEDS)
    assert roll.policy_version == 0 and roll.completion_ids.device.type == "cpu"
    _assert_same(roll, _local(model, tok, prompts))
    # new weights and a version
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    assert worker.set_weights(model.state_dict(), 7) == 7
    roll = worker.generate(prompts, num_samples=G, max_new_tokens=T, row_seeds=SEEDS)
    assert roll.policy_version == 7
    _assert_same(roll, _local(model, tok, prompts))


def test_one_and_two_workers_give_the_same_rollouts(ray_session, micro_base, micro_model, prompts, pool):
    model, tok = micro_model
    assert len(set(pool.pids())) == 2 and os.getpid() not in pool.pids()
    two = pool.generate(prompts, num_samples=G, row_seeds=SEEDS, max_new_tokens=T)
    one_pool = WorkerPool(micro_base, 1, num_cpus=0)  # the 2 CPUs of this Ray are taken by `pool`
    try:
        pending = one_pool.submit(prompts, num_samples=G, row_seeds=SEEDS, max_new_tokens=T)
        assert len(pending._shards) == 1
        one = pending.result()
    finally:
        one_pool.close()
    _assert_same(one, two)
    _assert_same(two, _local(model, tok, prompts))
    assert two.group.tolist() == [i for i in range(len(PROMPTS)) for _ in range(G)]
    # fewer prompts than workers: one shard, still the rows of those prompts
    sub = pool.generate(prompts[3:4], num_samples=G, row_seeds=SEEDS[3 * G : 4 * G], max_new_tokens=T)
    assert sub.group.tolist() == [0] * G
    for r in range(G):
        n = int(two.lengths[3 * G + r])
        assert int(sub.lengths[r]) == n
        assert sub.completion_ids[r, :n].tolist() == two.completion_ids[3 * G + r, :n].tolist()


def test_sync_sends_weights_and_version(ray_session, micro_model, prompts, pool):
    model, tok = micro_model
    before = pool.generate(prompts, num_samples=G, row_seeds=SEEDS, max_new_tokens=T)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    pool.sync(model, version=5)
    after = pool.generate(prompts, num_samples=G, row_seeds=SEEDS, max_new_tokens=T)
    assert after.policy_version == 5
    _assert_same(after, _local(model, tok, prompts))
    assert not torch.allclose(before.old_logp[:, :1], after.old_logp[:, :1])  # the weights really moved


def test_killed_worker_is_replaced_and_redoes_its_shard(ray_session, micro_model, prompts, pool):
    model, _ = micro_model
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    pool.sync(model, version=9)
    before = pool.generate(prompts, num_samples=G, row_seeds=SEEDS, max_new_tokens=T)
    restarts = pool.restarts
    pids = pool.pids()
    os.kill(pids[1], signal.SIGKILL)
    after = pool.generate(prompts, num_samples=G, row_seeds=SEEDS, max_new_tokens=T)
    assert pool.restarts == restarts + 1
    new = pool.pids()
    assert new[0] == pids[0] and new[1] != pids[1]
    assert after.policy_version == 9  # the replacement got the synced weights and version
    _assert_same(after, before)


def test_restart_limit_raises_and_the_pool_recovers(ray_session, prompts, pool):
    """Runs last: it uses the pool left by the tests above (weights of version 9)."""
    expect = pool.generate(prompts, num_samples=G, row_seeds=SEEDS, max_new_tokens=T)
    restarts, limit = pool.restarts, pool.max_restarts
    pool.max_restarts = 0
    try:
        os.kill(pool.pids()[0], signal.SIGKILL)
        with pytest.raises(RuntimeError, match=r"rollout worker 0 died .* max_restarts=0; last error: "):
            pool.generate(prompts, num_samples=G, row_seeds=SEEDS, max_new_tokens=T)
    finally:
        pool.max_restarts = limit
    assert pool.restarts == restarts
    again = pool.generate(prompts, num_samples=G, row_seeds=SEEDS, max_new_tokens=T)  # replaces it now
    assert pool.restarts == restarts + 1
    _assert_same(again, expect)
    with pytest.raises(ValueError, match="row_seeds has 2 entries but there are 15 rows"):
        pool.submit(prompts, num_samples=G, row_seeds=[1, 2], max_new_tokens=T)
