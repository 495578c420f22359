"""``rlvr sft``: supervised warm start of any causal LM on worked solutions, a dataset, or the successful
samples of an earlier ``rlvr train`` run (rejection-sampling fine-tuning).

Data sources (``SFTConfig.source``):

- ``task``: a reasoning-gym task; each problem's target is its worked solution from
  :data:`rlvr.data.solutions.SOLVERS` (problems the solver cannot do are skipped);
- ``file``: a dataset file (``rlvr.data.files.FileDataset``), the target in ``solution_field``;
- ``samples``: ``samples.jsonl`` of an ``rlvr train`` run directory, the completions whose reward is
  at least ``min_reward``; the held-out set is that run's own (from its ``config.toml``).

**Packing.** Examples (prompt in the model's chat format, then the target and EOS) are laid one after
the other into ``rows`` rows of ``seq_len`` tokens; an example that does not fit the rest of a row
starts the next one, so a row's padding is shorter than one example (an example longer than
``seq_len`` is cut). Labels are the token ids on the target tokens and EOS, -100 elsewhere (prompt,
padding): the loss is the mean negative log-likelihood of the assistant's tokens of the step,
``L = -Σ_t m_t log p(x_t | x_<t) / Σ_t m_t``. Attention does not cross examples: each row gets a
block-diagonal causal mask [rows, 1, L, L] and positions that restart at 0 for every example, so a
packed example sees exactly what it would see alone.

**One-Token Rollout** (``loss = 'otr'``, "One-Token Rollout: Guiding Supervised Fine-Tuning of LLMs
with Policy Gradient"): every target position is a one-step RL problem; ``otr_samples`` tokens are
drawn from the current policy there, each rewarded 1 when it is the ground-truth token, and the
policy gradient with a leave-one-out baseline is trained on (:func:`otr_loss`). The logged ``loss``
stays the NLL of the same forward (``otr_loss`` in ``metrics.jsonl`` is the surrogate).

**Schedule, checkpoints, resume.** Linear warm-up then cosine decay (``rlvr.models.tiny._lr_at``);
``checkpoints/step_N`` (HF model + ``trainer_state.pt``: optimizer, data stream, pending example,
losses) every ``checkpoint_every`` steps; SIGINT / SIGTERM finish the step and checkpoint;
``resume=True`` continues from the newest checkpoint with the same losses as an uninterrupted run.
The result, ``RUN_DIR/model``, is a Hugging Face directory that ``rlvr train model.path=...`` takes.
"""

from __future__ import annotations

import dataclasses
import json
import random
import tomllib
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from rlvr.data.prompts import format_prompt
from rlvr.data.solutions import solve
from rlvr.data.tasks import Problem
from rlvr.utils import atomic_dir, atomic_write_text, console, seed_everything

__all__ = ["SFTConfig", "otr_loss", "otr_surrogate", "pack", "sft", "sft_config"]


@dataclass
class SFTConfig:
    """The settings of one ``rlvr sft`` run (``key=value`` overrides on the command line)."""

    model_path: str = ""
    """A local Hugging Face causal-LM directory; empty: the embedded tiny base ``embedded``."""
    embedded: str = "default"
    """Which embedded base (``rlvr.models.tiny.EMBEDDED``) when ``model_path`` is empty."""
    source: str = "task"
    """'task' (reasoning-gym + worked solutions), 'file' (a dataset) or 'samples' (an rlvr run)."""
    task: str = "chain_sum"
    """The reasoning-gym task of source = 'task'."""
    task_kwargs: dict[str, Any] = field(
        default_factory=lambda: {"min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 1}
    )
    """Its generation knobs."""
    mixture: dict[str, Any] = field(default_factory=dict)
    """source = 'task': a weighted mixture of reasoning-gym tasks instead of ``task`` (as the train
    config's ``task.mixture``: task -> {weight, and the task's knobs}); each problem's target is its
    own family's worked solution."""
    path: str = ""
    """The dataset (source = 'file') or the run directory (source = 'samples')."""
    prompt_field: str = "prompt"
    answer_field: str = "answer"
    solution_field: str = "solution"
    """The field of a dataset row with the assistant's target text (source = 'file')."""
    verifier: str = "answer"
    """The reward that decides held-out correctness ('answer', 'math', 'exact_match', ...)."""
    min_reward: float = 1.0
    """source = 'samples': keep completions whose reward is >= this."""
    heldout_size: int = 32
    split_seed: int = 0
    seed: int = 0
    steps: int = 100
    rows: int = 8
    """Packed rows per step."""
    seq_len: int = 256
    """Tokens per packed row."""
    lr: float = 1e-3
    warmup: int = 10
    weight_decay: float = 0.0
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    eval_samples: int = 1
    """Samples per held-out problem for pass@1 (0: no pass@1, held-out loss only)."""
    eval_max_new_tokens: int = 96
    eval_temperature: float = 1.0
    device: str = "cpu"
    lora_rank: int = 0
    """LoRA adapters of this rank instead of full fine-tuning (0: full; rlvr.models.lora); the
    result is the merged model, and each checkpoint also holds the adapters."""
    lora_alpha: float = 32.0
    """The adapters' update is scaled by lora_alpha / lora_rank."""
    loss: str = "nll"
    """'nll' (the mean negative log-likelihood of the target tokens) or 'otr' (One-Token Rollout:
    :func:`otr_loss`, ``otr_samples`` tokens sampled from the policy at every target position)."""
    otr_samples: int = 8
    """loss = 'otr': K, the tokens sampled per position (>= 2: each one's baseline is the others')."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def sft_config(overrides: list[str] | None = None, base: dict[str, Any] | None = None) -> SFTConfig:
    """An :class:`SFTConfig` from ``key=value`` overrides (TOML values; a bare word is a string) over
    ``base``; raises ValueError naming an unknown key or a value of the wrong type."""
    from rlvr.registry import describe_type, type_matches
    from rlvr.train.config import _parse_value

    data = dict(base or {})
    for item in overrides or []:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r}: expected key=value")
        data[key.strip()] = _parse_value(text.strip())
    hints = typing.get_type_hints(SFTConfig)
    names = {f.name for f in dataclasses.fields(SFTConfig)}
    for key, value in data.items():
        if key not in names:
            raise ValueError(f"unknown sft setting {key!r}; valid: {', '.join(sorted(names))}")
        if not type_matches(value, hints[key]):
            raise ValueError(f"sft setting {key!r}: expected {describe_type(hints[key])}, got {value!r}")
    cfg = SFTConfig(**data)
    if cfg.source not in ("task", "file", "samples"):
        raise ValueError(f"sft setting 'source': 'task', 'file' or 'samples', got {cfg.source!r}")
    if cfg.source != "task" and not cfg.path:
        raise ValueError(f"source = {cfg.source!r} needs 'path'")
    if cfg.loss not in ("nll", "otr"):
        raise ValueError(f"sft setting 'loss': 'nll' or 'otr', got {cfg.loss!r}")
    if cfg.otr_samples < 2:
        raise ValueError(
            f"sft setting 'otr_samples': expected >= 2 (each sample's baseline is the mean reward of "
            f"the others), got {cfg.otr_samples}"
        )
    return cfg


# ----------------------------------------------------------------------------------------- data


def _interrupted(signum: int, run_dir: Path, step: int) -> Exception:
    """``TrainingInterrupted`` (the CLI's exit code 128 + signal) with the sft resume command."""
    from rlvr.train.trainer import TrainingInterrupted

    class SFTInterrupted(TrainingInterrupted):
        def __str__(self) -> str:
            return super().__str__().replace("rlvr train --resume", "rlvr sft --resume")

    return SFTInterrupted(signum, run_dir, step)


def _rl_config(cfg: SFTConfig) -> Any:
    """The RL recipe whose task, held-out split and evaluation settings this run shares."""
    from rlvr.train.config import load_config

    if cfg.source == "samples":
        data = tomllib.loads((Path(cfg.path) / "config.toml").read_text())
        from rlvr.train.config import config_from_dict

        rl = config_from_dict(data)
        rl.train.seed = cfg.seed
        rl.eval.max_new_tokens, rl.eval.temperature = cfg.eval_max_new_tokens, cfg.eval_temperature
        return rl
    task = (
        [
            f"task.name={json.dumps(cfg.task)}",
            f"task.kwargs={_toml_table(cfg.task_kwargs)}",
            f"task.mixture={_toml_table(cfg.mixture)}",
        ]
        if cfg.source == "task"
        else [
            "task.source='file'",
            f"task.path={json.dumps(cfg.path)}",
            f"task.prompt_field={json.dumps(cfg.prompt_field)}",
            f"task.answer_field={json.dumps(cfg.answer_field)}",
        ]
    )
    return load_config(
        "grpo",
        [
            *task,
            f"task.verifier={json.dumps(cfg.verifier)}",
            f"task.heldout_size={cfg.heldout_size}",
            f"task.split_seed={cfg.split_seed}",
            f"train.seed={cfg.seed}",
            f"eval.max_new_tokens={cfg.eval_max_new_tokens}",
            f"eval.temperature={cfg.eval_temperature}",
        ],
    )


def _toml_table(d: dict[str, Any]) -> str:
    """``d`` as a TOML inline table (nested tables too: a mixture's per-task knobs)."""

    def value(v: Any) -> str:
        if isinstance(v, dict):
            return _toml_table(v)
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)

    return "{" + ", ".join(f"{json.dumps(str(k))} = {value(v)}" for k, v in d.items()) + "}"


class Examples:
    """The stream of (problem, target text) pairs of a run; ``state_dict`` resumes it exactly."""

    def __init__(self, cfg: SFTConfig, task: Any) -> None:
        self.cfg, self.task = cfg, task
        self.rows: list[tuple[Problem, str]] = []
        self.position = 0
        if cfg.source == "samples":
            held = {p.question for p in task.heldout}
            seen = set()
            for line in (Path(cfg.path) / "samples.jsonl").read_text().splitlines():
                r = json.loads(line)
                key = (r["question"], r["completion"])
                if r["reward"] >= cfg.min_reward and r["question"] not in held and key not in seen:
                    seen.add(key)
                    self.rows.append((Problem(r["question"], r["answer"]), r["completion"]))
            if not self.rows:
                raise ValueError(
                    f"{cfg.path}/samples.jsonl has no sample with reward >= {cfg.min_reward}"
                )
            random.Random(f"rlvr-sft-{cfg.seed}").shuffle(self.rows)

    def target(self, p: Problem) -> str | None:
        """The assistant's text for a problem of the task or dataset."""
        if self.cfg.source == "file":
            text = p.meta.get(self.cfg.solution_field)
            return str(text) if text is not None else None
        return solve(p)

    def __iter__(self) -> Iterator[tuple[Problem, str]]:
        return self

    def __next__(self) -> tuple[Problem, str]:
        if self.rows:
            pair = self.rows[self.position % len(self.rows)]
            self.position += 1
            return pair
        for _ in range(1000):
            (p,) = self.task.next(1)
            text = self.target(p)
            if text is not None:
                return p, text
        raise ValueError(f"no worked solution for 1000 problems in a row of {self.task.name!r}")

    def heldout(self) -> list[tuple[Problem, str]]:
        """Held-out problems with their targets (those with one)."""
        pairs = [(p, self.target(p)) for p in self.task.heldout] if not self.rows else []
        return [(p, t) for p, t in pairs if t is not None]

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position, "task": self.task.state_dict()}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.position = int(s["position"])
        self.task.load_state_dict(s["task"])


def encode(tokenizer: Any, problem: Problem, target: str) -> tuple[list[int], list[int]]:
    """(ids, labels) of one example: the prompt (chat template) then the target and EOS; labels are
    -100 on the prompt (``rlvr.models.tiny._demo_ids``'s rule: loss on the assistant's tokens)."""
    prompt = format_prompt(tokenizer, problem.question, messages=problem.messages)
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    t = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return p + t, [-100] * len(p) + t


def pack(
    examples: list[tuple[list[int], list[int]]], rows: int, seq_len: int, pad_id: int
) -> tuple[dict[str, torch.Tensor], list[tuple[list[int], list[int]]]]:
    """Lay examples into ``rows`` rows of ``seq_len`` tokens, in order, each starting a new row when
    it does not fit the rest of the current one (cut to ``seq_len`` when longer).

    Returns the batch, ``input_ids`` / ``labels`` / ``position_ids`` [rows, L], ``segment`` [rows, L]
    (example number in its row, -1 on padding) and ``attention_mask`` [rows, 1, L, L] (bool,
    block-diagonal causal), and the examples left over for the next step.
    """
    ids = torch.full((rows, seq_len), pad_id, dtype=torch.long)  # [R, L]
    labels = torch.full((rows, seq_len), -100, dtype=torch.long)  # [R, L]
    pos = torch.zeros((rows, seq_len), dtype=torch.long)  # [R, L]
    seg = torch.full((rows, seq_len), -1, dtype=torch.long)  # [R, L]
    r, col, k, i = 0, 0, 0, 0
    while i < len(examples) and r < rows:
        e_ids, e_lab = examples[i]
        n = min(len(e_ids), seq_len)
        if col + n > seq_len:
            r, col, k = r + 1, 0, 0
            continue
        ids[r, col : col + n] = torch.tensor(e_ids[:n])
        labels[r, col : col + n] = torch.tensor(e_lab[:n])
        pos[r, col : col + n] = torch.arange(n)
        seg[r, col : col + n] = k
        col, k, i = col + n, k + 1, i + 1
    causal = torch.tril(torch.ones(seq_len, seq_len, dtype=torch.bool))  # [L, L]
    same = (seg[:, :, None] == seg[:, None, :]) & (seg[:, :, None] >= 0)  # [R, L, L]
    eye = torch.eye(seq_len, dtype=torch.bool)  # padding attends to itself (no empty softmax row)
    mask = ((same & causal) | eye)[:, None]  # [R, 1, L, L]
    batch = {
        "input_ids": ids,
        "labels": labels,
        "position_ids": pos,
        "segment": seg,
        "attention_mask": mask,
    }
    return batch, examples[i:]


def _logits_and_targets(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits of a packed batch and the token each position predicts (-100: not counted)."""
    logits = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
    ).logits  # [R, L, V]
    target = batch["labels"][:, 1:]  # [R, L-1], token t+1 predicted at t
    # a label right after an example's start belongs to the previous example only within a segment
    same = batch["segment"][:, 1:] == batch["segment"][:, :-1]  # [R, L-1]
    return logits, target.masked_fill(~same, -100)


def packed_loss(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Mean NLL of the labelled tokens of a packed batch, and their count."""
    logits, target = _logits_and_targets(model, batch)
    nll = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), target.reshape(-1), reduction="sum"
    )
    count = int((target != -100).sum())
    return nll / max(count, 1), count


def otr_surrogate(logp: torch.Tensor, target: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
    """One-Token Rollout's policy-gradient surrogate for given samples ("One-Token Rollout: Guiding
    Supervised Fine-Tuning of LLMs with Policy Gradient").

    logp [M, V] (log-softmax at M target positions), target [M] (the ground-truth tokens y*), samples
    [M, K] (tokens y_k drawn from pi = exp(logp), no gradient) -> the scalar

        r_k = 1[y_k = y*],   b_k = (sum_j r_j - r_k) / (K - 1),
        L = -(1 / M) sum_m (1 / K) sum_k (r_k - b_k) log pi(y_k)

    Each position is a one-step episode whose reward is 1 for the ground-truth token; b_k, the mean
    reward of the other K - 1 samples, does not depend on y_k, so E[-grad L] = (1/M) sum_m grad p(y*_m),
    the exact policy gradient of E_pi[r] = p(y*) (the abstract gives no formula for the baseline;
    this leave-one-out mean is ours). A position where no sample hits y* (or all do) gives 0.
    """
    k = samples.shape[1]
    r = (samples == target[:, None]).to(logp.dtype)  # [M, K]
    b = (r.sum(1, keepdim=True) - r) / (k - 1)  # [M, K]
    lp = logp.gather(1, samples)  # [M, K]
    return -((r - b) * lp).mean()


def otr_loss(
    logits: torch.Tensor, target: torch.Tensor, *, k: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One-Token Rollout on the counted positions: logits [..., V], target [...] (-100: not counted)
    -> (the surrogate of :func:`otr_surrogate` with K = ``k`` tokens sampled from softmax(logits) at
    every counted position, the mean NLL of those positions, detached)."""
    keep = target != -100  # [...]
    lg = logits[keep].float()  # [M, V]
    y = target[keep]  # [M]
    logp = torch.log_softmax(lg, dim=-1)  # [M, V]
    with torch.no_grad():
        samples = torch.multinomial(logp.exp(), k, replacement=True, generator=generator)  # [M, K]
        nll = -logp.gather(1, y[:, None]).mean() if len(y) else logp.new_zeros(())
    if not len(y):
        return logp.sum() * 0.0, nll
    return otr_surrogate(logp, y, samples), nll


def _steps_batches(
    stream: Examples, tokenizer: Any, cfg: SFTConfig, pending: list[tuple[list[int], list[int]]]
) -> tuple[dict[str, torch.Tensor], list[tuple[list[int], list[int]]]]:
    """Enough examples for one step's rows (``pending`` first), packed."""
    examples, room = list(pending), cfg.rows * cfg.seq_len
    while sum(min(len(e[0]), cfg.seq_len) for e in examples) < room:
        examples.append(encode(tokenizer, *next(stream)))
    return pack(examples, cfg.rows, cfg.seq_len, tokenizer.pad_token_id)


@torch.no_grad()
def heldout_loss(model: Any, tokenizer: Any, pairs: list[tuple[Problem, str]], cfg: SFTConfig) -> float:
    """Token-mean NLL of the held-out targets (packed the same way)."""
    model.eval()
    todo = [encode(tokenizer, p, t) for p, t in pairs]
    total, count = 0.0, 0
    while todo:
        batch, todo = pack(todo, cfg.rows, cfg.seq_len, tokenizer.pad_token_id)
        loss, n = packed_loss(model, batch)
        total, count = total + float(loss) * n, count + n
    return total / max(count, 1)


# ----------------------------------------------------------------------------------------- the run


def _evaluate(
    model: Any, tokenizer: Any, stream: Examples, rl: Any, verifier: Any, cfg: SFTConfig
) -> dict:
    from rlvr.train.evaluation import evaluate_problems

    out: dict[str, float] = {}
    pairs = stream.heldout()
    if pairs:
        out["heldout_loss"] = heldout_loss(model, tokenizer, pairs, cfg)
    if cfg.eval_samples:
        res = evaluate_problems(model, tokenizer, stream.task.heldout, rl, verifier, n=cfg.eval_samples)
        out["pass@1"] = res.summary()["pass@1"]
    model.train()
    return out


def sft(
    cfg: SFTConfig, *, run_dir: str | Path, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Fine-tune with ``cfg`` into ``run_dir``; returns the summary (also ``summary.json``): held-out
    loss and pass@1 before and after, the losses of every step, and ``model``, the HF directory."""
    from rlvr.models.hf import load_model
    from rlvr.models.lora import add_adapters, load_adapters, save_plain, trainable_parameters
    from rlvr.models.tiny import EMBEDDED, _lr_at, ensure_base
    from rlvr.train.checkpoint import latest_checkpoint, load_trainer_state, save_checkpoint
    from rlvr.train.setup import build_task, build_verifier
    from rlvr.train.trainer import _StopOnSignals

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    base = (
        Path(cfg.model_path)
        if cfg.model_path
        else ensure_base(EMBEDDED[cfg.embedded], progress=progress)
    )
    ck = latest_checkpoint(run_dir) if resume else None
    model, tokenizer = load_model(base if cfg.lora_rank else ck or base, device=cfg.device)
    if cfg.lora_rank:  # the base with adapters: fresh, or the checkpoint's on a resume
        model = (
            load_adapters(model, ck)
            if ck is not None
            else add_adapters(model, rank=cfg.lora_rank, alpha=cfg.lora_alpha, dropout=0.0)
        )
    rl = _rl_config(cfg)
    stream = Examples(cfg, build_task(rl, tokenizer))
    verifier = build_verifier(rl, log=lambda s: None)
    opt = torch.optim.AdamW(trainable_parameters(model), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # OTR's token samples: a generator of their own on the model's device, checkpointed
    otr_gen = None
    if cfg.loss == "otr":
        otr_gen = torch.Generator(device=next(model.parameters()).device).manual_seed(cfg.seed)
    step, losses, pending, before = 0, [], [], None
    if ck is not None:
        st = load_trainer_state(ck)
        if otr_gen is not None:
            otr_gen.set_state(st["otr_rng"])
        opt.load_state_dict(st["optimizer"])
        stream.load_state_dict(st["data"])
        step, losses, pending, before = st["step"], st["losses"], st["pending"], st["before"]
        torch.set_rng_state(st["torch_rng"])
        metrics = run_dir / "metrics.jsonl"  # lines after the checkpoint are redone
        if metrics.exists():
            kept = [ln for ln in metrics.read_text().splitlines() if json.loads(ln)["step"] <= step]
            atomic_write_text(metrics, "".join(ln + "\n" for ln in kept))
    else:
        atomic_write_text(run_dir / "sft_config.json", json.dumps(cfg.to_dict(), indent=2))
        before = _evaluate(model, tokenizer, stream, rl, verifier, cfg)
        console.print(f"held-out before: {before}")
    model.train()

    def checkpoint() -> None:
        state = {
            "optimizer": opt.state_dict(),
            "data": stream.state_dict(),
            "step": step,
            "losses": losses,
            "pending": pending,
            "before": before,
            "torch_rng": torch.get_rng_state(),
        }
        if otr_gen is not None:
            state["otr_rng"] = otr_gen.get_state()
        save_checkpoint(run_dir, step, model, tokenizer, state, keep=cfg.keep_checkpoints)

    stop: list[int] = []
    columns = [
        TextColumn("[bold]sft"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(),
    ]
    with _StopOnSignals(stop), Progress(*columns, console=console, disable=not progress) as bar:
        job = bar.add_task("sft", total=cfg.steps, completed=step, loss=float("nan"))
        while step < cfg.steps:
            batch, pending = _steps_batches(stream, tokenizer, cfg, pending)
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, total=cfg.steps, warmup=cfg.warmup, peak=cfg.lr)
            line: dict[str, float] = {}
            if otr_gen is None:
                loss, _ = packed_loss(model, batch)
                nll = loss.detach()
            else:  # the surrogate is trained on; the NLL of the same forward is what is logged
                logits, target = _logits_and_targets(model, batch)
                loss, nll = otr_loss(logits[:, :-1], target, k=cfg.otr_samples, generator=otr_gen)
                line["otr_loss"] = float(loss.detach())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable_parameters(model), 1.0)
            opt.step()
            step += 1
            losses.append(float(nll))
            real = float((batch["segment"] >= 0).float().mean())
            bar.update(job, advance=1, loss=losses[-1])
            with open(run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps({"step": step, "loss": losses[-1], "fill": real} | line) + "\n")
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or stop:
                checkpoint()
            if stop:
                raise _interrupted(stop[0], run_dir, step)
    after = _evaluate(model, tokenizer, stream, rl, verifier, cfg)
    console.print(f"held-out after: {after}")
    model.eval()
    with atomic_dir(run_dir / "model") as tmp:
        save_plain(model, tmp)  # LoRA: merged, a plain directory that rlvr train --model takes
        tokenizer.save_pretrained(tmp)
    summary = {
        "run_dir": str(run_dir),
        "model": str(run_dir / "model"),
        "base": str(base),
        "steps": cfg.steps,
        "before": before,
        "after": after,
        "losses": losses,
    }
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    return summary
