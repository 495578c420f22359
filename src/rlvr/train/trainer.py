"""The training loop: set up the run, then for each step collect a batch, compute advantages, learn,
log and checkpoint. One loop for every recipe.

Each stage lives in its own module of ``rlvr.train``: ``setup`` (the run), ``collect`` (the batch:
rounds, replay, guidance, dynamic sampling, asynchronous rollouts), ``advantage`` (the frozen
forwards and the estimator), ``learner`` (the update, the critic, stale rollouts, the KL controller),
``metrics`` (every place a step's numbers go), ``state`` (what a checkpoint holds) and ``evaluation``.
The loop knows components only through the registries; no line of it names a recipe or a component.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import torch

from rlvr.eval.report import write_report
from rlvr.models.hf import load_model
from rlvr.models.shard import drop_aliases, full_weights, gathered
from rlvr.train.advantage import Advantages
from rlvr.train.checkpoint import latest_checkpoint, save_checkpoint
from rlvr.train.config import Config
from rlvr.train.evaluation import format_eval, run_eval, summarise, write_eval
from rlvr.train.learner import Learner, ReferenceResets, Reincarnation
from rlvr.train.metrics import MetricsSink, batch_metrics
from rlvr.train.scale import broadcast, close_learners
from rlvr.train.schedule import bind_reward_weights, bind_schedule
from rlvr.train.setup import Run, setup_run
from rlvr.utils import atomic_write_text, console

__all__ = ["NonFiniteError", "TrainingInterrupted", "train"]


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


def train(
    cfg: Config,
    *,
    run_dir: str | Path | None = None,
    runs_root: str | Path = "runs",
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train with ``cfg``; write the run directory; return the summary (also in summary.json)."""
    quiet = console.quiet
    run = setup_run(cfg, run_dir=run_dir, runs_root=runs_root, resume=resume, progress=progress)
    state, progress = run.state, progress and run.main
    advantages = Advantages(
        run.comps,
        torch.tensor(run.runner.weights, device=run.device),  # [K]
        ref=run.ref,
        teacher=run.teacher,
        critic=state.critic,
        prm=state.prm,
        prm_beta=cfg.prm.beta,
        policy=run.model,
        kl_in_reward=cfg.algo.kl_in == "reward",
        temperature=cfg.rollout.temperature,
        learners=run.learners,
        precision=run.precision,
        tokenizer=run.tokenizer,
        self_teacher=cfg.self_teacher,
    )
    learner = Learner(
        run.model,
        run.optimizer,
        run.comps,
        cfg,
        learners=run.learners,
        critic=state.critic,
        critic_optimizer=state.critic_optimizer,
        prm=state.prm,
        prm_optimizer=state.prm_optimizer,
        precision=run.precision,
    )
    schedule = bind_schedule(  # [schedule]: step-dependent settings, written each step
        cfg, rounds=run.rounds, advantages=advantages, learner=learner, comps=run.comps, state=state
    )
    reward_weights = bind_reward_weights(  # [reward_weights]: a controller of the reward weights
        cfg, scorer=run.rounds.scorer, advantages=advantages, state=state
    )
    reset_reference = ReferenceResets(
        run.ref,
        run.model,
        run.tokenizer,
        run.run_dir,
        cfg.algo.ref_reset_every,
        run.main,
        at=cfg.algo.reincarnate_at,  # policy reincarnation resets the reference after step S
    )
    reincarnate = Reincarnation(cfg.algo.reincarnate_at, learner, run.collector.replay)
    _evaluate_base(run, progress)
    names, shaped = run.runner.names, bool(cfg.shaping)
    sink = MetricsSink(cfg, run.run_dir, names, start=state.step, main=run.main, progress=progress)
    streak = 0  # steps in a row whose update was skipped (non-finite)
    stop: list[int] = []  # SIGINT / SIGTERM received: finish the step, checkpoint, stop
    with _StopOnSignals(stop), sink:
        for step in range(state.step + 1, cfg.train.steps + 1):
            t0 = time.perf_counter()
            learner.set_lr(step)
            scheduled = schedule(step)  # [schedule]: this step's values written ({} without one)
            phase = reincarnate(step)  # after algo.reincarnate_at: on-policy settings ({}: off)
            weighted = reward_weights.apply()  # the controller's weights for this step ({}: none)
            got = run.collector.collect(step)  # generated, scored, filtered, assembled
            reward_weights.observe(got.batch.parts)  # the next step's weights
            roll, sizes = got.batch.roll, got.batch.sizes
            off_policy = learner.correct_stale(roll, step)  # asynchronous rollouts' weights
            est = advantages(roll, sizes, state.kl_coef, got.batch)  # frozen forwards, estimator
            run.collector.observe(got, est.adv, step)  # the pool sampler's tracker
            t_learn = time.perf_counter()
            learned = learner.update(
                roll,
                est,
                sizes,
                state.cpu_generator,  # type: ignore[arg-type]
                state.kl_coef,
                correct=got.batch.correct,  # the verifier's outcomes: the implicit PRM's labels
            )
            state.kl_coef = learner.next_kl_coef(state.kl_coef, learned, len(roll))
            if reset_reference(step):
                state.ref_step = step
            step_time = time.perf_counter() - t0
            m = {
                "step": step,
                **batch_metrics(got.batch, est.adv, names, shaped),
                **got.metrics,
                "learn_time": time.perf_counter() - t_learn,
                "step_time": step_time,
                "lr": run.optimizer.param_groups[0]["lr"],
                **scheduled,
                **phase,
                **weighted,
                **off_policy,
                **run.rounds.source_metrics(),
                **learned,
            }
            m.update(_evaluate_mid(run, step))
            sink.log(step, m, got.batch)
            streak = streak + 1 if m.get("skipped_updates") else 0
            if streak:
                _nonfinite(run, sink, m, streak)
            state.step = step
            due = step % cfg.train.checkpoint_every == 0 or step == cfg.train.steps
            if streak == 0 and (due or stop):  # never a checkpoint inside a non-finite streak
                _checkpoint(run, sink)
            if stop:
                raise TrainingInterrupted(stop[0], run.run_dir, step)
    sink.close()
    summary = _finish(run, progress)
    console.quiet = quiet
    return summary


def _evaluate_base(run: Run, progress: bool) -> None:
    """The base model on the held-out problems, once per run directory (``eval_before.json``)."""
    path = run.run_dir / "eval_before.json"
    due = run.cfg.eval.before and run.main and not path.exists()
    if run.sharded:  # every rank gathers the weights for rank 0's evaluation
        due = broadcast(due, run.learners)
    if not due:
        return
    with gathered(run.model):
        if run.main:
            base = (
                run.model if run.checkpoint is None else load_model(run.base_path, device=run.device)[0]
            )
            res = run_eval(
                base,
                run.tokenizer,
                run.state.task.heldout,
                run.cfg,
                run.verifier,
                label="eval (base)",
                progress=progress,
            )
            write_eval(path, res)
            console.print(format_eval("base", res.summary()))


def _evaluate_mid(run: Run, step: int) -> dict[str, float]:
    """Held-out metrics every ``eval.every`` steps (not at the last: the final evaluation is)."""
    every = run.cfg.eval.every
    if not (every and step % every == 0 and step < run.cfg.train.steps):
        return {}
    out = {}
    with gathered(run.model):  # sharded: every rank gathers, rank 0 evaluates
        if run.main:
            label = f"eval (step {step})"
            res = run_eval(
                run.model,
                run.tokenizer,
                run.state.task.heldout,
                run.cfg,
                run.verifier,
                label=label,
                progress=False,
            )
            out = {f"heldout_{k}": v for k, v in res.summary().items() if "_ci" not in k}
            run.model.train()
    return out


def _nonfinite(run: Run, sink: MetricsSink, m: dict[str, Any], streak: int) -> None:
    """Say that step ``m['step']``'s update was skipped; stop after ``train.max_nonfinite_steps``."""
    step = m["step"]
    sink.print(
        f"[yellow]step {step}: non-finite loss {m.get('nonfinite_loss')} / gradient norm "
        f"{m.get('nonfinite_grad_norm')}; update skipped ({streak} in a row)"
    )
    limit = run.cfg.train.max_nonfinite_steps
    if limit and streak >= limit:
        last = latest_checkpoint(run.run_dir)
        raise NonFiniteError(
            f"{streak} steps in a row (up to step {step}) had a non-finite loss or "
            f"gradient; stopped. Newest checkpoint, from before the first of them: "
            f"{last if last is not None else 'none (it started before the first one)'}"
        )


def _checkpoint(run: Run, sink: MetricsSink) -> None:
    """``checkpoints/step_N``: the weights and the state (every rank joins; rank 0 writes)."""
    state = run.state.state_dict()
    weights = drop_aliases(run.model, full_weights(run.model)) if run.sharded else None  # on rank 0
    if run.main:
        sink.before_checkpoint()
        save_checkpoint(
            run.run_dir,
            run.state.step,
            run.model,
            run.tokenizer,
            state,
            keep=run.cfg.train.keep_checkpoints,
            weights=weights,
        )
    sink.after_checkpoint()


def _finish(run: Run, progress: bool) -> dict[str, Any]:
    """Close the workers and the learner group; rank 0 evaluates the trained policy and writes
    ``eval_after.json``, ``summary.json`` and ``report.html``. Returns the summary."""
    cfg, model = run.cfg, run.model
    run.runner.close()  # the reward workers, if any
    run.rounds.close()  # the rollout workers, if any
    final = full_weights(model) if run.sharded else None  # the trained weights, on rank 0
    close_learners(run.learners)
    summary: dict[str, Any] = {
        "run_dir": str(run.run_dir),
        "steps": cfg.train.steps,
        "device": str(run.device),
        "model": str(run.base_path),
    }
    if not run.main:  # the other ranks end here: rank 0 evaluates and writes the summary
        return summary
    if final is not None:  # rank 0 evaluates an unsharded copy
        model = load_model(run.base_path, device=run.device)[0]
        model.load_state_dict(final)
    if cfg.eval.after:
        after = run_eval(
            model,
            run.tokenizer,
            run.state.task.heldout,
            cfg,
            run.verifier,
            label="eval (trained)",
            progress=progress,
        )
        write_eval(run.run_dir / "eval_after.json", after)
        console.print(format_eval("trained", after.summary()))
        summary.update(summarise(after, run.run_dir / "eval_before.json", cfg.train.seed))
    atomic_write_text(run.run_dir / "summary.json", json.dumps(summary, indent=2))
    summary["report"] = str(write_report(run.run_dir))
    return summary


class _StopOnSignals:
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

    def __enter__(self) -> _StopOnSignals:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self.saved[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self.saved.items():
            signal.signal(s, handler)
