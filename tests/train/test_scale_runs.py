"""Real scale-out runs on the micro model: learner ranks started by torchrun, Ray rollout workers and
asynchronous (one-step-off) rollouts, with exact resume."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tests.faults.forked import run_ranks
from tests.train import golden

from rlvr.cli import main
from rlvr.train.config import load_config
from rlvr.train.trainer import train

ray = pytest.importorskip("ray")

TIMING = {"gen_time", "learn_time", "step_time", "tokens_per_s"}


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for the module; the trainer's pools start and stop their actors in it."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _overrides(micro_base: Path, tmp_path: Path, *extra: str) -> list[str]:
    return golden.scale_overrides(micro_base, tmp_path, *extra)


def _metrics(run: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]


COMPARED = ("reward_mean", "response_length", "loss", "grad_norm", "adv_std")


def _same_steps(rows: list[dict], want: list[dict]) -> None:
    assert len(rows) == len(want) == 3
    for a, b in zip(rows, want, strict=True):
        for key in COMPARED:
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (a["step"], key)


def test_two_learner_ranks_match_one_rollout_worker(micro_base, tmp_path, ray_session):
    """`rlvr train --learners 2` (torchrun, gloo; each rank generates half of the prompts) and a
    one-process run whose rollouts come from a Ray worker sample the same tokens from the same seed
    streams and make the same updates."""
    ov = _overrides(micro_base, tmp_path, "train.steps=3")
    run = ["train", "--quiet", "--learners", "2", "--run-dir", str(tmp_path / "ddp")]
    assert run_ranks([*run, *ov], 2, tmp_path / "logs") == 0
    train(load_config("grpo", [*ov, "scale.workers=1"]), run_dir=tmp_path / "ray", progress=False)
    ddp, one = _metrics(tmp_path / "ddp"), _metrics(tmp_path / "ray")
    golden.check("scale/learners2", tmp_path / "ddp")  # as the loop trained before its redesign
    golden.check("scale/workers1", tmp_path / "ray")
    _same_steps(ddp, one)
    assert all(b["worker_restarts"] == 0 for b in one)
    assert ddp[-1]["grad_norm"] > 0  # the updates did something
    # the ranks' checkpoints are rank 0's: one model, equal to the one-process run's
    w_ddp = torch.load(
        tmp_path / "ddp" / "checkpoints" / "step_3" / "trainer_state.pt", weights_only=False
    )
    assert w_ddp["step"] == 3


def test_learner_ranks_with_a_rollout_worker_match_one_process(micro_base, tmp_path):
    """Both at once: rank 0 drives a Ray worker and shares its rollouts with rank 1; and with the
    policy sharded, rank 0 sends the weights that every rank helped gather. Both make the steps of
    the one-process run with a Ray worker (its golden record:
    test_two_learner_ranks_match_one_rollout_worker checks that run
    against it, so that run is not repeated here)."""
    ov = _overrides(micro_base, tmp_path, "train.steps=3")
    both = ["train", "--quiet", "--learners", "2", "--workers", "1", "--run-dir", str(tmp_path / "both")]
    assert run_ranks([*both, *ov], 2, tmp_path / "logs") == 0
    sharded = [*both[:-1], str(tmp_path / "sharded"), "--shard", "fsdp"]
    assert run_ranks([*sharded, *ov], 2, tmp_path / "logs") == 0
    mixed, fsdp = _metrics(tmp_path / "both"), _metrics(tmp_path / "sharded")
    golden.check("scale/learners2_workers1", tmp_path / "both")
    golden.check("scale/learners2_workers1_fsdp", tmp_path / "sharded")
    one = golden.load_golden()["scale/workers1"]["metrics"]
    _same_steps(mixed, one)
    _same_steps(fsdp, one)
    assert all(r["worker_restarts"] == 0 for r in [*mixed, *fsdp])


def test_sharded_learners_match_plain_ones_and_resume_exactly(micro_base, tmp_path):
    """`--learners 2 --shard fsdp` (FSDP2 over gloo): the same steps as two plain ranks, with a reset
    reference (ProRL), mid-run and final evaluation by rank 0 and checkpoints of the full weights;
    a run resumed from a sharded checkpoint repeats the uninterrupted one."""
    ov = _overrides(
        micro_base,
        tmp_path,
        "train.steps=3",
        "train.checkpoint_every=2",
        "algo.beta=0.05",
        "algo.ref_reset_every=2",
        "eval.every=2",
        "eval.after=true",
    )
    run = ["train", "--quiet", "--learners", "2"]
    logs = tmp_path / "logs"
    assert run_ranks([*run, "--run-dir", str(tmp_path / "plain"), *ov], 2, logs) == 0
    assert run_ranks([*run, "--shard", "fsdp", "--run-dir", str(tmp_path / "fsdp"), *ov], 2, logs) == 0
    plain, fsdp = _metrics(tmp_path / "plain"), _metrics(tmp_path / "fsdp")
    golden.check("scale/learners2_kl_reset_eval", tmp_path / "plain")
    golden.check("scale/fsdp_kl_reset_eval", tmp_path / "fsdp")
    assert len(plain) == len(fsdp) == 3
    for a, b in zip(plain, fsdp, strict=True):
        for key in ("reward_mean", "response_length", "loss", "grad_norm", "kl", "heldout_pass@1"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a["step"], key)
    assert "heldout_pass@1" in fsdp[1] and fsdp[-1]["grad_norm"] > 0
    for d in ("plain", "fsdp"):  # the full weights, whatever held them
        assert (tmp_path / d / "references" / "step_2" / "model.safetensors").exists()
    a = load_file(tmp_path / "plain" / "checkpoints" / "step_3" / "model.safetensors")
    b = load_file(tmp_path / "fsdp" / "checkpoints" / "step_3" / "model.safetensors")
    assert set(a) == set(b) and all(float((a[k] - b[k]).abs().max()) < 1e-5 for k in a)
    s_a, s_b = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("plain", "fsdp"))
    assert s_b["after"]["pass@1"] == pytest.approx(s_a["after"]["pass@1"], abs=1e-6)
    # a crash after step 2's checkpoint; the resumed run loads the full optimizer state into shards
    shutil.copytree(tmp_path / "fsdp", tmp_path / "again")
    shutil.rmtree(tmp_path / "again" / "checkpoints" / "step_3")
    (tmp_path / "again" / "checkpoints" / "latest").write_text("step_2\n")
    assert run_ranks(["train", "--quiet", "--resume", str(tmp_path / "again")], 2, logs) == 0
    for ra, rb in zip(fsdp, _metrics(tmp_path / "again"), strict=True):
        for k in ra:
            if k not in TIMING:
                assert rb[k] == pytest.approx(ra[k], rel=1e-6, abs=1e-7), (ra["step"], k)


def test_async_rollouts_are_one_step_stale_and_resume_exactly(micro_base, tmp_path, ray_session):
    ov = _overrides(
        micro_base, tmp_path, "scale.workers=1", "scale.staleness=1", "train.checkpoint_every=2"
    )
    train(load_config("grpo", [*ov, "train.steps=4"]), run_dir=tmp_path / "a", progress=False)
    golden.check("scale/async", tmp_path / "a")
    # a crash after step 2's checkpoint: the resumed run must replay step 3 from the rollouts that
    # were generating ahead when the checkpoint was written
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "step_4")
    (tmp_path / "b" / "checkpoints" / "latest").unlink()
    train(
        load_config("grpo", [*ov, "train.steps=4"]), run_dir=tmp_path / "b", resume=True, progress=False
    )
    a = _metrics(tmp_path / "a")
    # step 1 is generated by the starting weights; every later step by the weights one update older
    assert [row["staleness"] for row in a] == [0.0, 1.0, 1.0, 1.0]
    for row in a[1:]:
        assert row["is_weight_mean"] > 0 and row["is_weight_max"] >= row["is_weight_mean"]
        assert 0 <= row["is_truncated_frac"] <= 1
        assert row["ratio_mean"] == pytest.approx(1.0, abs=1e-5)  # old_logp = the proximal policy
    assert "is_weight_mean" not in a[0]
    st = torch.load(tmp_path / "a" / "checkpoints" / "step_2" / "trainer_state.pt", weights_only=False)
    (problems, roll) = st["ahead"][0]  # step 3's rollouts, generated during step 2 by version 1
    assert roll.policy_version == 1 and len(problems) == 4
    b = _metrics(tmp_path / "b")
    assert len(b) == 4
    for ra, rb in zip(a, b, strict=True):
        for k in ra:
            if k not in TIMING:
                assert ra[k] == pytest.approx(rb[k], rel=1e-6, abs=1e-7), (ra["step"], k)


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the ranks' processes in /proc")
def test_a_killed_learner_rank_stops_the_run_and_it_resumes(micro_base, tmp_path):
    """SIGKILL one learner rank mid-run: torchrun stops the other, the command fails, and
    `rlvr train --resume` continues from the newest checkpoint with both ranks."""
    run = tmp_path / "run"
    ov = _overrides(micro_base, tmp_path, "train.steps=400", "train.checkpoint_every=2")
    cmd = [
        sys.executable,
        "-m",
        "rlvr.cli",
        "train",
        "--quiet",
        "--learners",
        "2",
        "--run-dir",
        str(run),
    ]
    proc = subprocess.Popen([*cmd, *ov], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (run / "checkpoints" / "latest").exists():
            assert time.monotonic() < deadline and proc.poll() is None, "no checkpoint was written"
            time.sleep(0.2)
        agents = _children(proc.pid)  # `rlvr train` -> torchrun -> the two ranks
        ranks = [r for a in agents for r in _children(a)]
        assert len(ranks) == 2, (agents, ranks)
        os.kill(ranks[1], signal.SIGKILL)
        assert proc.wait(timeout=120) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
    done = max(json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines())
    ckpt = int((run / "checkpoints" / "latest").read_text().strip().split("_")[1])
    assert 2 <= ckpt <= done < 400
    assert main(["train", "--quiet", "--resume", str(run), f"train.steps={ckpt + 2}"]) == 0
    rows = _metrics(run)
    assert [r["step"] for r in rows] == list(range(1, ckpt + 3))  # steps after the checkpoint redone
    assert (run / "checkpoints" / f"step_{ckpt + 2}").is_dir()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the device machine)")
def test_learner_and_rollout_worker_on_the_gpu(micro_base, tmp_path, ray_session):
    """One learner and one asynchronous rollout worker, both on the GPU."""
    ov = _overrides(micro_base, tmp_path, "scale.workers=1", "scale.staleness=1", "train.steps=3")
    ov = [o for o in ov if not o.startswith("model.device")] + ["model.device='cuda'"]
    summary = train(load_config("grpo", ov), run_dir=tmp_path / "gpu", progress=False)
    assert summary["device"].startswith("cuda")
    rows = _metrics(tmp_path / "gpu")
    assert [r["staleness"] for r in rows] == [0.0, 1.0, 1.0]
    assert all(math.isfinite(r["loss"]) for r in rows) and rows[-1]["grad_norm"] > 0
