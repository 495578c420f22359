"""Faults: an injected NaN, SIGTERM, and kill -9 mid-run. The signal tests run a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlvr.train.checkpoint import latest_checkpoint
from rlvr.train.config import load_config
from rlvr.train.trainer import NonFiniteError, train
from tests.conftest import micro_run
from tests.faults.forked import Forked

SRC = Path(__file__).resolve().parents[2] / "src"


def _overrides(micro_base, *extra):
    return micro_run(micro_base, "eval.before=false", "eval.after=false", "optim.lr=1e-3", *extra)


def _metrics(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]


def test_injected_nan_is_skipped_logged_and_stops_the_run(micro_base, tmp_path, monkeypatch, capsys):
    """A NaN advantage (from step 3 on) makes the loss non-finite. (A NaN *reward* never gets that
    far: the reward runner scores it as a reward failure; see tests/rewards/test_runner.py.)"""
    from rlvr.algos import ADVANTAGES
    from rlvr.rewards import REWARDS

    calls = {"n": 0}

    def nan_after_two_steps(rewards):
        calls["n"] += 1
        adv = rewards - rewards.mean(dim=1, keepdim=True)  # [B, G]
        return adv * float("nan") if calls["n"] > 2 else adv

    def dense():
        return lambda prompt, completion, answer, **meta: 0.5 * (len(completion) % 2)

    monkeypatch.setitem(REWARDS._items, "dense", dense)
    ADVANTAGES.register("nan_after_two_steps")(nan_after_two_steps)
    cfg = load_config(
        "grpo",
        _overrides(
            micro_base,
            "train.steps=10",
            "train.checkpoint_every=2",
            "train.max_nonfinite_steps=3",
            "algo.advantage='nan_after_two_steps'",
            "rewards.dense.weight=1.0",
        ),
    )
    try:
        with pytest.raises(NonFiniteError, match=r"3 steps in a row \(up to step 5\)") as err:
            train(cfg, run_dir=tmp_path / "run", progress=False)
    finally:
        ADVANTAGES._items.pop("nan_after_two_steps")
    assert "step_2" in str(err.value)  # the newest checkpoint is from before the first NaN (step 3)
    rows = _metrics(tmp_path / "run")
    assert [r.get("skipped_updates", 0.0) for r in rows] == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert latest_checkpoint(tmp_path / "run").name == "step_2"  # none written during the streak
    out = capsys.readouterr().out
    assert "step 3: non-finite loss nan" in out and "(1 in a row)" in out


def _spawn(run_dir, micro_base, *args):
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "rlvr.cli", "train", "--quiet", "--run-dir", str(run_dir), *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _fork(run_dir, micro_base, *args):
    """As ``_spawn``, in a child of a fork server that has imported the trainer (tests/faults/
    forked.py): a real process, killed by a real SIGKILL, without ~10 s of imports per start; its
    output in the run's parent directory (the run directory must not exist before the first start)."""
    argv = ["train", "--quiet", "--run-dir", str(run_dir), *args]
    return Forked(argv, run_dir.parent / f"{run_dir.name}.out", env={"PYTHONPATH": str(SRC)})


def _output(proc):
    return proc.output() if isinstance(proc, Forked) else proc.stdout.read()


def _wait_for_steps(run_dir, n, proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        path = run_dir / "metrics.jsonl"
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"process ended early: {_output(proc)}")
        time.sleep(0.02)
    raise AssertionError("timed out waiting for training steps")


def test_sigterm_saves_a_checkpoint_and_says_how_to_resume(micro_base, tmp_path):
    run = tmp_path / "run"
    proc = _spawn(
        run, micro_base, *_overrides(micro_base, "train.steps=500", "train.checkpoint_every=1000")
    )
    _wait_for_steps(run, 2, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "checkpoint saved; continue with `rlvr train --resume" in " ".join(out.split())
    step = len(_metrics(run))
    assert latest_checkpoint(run).name == f"step_{step}"  # the step it was in when the signal came


def test_kill_9_then_resume_matches_an_uninterrupted_run(micro_base, tmp_path):
    over = _overrides(micro_base, "train.steps=8", "train.checkpoint_every=2")
    train(load_config("grpo", over), run_dir=tmp_path / "ref", progress=False)
    reference = _metrics(tmp_path / "ref")
    run = tmp_path / "run"
    proc = _fork(run, micro_base, *over)
    _wait_for_steps(run, 5, proc)
    proc.kill()  # SIGKILL: no handler runs
    proc.wait(timeout=60)
    done = latest_checkpoint(run)
    assert done is not None and int(done.name.split("_")[1]) >= 4
    resumed = _fork(run, micro_base, "--resume", str(run))
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    rows = _metrics(run)
    assert [r["step"] for r in rows] == list(range(1, 9))
    for a, b in zip(rows, reference, strict=True):
        for key in ("loss", "reward_mean", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), (a["step"], key)


def test_ten_kills_at_random_moments_lose_nothing_saved(micro_base, tmp_path):
    """kill -9 ten times at random moments (during start-up, a step, or a checkpoint write, which
    happens every step here), resuming each time; then finish and compare with an uninterrupted run."""
    import random

    over = _overrides(
        micro_base, "train.steps=12", "train.checkpoint_every=1", "train.keep_checkpoints=2"
    )
    train(load_config("grpo", over), run_dir=tmp_path / "ref", progress=False)
    reference = _metrics(tmp_path / "ref")
    run, rng = tmp_path / "run", random.Random(0)

    def start():
        first = not (run / "config.toml").exists()
        return _fork(run, micro_base, *(over if first else ["--resume", str(run)]))

    steps_seen = []
    for _ in range(10):
        logged = len(_metrics(run)) if (run / "metrics.jsonl").exists() else 0
        proc = start()
        try:  # let it make progress (start-up takes seconds), then kill at a random moment of a step
            _wait_for_steps(run, logged + 1, proc)
        except AssertionError:
            if proc.poll() is not None:
                break  # it finished the run before the kill
            raise
        time.sleep(rng.uniform(0.0, 0.4))  # a step with its checkpoint write takes ~0.1-0.5 s
        if proc.poll() is not None:
            break
        proc.kill()
        proc.wait(timeout=60)
        ckpt = latest_checkpoint(run)
        logged = len(_metrics(run)) if (run / "metrics.jsonl").exists() else 0
        saved = int(ckpt.name.split("_")[1]) if ckpt is not None else 0
        assert saved >= logged - 1  # at most the step in flight is lost (checkpoint every step)
        steps_seen.append(saved)
    assert max(steps_seen) > 0  # the kills did land during training, not only during start-up
    final = start()
    out, _ = final.communicate(timeout=300)
    assert final.returncode == 0, out
    rows = _metrics(run)
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert not list((run / "checkpoints").glob(".*"))  # leftovers of interrupted writes removed
    for a, b in zip(rows, reference, strict=True):
        for key in ("loss", "reward_mean", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), (a["step"], key)


def test_an_unwritable_run_directory_fails_before_any_work(micro_base, tmp_path, capsys):
    from rlvr.cli import main

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    over = _overrides(micro_base, "train.steps=2")
    assert main(["train", "--run-dir", str(blocker / "run"), *over]) == 2
    text = " ".join(capsys.readouterr().out.split())
    assert f"error: run directory {blocker / 'run'} is not writable" in text


def test_disk_full_mid_run_keeps_every_saved_checkpoint(micro_base, tmp_path, monkeypatch, capsys):
    import errno

    import rlvr.train.trainer as trainer_mod
    from rlvr.cli import main
    from rlvr.utils import atomic_dir

    real = trainer_mod.save_checkpoint

    def full_disk_at_step_2(run_dir, step, *args, **kwargs):
        if step < 2:
            return real(run_dir, step, *args, **kwargs)
        with atomic_dir(run_dir / "checkpoints" / f"step_{step}") as tmp:  # a half-written checkpoint
            (tmp / "model.safetensors").write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp / "model.safetensors"))

    monkeypatch.setattr(trainer_mod, "save_checkpoint", full_disk_at_step_2)
    run = tmp_path / "run"
    over = _overrides(micro_base, "train.steps=3", "train.checkpoint_every=1")
    assert main(["train", "--quiet", "--run-dir", str(run), *over]) == 1
    text = " ".join(capsys.readouterr().out.split())
    assert "error: No space left on device" in text and "--resume RUN_DIR" in text
    assert latest_checkpoint(run).name == "step_1"  # the complete one; the partial one is gone
    monkeypatch.setattr(trainer_mod, "save_checkpoint", real)
    assert main(["train", "--quiet", "--resume", str(run)]) == 0
    assert [r["step"] for r in _metrics(run)] == [1, 2, 3]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_run_directory_fails_before_any_work(micro_base, tmp_path, capsys):
    from rlvr.cli import main

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["train", "--run-dir", str(ro), *_overrides(micro_base, "train.steps=2")]) == 2
    finally:
        ro.chmod(0o755)
    assert f"error: run directory {ro} is not writable" in " ".join(capsys.readouterr().out.split())


NAN_PLUGIN = """
from rlvr.algos import ADVANTAGES
from rlvr.rewards import REWARDS

calls = {"n": 0}


@ADVANTAGES.register("nan_after_two_steps")
def nan_after_two_steps(rewards):
    calls["n"] += 1
    adv = rewards - rewards.mean(dim=1, keepdim=True)
    return adv * float("nan") if calls["n"] > 2 else adv


@REWARDS.register("dense")
def make():
    return lambda prompt, completion, answer, **meta: 0.5 * (len(completion) % 2)
"""


def test_injected_nan_in_a_real_process(micro_base, tmp_path):
    plugin = tmp_path / "nan_plugin.py"
    plugin.write_text(NAN_PLUGIN)
    run = tmp_path / "run"
    args = _overrides(micro_base, "train.steps=10", "train.checkpoint_every=2")
    proc = _spawn(
        run,
        micro_base,
        "--plugin",
        str(plugin),
        *args,
        "algo.advantage='nan_after_two_steps'",
        "rewards.dense.weight=1.0",
    )
    out, _ = proc.communicate(timeout=300)
    text = " ".join(out.split())
    assert proc.returncode == 3, out
    assert "step 3: non-finite loss nan" in text and "3 steps in a row (up to step 5)" in text
    assert latest_checkpoint(run).name == "step_2"


# a corpus of invalid configurations: each refused by `rlvr train` before any work, with the field
# named (exit code 2, no traceback)
INVALID = [
    ("optim.lr=-1e-4", "'optim.lr' = -0.0001 is out of range; expected > 0"),
    ("optim.lr='fast'", "'optim.lr' must be float"),
    ("rollout.samples_per_prompt=1", "'rollout.samples_per_prompt' = 1: the group estimator"),
    ("algo.clip_low=1", "'algo.clip_low': 'clip_low' of objective 'ppo_clip' = 1 is out of range"),
    ("algo.dual_clip=0.5", "'algo.dual_clip': 'dual_clip' of objective 'ppo_clip' = 0.5"),
    ("algo.advantage='grpoo'", "'algo.advantage': unknown advantage estimator 'grpoo'"),
    ("algo.objective='ppo'", "'algo.objective': unknown objective 'ppo'"),
    ("algo.aggregation='mean'", "'algo.aggregation': unknown aggregation 'mean'"),
    ("algo.kl='k9'", "'algo.kl': unknown KL estimator 'k9'"),
    ("algo.credit='gae'", "'algo.credit': credit assigner 'gae' needs values from a critic"),
    ("algo.clip_hi=0.3", "'algo.clip_hi' is not a knob of the chosen components"),
    ("algo.scale='groups'", "'algo.scale': 'scale' of advantage estimator 'grpo' must be one of"),
    ("algo.beta=-1", "'algo.beta' = -1.0 is out of range; expected >= 0"),
    ("algo.minibatches=3", "'algo.minibatches' x 'algo.micro_batches' = 3 must divide"),
    ("rollout.top_p=1.5", "'rollout.top_p' = 1.5 is out of range; expected in (0, 1]"),
    ("rollout.temperature=0", "'rollout.temperature' = 0.0 is out of range; expected > 0"),
    ("rewards.answer.partial_credit=False", "'rewards.answer.partial_credit': 'partial_credit'"),
    ("rewards.nope.weight=1", "'rewards.nope': unknown reward"),
    ("train.steps=-1", "'train.steps' = -1 is out of range"),
    ("train.steps=2.5", "'train.steps' must be int, got 2.5"),
    ("optim.beta2=1.0", "'optim.beta2' = 1.0 is out of range; expected in [0, 1)"),
    ("optim.schedule='step'", "'optim.schedule' = 'step'; expected one of"),
    ("eval.samples=0", "'eval.samples' = 0 is out of range; expected >= 1"),
    ("task.name='no_such_task'", "'task' (name = 'no_such_task'"),
    ("model.path='/nonexistent/model'", "model directory /nonexistent/model does not exist"),
    ("nosection.x=1", "unknown field 'nosection'"),
]


@pytest.mark.parametrize(("bad", "message"), INVALID)
def test_a_corpus_of_invalid_configs_is_refused_before_any_work(bad, message, tmp_path, capsys):
    from rlvr.cli import main

    assert main(["train", "--runs-root", str(tmp_path / "runs"), bad]) == 2
    text = " ".join(capsys.readouterr().out.split())
    assert "error:" in text and message in text and "Traceback" not in text
    assert not (tmp_path / "runs").exists()  # no run directory, no model built or loaded
