"""Setting up a run: the task, the run directory, the learner ranks, the policy and its reference,
the teacher, the components, the rewards, the rollout workers, the critic and the optimizers, and the
resumable state (from the newest checkpoint with ``--resume``).

:func:`setup_run` returns a :class:`Run`: what stays fixed while the run trains, with its
:class:`~rlvr.train.state.TrainState`. Everything that can fail for a bad recipe, a bad task or an
unusable run directory fails here, before any model is loaded where that is possible.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.markup import escape

from rlvr.algos import SHAPING
from rlvr.data.prompts import format_prompt
from rlvr.data.tasks import Problem, ReasoningGymTask, mixture_kwargs
from rlvr.models.critic import build_critic
from rlvr.models.hf import check_model_dir, load_model, load_tokenizer, tokenizer_difference
from rlvr.models.lora import (
    AdapterOffReference,
    add_adapters,
    is_lora,
    load_adapters,
    trainable_parameters,
)
from rlvr.models.shard import is_sharded, shard_policy
from rlvr.models.tiny import EMBEDDED, ensure_base
from rlvr.rewards.runner import RewardComponent, RewardRunner
from rlvr.rewards.steps import StepReward
from rlvr.train.checkpoint import latest_checkpoint, load_trainer_state, remove_partial
from rlvr.train.collect import Collector
from rlvr.train.components import Components, build_components
from rlvr.train.config import Config, ConfigError, is_step_reward
from rlvr.train.metrics import wandb_module
from rlvr.train.rounds import Rounds, autocast
from rlvr.train.scale import Learners, RolloutSource, broadcast, init_learners
from rlvr.train.schedule import schedule_fields
from rlvr.train.score import Scorer
from rlvr.train.state import FullOptimizerState, TrainState
from rlvr.utils import (
    atomic_write_text,
    console,
    pick_device,
    reuse_freed_memory,
    seed_everything,
)

__all__ = [
    "Run",
    "build_rewards",
    "build_task",
    "build_verifier",
    "env_knobs",
    "new_run_dir",
    "setup_run",
    "step_reward",
]


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
        name, kwargs = "composite", mixture_kwargs(t.mixture)
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
    scoring = cfg.scoring
    return RewardRunner(
        [
            RewardComponent(name, float(spec.get("weight", 1.0)), dict(spec))
            for name, spec in cfg.rewards.items()
        ],
        workers=scoring.workers,
        timeout=scoring.timeout,
        failure_score=scoring.failure_score,
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


def step_reward(cfg: Config, runner: RewardRunner, comps: Components) -> StepReward | None:
    """The run's step reward (``arith_steps``, ``prm``), when the credit assigner needs
    ``process_rewards``; else None. Loading the recipe has checked that exactly one reward component
    is a step reward (``is_step_reward``) and that the run has no episodes or guidance."""
    if comps.credit is None or "process_rewards" not in comps.credit.needs:  # type: ignore[attr-defined]
        return None
    (name,) = [r for r in cfg.rewards if is_step_reward(r)]
    fn = runner.fns[runner.names.index(name)]
    if not isinstance(fn, StepReward):
        raise ConfigError(f"reward {name!r} is declared a step reward but builds {type(fn).__name__}")
    return fn


def new_run_dir(cfg: Config, root: Path) -> Path:
    """``root/<recipe>-<date>-<time>`` (``-1``, ``-2``, ... when taken)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = root / f"{cfg.name}-{stamp}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


@dataclass
class Run:
    """What stays fixed while a run trains, and its resumable state."""

    cfg: Config
    run_dir: Path
    device: torch.device
    learners: Learners
    base_path: Path  # the base model (the reference when it is not reset, the critic's backbone)
    checkpoint: Path | None  # the checkpoint this run resumed from
    model: Any  # the policy (sharded over the learner ranks with scale.shard = 'fsdp')
    tokenizer: Any
    ref: Any  # the frozen reference, when a KL term or a component needs it
    teacher: Any  # the frozen teacher ([teacher]), when a component needs its log-probs
    comps: Components
    runner: RewardRunner  # the reward components
    verifier: RewardRunner  # task.verifier, for evaluation
    rounds: Rounds  # generation and scoring of rounds
    collector: Collector  # the step's batch
    state: TrainState
    optimizer: torch.optim.Optimizer

    @property
    def main(self) -> bool:
        """Rank 0, which alone writes the run directory, evaluates and prints."""
        return self.learners.main

    @property
    def sharded(self) -> bool:
        return is_sharded(self.model)

    def precision(self) -> Any:
        """The forward passes' precision (``model.dtype``)."""
        return autocast(self.cfg, self.device)


def _run_dir(run_dir: str | Path | None, runs_root: str | Path, cfg: Config, learners: Learners) -> Path:
    """The run directory, created and checked writable (rank 0's name for every rank)."""
    path = Path(run_dir) if run_dir else broadcast(new_run_dir(cfg, Path(runs_root)), learners)
    try:  # an unusable run directory fails here, before any model is loaded
        path.mkdir(parents=True, exist_ok=True)
        if learners.main:
            atomic_write_text(path / ".write-test", "ok\n")
            (path / ".write-test").unlink()
    except OSError as err:
        raise ConfigError(f"run directory {path} is not writable: {err.strerror or err}") from None
    return path


def _beta_points(cfg: Config) -> tuple[tuple[int, float], ...]:
    """The points of a scheduled ``algo.beta`` (none when it is not scheduled)."""
    curve = schedule_fields(cfg).get("algo.beta") if cfg.schedule else None
    return curve.points if curve is not None else ()


def _reference(
    cfg: Config, comps: Components, model: Any, *, base: Path, run_dir: Path, saved: Any, device: Any
) -> Any:
    """The frozen reference: a copy of the policy when the run starts, the base when it resumes, or
    the policy of the last reset (ProRL, saved beside the checkpoints); None when nothing needs it."""
    beta = max(cfg.algo.beta, max((v for _, v in _beta_points(cfg)), default=0.0))
    if not (beta > 0 or comps.needs_ref):  # a scheduled beta that rises above 0 needs it too
        return None
    if is_lora(model):  # the base: the policy with its adapters off, no second copy
        return AdapterOffReference(model)
    reset_at = int(saved.get("ref_step", 0)) if saved is not None else 0
    if reset_at:  # a reset reference (ProRL) is saved beside the checkpoints
        ref_path = run_dir / "references" / f"step_{reset_at}"
        if not ref_path.is_dir():
            raise FileNotFoundError(f"{ref_path}: the reference model this checkpoint needs")
        return _frozen(ref_path, device)
    if saved is not None:
        return _frozen(base, device)
    ref = copy.deepcopy(model).eval()
    ref.requires_grad_(False)
    return ref


def _teacher_path(cfg: Config, base: Path, progress: bool) -> Path | None:
    """The teacher's directory (``teacher.path``, or the embedded ``teacher.embedded``, built once and
    cached), after checking that it shares the policy's tokenizer; None without a teacher. Loading
    the recipe has checked that a teacher is set exactly when a chosen component needs one."""
    t = cfg.teacher
    if not t.enabled:
        return None
    if t.path:
        path = check_model_dir(t.path, what="teacher")
    else:
        path = ensure_base(EMBEDDED[t.embedded], progress=progress)
    diff = tokenizer_difference(load_tokenizer(base), load_tokenizer(path), ("policy", "teacher"))
    if diff:
        m = cfg.model
        policy = f"model.path = {m.path!r}" if m.path else f"model.embedded = {m.embedded!r}"
        raise ConfigError(
            f"the teacher ({t.describe()}, {path}) does not share the policy's tokenizer ({policy}, "
            f"{base}): {diff}. Its log-probs of the policy's token ids would score other tokens; "
            "choose a teacher with the policy's tokenizer"
        )
    return path


def _frozen(path: Path, device: Any) -> Any:
    """A model loaded from ``path`` that is never trained (the teacher, a reference on a resume):
    eval mode, no gradients, float32 on ``device`` (its forwards run under the run's precision)."""
    model = load_model(path, device=device)[0].eval()
    model.requires_grad_(False)
    return model


def _policy(cfg: Config, ckpt: Path | None, base: Path, device: Any) -> tuple[Any, Any]:
    """The policy in training mode and its tokenizer: the checkpoint's weights on a resume, else the
    base's; with ``model.lora.rank`` > 0 the base with adapters (fresh, or the checkpoint's)."""
    lora = cfg.model.lora
    model, tokenizer = load_model(base if lora.rank else ckpt or base, device=device)
    if lora.rank:
        if ckpt is not None:
            model = load_adapters(model, ckpt)
        else:
            model = add_adapters(
                model, rank=lora.rank, alpha=lora.alpha, dropout=lora.dropout, targets=lora.targets
            )
        n_train = sum(p.numel() for p in trainable_parameters(model))
        n_all = sum(p.numel() for p in model.parameters())
        console.print(
            f"LoRA r={lora.rank}: {n_train:,} trainable parameters of {n_all:,} "
            f"({100 * n_train / n_all:.2f}%)"
        )
    model.train()
    return model, tokenizer


def _base_path(cfg: Config, progress: bool) -> Path:
    """The policy's starting point: ``model.path``, or the embedded base (built once and cached)."""
    if cfg.model.path:
        return Path(cfg.model.path)
    return ensure_base(EMBEDDED[cfg.model.embedded], progress=progress)


def _trim_metrics(path: Path, step: int) -> None:
    """Drop the metrics of steps after the checkpoint a run resumes from."""
    if path.exists():
        kept = [
            ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step
        ]
        atomic_write_text(path, "".join(ln + "\n" for ln in kept))


def setup_run(
    cfg: Config,
    *,
    run_dir: str | Path | None = None,
    runs_root: str | Path = "runs",
    resume: bool = False,
    progress: bool = True,
) -> Run:
    """Everything a run needs before its first step, resumed from the newest checkpoint of
    ``run_dir`` when ``resume``. Sets the console quiet on every rank but 0 (``train`` restores it)."""
    if cfg.model.path:
        check_model_dir(cfg.model.path)  # a model directory without config or weights fails first
    if cfg.teacher.path:
        check_model_dir(cfg.teacher.path, what="teacher")
    if cfg.train.wandb_project:  # a missing wandb package fails before any work, too
        wandb_module(cfg)
    tokenizer = None
    if cfg.task.max_prompt_tokens:  # prompt lengths are checked with the model's tokenizer
        tokenizer = load_tokenizer(_base_path(cfg, progress))
    task = build_task(cfg, tokenizer)  # a bad task fails here, before a run dir or model exists
    device = pick_device(cfg.model.device)
    reuse_freed_memory()  # no page faults to re-touch each step's tensors
    learners = init_learners(cfg.scale.learners, device)  # this process's rank among the learners
    main = learners.main
    progress = progress and main  # only rank 0 shows progress
    path = _run_dir(run_dir, runs_root, cfg, learners)
    console.quiet = console.quiet or not main
    seed_everything(cfg.train.seed)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)

    if resume and main:
        for p in remove_partial(path):
            console.print(f"removed {p} (left by an interrupted write)")
    ckpt = latest_checkpoint(path) if resume else None
    saved = load_trainer_state(ckpt) if ckpt is not None else None  # optimizer, RNG, data position, ...
    if resume and ckpt is None:
        console.print(f"[yellow]no complete checkpoint in {path}; starting from step 0")
    base = _base_path(cfg, progress)
    teacher_path = _teacher_path(cfg, base, progress)  # a teacher with another tokenizer fails here
    model, tokenizer = _policy(cfg, ckpt, base, device)
    comps = build_components(cfg)
    ref = _reference(cfg, comps, model, base=base, run_dir=path, saved=saved, device=device)
    teacher = _frozen(teacher_path, device) if teacher_path is not None else None
    runner, verifier = build_rewards(cfg), build_verifier(cfg)
    shapers = [(SHAPING[name], dict(knobs)) for name, knobs in cfg.shaping.items()]
    scorer = Scorer(
        runner,
        verifier,
        cfg.task.verifier,
        shapers,
        cfg.rollout.max_new_tokens,
        step_reward(cfg, runner, comps),  # process rewards for token-level credit, when needed
    )
    state = TrainState(task=task, sample_rng=np.random.default_rng(cfg.train.seed + 2))
    if cfg.scale.shard == "fsdp":  # after the reference's copy, before the optimizer (it takes shards)
        shard_policy(model, learners.world, device)
    o = cfg.optim
    fused = device.type in ("cpu", "cuda")  # one kernel over all parameters (CPU: 0.6 vs 3.8 ms/step)
    opt = torch.optim.AdamW(
        trainable_parameters(model),  # a LoRA policy's adapters only
        lr=o.lr,
        betas=(o.beta1, o.beta2),
        weight_decay=o.weight_decay,
        fused=fused,
    )
    state.optimizer = FullOptimizerState(model, opt) if is_sharded(model) else opt
    if cfg.critic.enabled:  # a value model (or a probe on the policy) with its own optimizer
        state.critic = build_critic(
            cfg.critic.kind,
            base=base,
            policy=model,
            device=device,
            precision=lambda: autocast(cfg, device),
        )
        state.critic_optimizer = torch.optim.AdamW(
            state.critic.parameters(),
            lr=cfg.critic.lr,
            betas=(o.beta1, o.beta2),
            weight_decay=o.weight_decay,
            fused=fused,
        )
    if cfg.prm.enabled:  # PRIME's implicit PRM: a causal LM from the base, with its own optimizer
        state.prm = load_model(base, device=device)[0].train()
        state.prm_optimizer = torch.optim.AdamW(
            state.prm.parameters(),
            lr=cfg.prm.lr,
            betas=(o.beta1, o.beta2),
            weight_decay=o.weight_decay,
            fused=fused,
        )
    state.generator = torch.Generator(device=device).manual_seed(cfg.train.seed)
    state.cpu_generator = torch.Generator().manual_seed(cfg.train.seed + 1)  # mini-batch shuffling
    state.kl_coef = cfg.algo.beta
    if cfg.reward_weights.controller:  # the controller's state starts at the recipe's weights
        state.reward_weights = {"weights": torch.tensor(runner.weights)}  # [K]
    scale = cfg.scale
    source = None  # rollouts on Ray workers or across the learner ranks; None: `generate` here
    if scale.workers or learners.world > 1:
        source = RolloutSource(learners, state.generator, remote=scale.workers > 0)
        if scale.workers and main:  # rank 0 drives the workers and shares their rollouts
            source.start_workers(
                str(ckpt or base),
                scale.workers,
                threads=scale.worker_threads,
                device=str(device),
                address=scale.ray_address or None,
            )
    rounds = Rounds(cfg, model, tokenizer, scorer, state.generator, source, critic=state.critic)
    # the pool, its tracker, replay buffer, traces; the greedy baseline stage when a component needs it
    collector = Collector(cfg, rounds, state, device, needs=comps.needs)
    metrics = path / "metrics.jsonl"
    if saved is not None:
        state.load_state_dict(saved)
        if main:
            _trim_metrics(metrics, state.step)
        console.print(f"resuming {path} from {ckpt.name}")  # type: ignore[union-attr]
    elif main:
        atomic_write_text(path / "config.toml", cfg.to_toml())
        metrics.unlink(missing_ok=True)
        (path / "samples.jsonl").unlink(missing_ok=True)
    console.print(f"run dir: {path}  device: {device}  model: {base}")
    return Run(
        cfg=cfg,
        run_dir=path,
        device=device,
        learners=learners,
        base_path=base,
        checkpoint=ckpt,
        model=model,
        tokenizer=tokenizer,
        ref=ref,
        teacher=teacher,
        comps=comps,
        runner=runner,
        verifier=verifier,
        rounds=rounds,
        collector=collector,
        state=state,
        optimizer=opt,
    )
