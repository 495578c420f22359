"""Build the embedded tiny base model, a real Hugging Face checkpoint, from nothing.

The model is a small Qwen2 decoder (``Qwen2ForCausalLM``) with a byte-level BPE tokenizer trained with
``tokenizers`` on the task's own text (digits kept one per token), a chat template, and weights
warm-started by supervised training on reasoning-gym samples of the default task. The result loads with
``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained`` like any other model
(:func:`rlvr.models.hf.load_model`).

A recipe with ``demos`` set trains on whole demonstration episodes of an environment instead (the loss on
the assistant's tokens only), so that the base knows a tool-call format that RL could not discover:
``demos="calculator"`` gives the tool base of the ``calculator`` environment (:data:`EMBEDDED`).

Building is deterministic given the recipe, and the result is cached under
``$RLVR_CACHE`` (default ``~/.cache/rlvr``) in ``base/<hash of the recipe>/``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

from rlvr.data.prompts import format_prompt
from rlvr.data.tasks import Problem, ReasoningGymTask, mixture_kwargs
from rlvr.models.hf import quiet_progress_bars
from rlvr.utils import atomic_dir, console, seed_everything

__all__ = [
    "EMBEDDED",
    "REASONER_MIXTURE",
    "REFERENCE_WEIGHTS",
    "TinyRecipe",
    "build_base",
    "build_portable",
    "cache_dir",
    "check_reference",
    "ensure_base",
    "weights_sha",
]

PAD, EOS, USER, ASSISTANT, SYSTEM = "<|pad|>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"
UNK = "<|endoftext|>"  # Qwen2Tokenizer's unknown token; in the vocabulary so that it adds none
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@dataclass(frozen=True)
class TinyRecipe:
    """Everything that determines the base model; its hash names the cache entry."""

    task: str = "chain_sum"
    task_kwargs: dict[str, Any] = field(
        default_factory=lambda: {"min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 1}
    )
    heldout_size: int = 256  # the same held-out split as training uses, so SFT never sees it
    seed: int = 0
    vocab_size: int = 400
    hidden_size: int = 128
    num_layers: int = 3
    num_heads: int = 4
    intermediate_size: int = 384
    max_positions: int = 256
    sft_steps: int = 300
    sft_batch: int = 64
    sft_lr: float = 3e-3
    sft_warmup: int = 50
    tokenizer_corpus: int = 4000
    version: int = 3  # bump when the build code changes what it produces
    demos: str = ""
    """Demonstration source of the SFT warm start: "" (question -> answer pairs of ``task``),
    "calculator" (whole episodes of the calculator environment, see ``_calculator_demo``) or
    "solutions" (worked solutions, :data:`rlvr.data.solutions.SOLVERS`, trained by ``rlvr sft``'s
    packed loop: ``sft_batch`` packed rows of ``max_positions`` tokens a step, see
    ``_build_reasoner``)."""
    mixture: dict[str, Any] = field(default_factory=dict)
    """A weighted mixture of reasoning-gym tasks instead of ``task`` / ``task_kwargs`` (task ->
    {weight, and the task's knobs}, as a train config's ``task.mixture``)."""

    def key(self) -> str:
        """Hash of every field; a field added later and left at its empty default ("" or {}) is left
        out (so adding such a field keeps the keys of existing recipes), and a recipe with demos also
        hashes the version of the demonstration (or worked-solution) code."""
        d = asdict(self)
        for f in fields(self):
            empty = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
            if empty in ("", {}) and d[f.name] == empty:
                del d[f.name]
        if self.demos == "solutions":
            d["solutions_version"] = _SOLUTIONS_VERSION
        elif self.demos:
            d["demo_version"] = _DEMO_VERSION
        blob = json.dumps(d, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


REASONER_MIXTURE: dict[str, dict[str, Any]] = {
    "chain_sum": {"weight": 3.0, "min_terms": 2, "max_terms": 4, "min_digits": 1, "max_digits": 1},
    "basic_arithmetic": {
        "weight": 1.0,
        "min_terms": 2,
        "max_terms": 3,
        "min_digits": 1,
        "max_digits": 1,
    },
    "gcd": {"weight": 1.0, "min_value": 2, "max_value": 40},
    "prime_factorization": {"weight": 1.0, "min_value": 4, "max_value": 60},
    "simple_equations": {"weight": 1.0, "min_terms": 2, "max_terms": 2, "min_value": 1, "max_value": 9},
}
"""The task mixture of the ``reasoner`` base (and of the ``reasoner_grpo`` recipe's ``task.mixture``)."""

_REASONER = TinyRecipe(
    demos="solutions",
    mixture=REASONER_MIXTURE,
    vocab_size=600,
    hidden_size=128,
    num_layers=4,
    num_heads=4,
    intermediate_size=384,
    max_positions=256,
    sft_steps=1400,
    sft_batch=8,
    sft_lr=4e-3,
    sft_warmup=50,
)
"""The recipe of the embedded ``reasoner`` base; ``reasoner_teacher`` is the same, trained longer."""

EMBEDDED: dict[str, TinyRecipe] = {
    "default": TinyRecipe(),
    # the tool base of the calculator environment: chain sums of 3 two-digit terms, which the
    # no-tool base rarely gets right, in episodes of about 85 tokens; narrower than the default
    # (hidden 96, MLP 256) so that the 300 SFT steps on whole episodes build in about 70 s on 2 CPU
    # cores, and still learn to copy the expression into the call and the result into the answer
    "calculator": TinyRecipe(
        demos="calculator",
        task_kwargs={"min_terms": 3, "max_terms": 3, "min_digits": 2, "max_digits": 2},
        hidden_size=96,
        intermediate_size=256,
    ),
    # the reasoning base: worked solutions (rlvr sft on SOLVERS' steps) of a weighted mixture of five
    # task families, about 10 to 80 tokens of steps before the answer; harder problems (more terms,
    # bigger numbers, more Euclid divisions or prime factors) take more lines
    # (0.9 M parameters, 4 layers of 128; 1400 steps of 8 packed rows of 256 tokens; 480 steps gave
    # 8.2% held-out pass@1, 800 steps 11.9%, 1400 steps 23.8% with pass@16 76.6%)
    "reasoner": _REASONER,
    # the teacher of the reasoner's distillation and hybrid benchmarks (benchmarks/teachers.py): the
    # reasoner's recipe trained longer (3000 SFT steps instead of 1400), so the same tokenizer (its
    # corpus fields are the reasoner's) and architecture, and a stronger model
    "reasoner_teacher": replace(_REASONER, sft_steps=3000),
    # the student of the opd recipes: the default's recipe with 60 SFT steps instead of 300, so the
    # same tokenizer (its fields are the default's) and architecture, but a weaker model that the
    # default can teach (held-out chain_sum pass@1 4.0% against the default's 22.2%, 256 problems x
    # 8 samples; built in about 23 s on 2 CPU cores)
    "student": TinyRecipe(sft_steps=60, sft_warmup=10),
}
"""Named recipes of the embedded base models (``ensure_base(EMBEDDED[name])``)."""


def cache_dir() -> Path:
    return Path(os.environ.get("RLVR_CACHE", Path.home() / ".cache" / "rlvr"))


def _completion(answer: str) -> str:
    return f"<answer>{answer}</answer>"


def _train_tokenizer(
    texts: list[str], vocab_size: int, extra_tokens: tuple[str, ...] = ()
) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    # Qwen2's own pre-tokenizer (one token per digit), so that AutoTokenizer, which loads this
    # directory as a Qwen2Tokenizer, tokenizes exactly as the build did
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS, USER, ASSISTANT, SYSTEM, UNK],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=PAD, unk_token=UNK, padding_side="left"
    )
    fast.add_tokens(["<answer>", "</answer>", *extra_tokens])
    fast.chat_template = CHAT_TEMPLATE
    return fast


# ------------------------------------------------------------------ demonstration episodes (demos=...)

_DEMO_VERSION = 1  # bump when the demonstrations change; hashed into the key of recipes with demos
_SOLUTIONS_VERSION = 1  # bump when the worked solutions change; hashed into demos="solutions" keys
# tokens of the tool-call format, single tokens in a demos base (the default base has none of them)
_TOOL_TOKENS = ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<|tool|>")
# shares of the calculator demonstrations: a correct tool call, a direct answer (no tool), and a call
# with one digit of the expression wrong whose (wrong) result is then answered
_CALC_MIX = {"tool": 0.65, "direct": 0.05, "wrong": 0.3}

Segments = list[tuple[str, bool]]  # (text, is a model turn); a model turn is followed by EOS


def _perturb_digit(expr: str, rng: random.Random) -> str:
    """``expr`` with one digit changed (never a leading digit to 0, so it stays a valid number)."""
    spots = [i for i, c in enumerate(expr) if c.isdigit()]
    i = rng.choice(spots)
    leading = i == 0 or not expr[i - 1].isdigit()
    choices = [d for d in ("123456789" if leading else "0123456789") if d != expr[i]]
    return expr[:i] + rng.choice(choices) + expr[i + 1 :]


def _calculator_demo(problem: Problem, rng: random.Random, chat: Any) -> Segments:
    """One demonstration episode of the ``calculator`` environment, played through the environment
    itself so that prompts and observations are exactly what the runner shows: with probability
    ``_CALC_MIX`` a correct calculator call then its result as the answer, a direct answer, or a call
    with one wrong digit then its (wrong) result as the answer."""
    from rlvr.envs.calculator import CalculatorEnv
    from rlvr.envs.tools import format_tool_call

    env = CalculatorEnv(problem)
    segs: Segments = [(chat.prompt(env.reset(0), env.system), False)]
    u = rng.random()
    if u < _CALC_MIX["direct"]:
        return [*segs, (_completion(problem.answer), True)]
    expr = str(problem.meta.get("expression") or problem.question.split(":")[-1].rstrip(" ="))
    if u >= _CALC_MIX["direct"] + _CALC_MIX["tool"]:
        expr = _perturb_digit(expr, rng)
    call = format_tool_call("calculator", {"expression": expr})
    obs, _, done, info = env.step(call)
    if done or info.get("tool_errors"):
        raise RuntimeError(f"calculator demo: the call {call!r} failed: {obs!r}")
    result = obs.removeprefix("<tool_response>").removesuffix("</tool_response>")
    segs += [(call, True), (chat.observation(obs, info.get("role", "tool")), False)]
    return [*segs, (_completion(result), True)]


_DEMOS = {"calculator": _calculator_demo}


def _demo_text(segs: Segments) -> str:
    return "".join(text + (EOS if model_turn else "") for text, model_turn in segs)


def _demo_ids(segs: Segments, tokenizer: Any, eos_id: int) -> tuple[list[int], list[int]]:
    """Token ids of a demonstration, each segment tokenized on its own as the runner does, and the
    labels: the ids on model turns (and their EOS), -100 elsewhere."""
    ids: list[int] = []
    labels: list[int] = []
    for text, model_turn in segs:
        part = tokenizer(text, add_special_tokens=False)["input_ids"] + ([eos_id] if model_turn else [])
        ids += part
        labels += part if model_turn else [-100] * len(part)
    return ids, labels


def _lr_at(step: int, *, total: int, warmup: int, peak: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def _check_recipe(recipe: TinyRecipe) -> None:
    """What can be checked before a build starts (in this process, before a child is started)."""
    if recipe.demos and recipe.demos not in (*_DEMOS, "solutions"):
        raise ValueError(
            f"TinyRecipe.demos: unknown demonstration source {recipe.demos!r}; "
            f"valid: {', '.join(sorted([*_DEMOS, 'solutions']))} (or '' for none)"
        )
    if recipe.mixture and recipe.demos != "solutions":
        raise ValueError('TinyRecipe.mixture: only demos = "solutions" builds on a mixture')


def _recipe_task(recipe: TinyRecipe) -> ReasoningGymTask:
    """The recipe's problems: ``task`` with ``task_kwargs``, or the weighted ``mixture``."""
    if recipe.mixture:
        name, kwargs = "composite", mixture_kwargs(recipe.mixture)
    else:
        name, kwargs = recipe.task, dict(recipe.task_kwargs)
    return ReasoningGymTask(name, seed=recipe.seed, heldout_size=recipe.heldout_size, **kwargs)


def _base_info(recipe: TinyRecipe, t0: float, **extra: Any) -> str:
    """The text of ``rlvr_base.json``: the recipe, its key, the build time and numerics."""
    return json.dumps(
        {
            "recipe": asdict(recipe),
            "key": recipe.key(),
            "build_seconds": round(time.perf_counter() - t0, 1),
            "numerics": {
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "MKL_CBWR": os.environ.get("MKL_CBWR", ""),
                "ONEDNN_MAX_CPU_ISA": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
                "threads": torch.get_num_threads(),
            },
            **extra,
        },
        indent=2,
    )


def _architecture(recipe: TinyRecipe, tokenizer: Any) -> Qwen2ForCausalLM:
    """A freshly initialised Qwen2 decoder of the recipe's sizes (tied embeddings)."""
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    pad_id = tokenizer.convert_tokens_to_ids(PAD)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_layers,
        num_attention_heads=recipe.num_heads,
        num_key_value_heads=recipe.num_heads,
        max_position_embeddings=recipe.max_positions,
        tie_word_embeddings=True,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        bos_token_id=None,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = eos_id
    model.generation_config.pad_token_id = pad_id
    return model


def _build_reasoner(recipe: TinyRecipe, out_dir: Path, *, progress: bool) -> Path:
    """``demos = "solutions"``: a base that writes worked steps before its answer.

    1. a tokenizer trained on prompts and worked solutions of training problems (``mixture`` or
       ``task``; the held-out questions are never among them);
    2. a freshly initialised model of the recipe's sizes, saved with it;
    3. ``rlvr sft`` on that model (:func:`rlvr.train.sft.sft`: packed rows, loss on the solution
       tokens, warm-up + cosine) for ``sft_steps`` steps of ``sft_batch`` rows of ``max_positions``
       tokens, with the recipe's held-out split (``heldout_size``, split seed = ``seed``) kept out of
       the training stream, so that a train config with the same split never evaluates on a
       problem the base was trained on.
    """
    import shutil
    import tempfile

    from rlvr.data.solutions import solve
    from rlvr.train.sft import SFTConfig, sft

    t0 = time.perf_counter()
    task = _recipe_task(recipe)
    plain = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE()))
    plain.chat_template = CHAT_TEMPLATE
    texts = []
    for p in task.next(recipe.tokenizer_corpus):
        solution = solve(p)
        if solution is not None:
            texts.append(format_prompt(plain, p.question) + solution)
    tokenizer = _train_tokenizer(texts, recipe.vocab_size)
    model = _architecture(recipe, tokenizer)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    quiet_progress_bars()
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.build.") as work:
        init = Path(work) / "init"
        model.save_pretrained(init, safe_serialization=True)
        tokenizer.save_pretrained(init)
        cfg = SFTConfig(
            model_path=str(init),
            source="task",
            task=recipe.task,
            task_kwargs=dict(recipe.task_kwargs),
            mixture=dict(recipe.mixture),
            heldout_size=recipe.heldout_size,
            split_seed=recipe.seed,
            seed=recipe.seed,
            steps=recipe.sft_steps,
            rows=recipe.sft_batch,
            seq_len=recipe.max_positions,
            lr=recipe.sft_lr,
            warmup=recipe.sft_warmup,
            checkpoint_every=recipe.sft_steps,
            keep_checkpoints=1,
            eval_samples=0,  # held-out loss only; pass@1 is rlvr eval's
        )
        summary = sft(cfg, run_dir=Path(work) / "sft", progress=progress)
        with atomic_dir(out_dir) as tmp:
            for f in Path(summary["model"]).iterdir():
                shutil.copy2(f, tmp / f.name)
            info = _base_info(
                recipe,
                t0,
                sft={"before": summary["before"], "after": summary["after"]},
            )
            (tmp / "rlvr_base.json").write_text(info)
    return out_dir


def build_base(recipe: TinyRecipe, out_dir: str | Path, *, progress: bool = True) -> Path:
    """Build the tiny base model described by ``recipe`` into ``out_dir`` (written atomically)."""
    _check_recipe(recipe)
    seed_everything(recipe.seed)
    if recipe.demos == "solutions":
        return _build_reasoner(recipe, Path(out_dir), progress=progress)
    task = _recipe_task(recipe)
    t0 = time.perf_counter()

    # 1. tokenizer, trained on prompts and answers (or demonstrations) of training problems only
    corpus_problems = task.next(recipe.tokenizer_corpus)
    plain = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE()))
    plain.chat_template = CHAT_TEMPLATE
    demo = None
    if recipe.demos:
        from rlvr.envs.episodes import ChatFormat

        demo, demo_rng = _DEMOS[recipe.demos], random.Random(recipe.seed)
        plain.eos_token = EOS
        chat = ChatFormat(plain)
        texts = [_demo_text(demo(p, demo_rng, chat)) for p in corpus_problems]
        tokenizer = _train_tokenizer(texts, recipe.vocab_size, _TOOL_TOKENS)
        chat = ChatFormat(tokenizer)
    else:
        texts = [format_prompt(plain, p.question) + _completion(p.answer) for p in corpus_problems]
        tokenizer = _train_tokenizer(texts, recipe.vocab_size)
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    pad_id = tokenizer.convert_tokens_to_ids(PAD)

    # 2. architecture
    model = _architecture(recipe, tokenizer)
    model.train()

    # 3. supervised warm start: loss on the answer tokens (and EOS) only
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.sft_lr, weight_decay=0.0)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [
        TextColumn("[bold]base model"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=console, disable=not progress, transient=False) as bar:
        job = bar.add_task("sft", total=recipe.sft_steps, loss=float("nan"))
        for step in range(recipe.sft_steps):
            batch = task.next(recipe.sft_batch)
            if demo is not None:
                pairs = [_demo_ids(demo(p, demo_rng, chat), tokenizer, eos_id) for p in batch]
            else:
                prompts = tokenizer(
                    [format_prompt(tokenizer, p.question) for p in batch], add_special_tokens=False
                )["input_ids"]
                answers = tokenizer([_completion(p.answer) for p in batch], add_special_tokens=False)[
                    "input_ids"
                ]
                pairs = [
                    (pr + an + [eos_id], [-100] * len(pr) + an + [eos_id])
                    for pr, an in zip(prompts, answers, strict=True)
                ]
            width = max(len(s) for s, _ in pairs)
            ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)  # [b, L] right-padded
            labels = torch.full((len(pairs), width), -100, dtype=torch.long)  # [b, L]
            attn = torch.zeros((len(pairs), width), dtype=torch.long)  # [b, L]
            for i, (s, lab) in enumerate(pairs):
                ids[i, : len(s)] = torch.tensor(s)
                labels[i, : len(s)] = torch.tensor(lab)
                attn[i, : len(s)] = 1
            for g in opt.param_groups:
                g["lr"] = _lr_at(
                    step, total=recipe.sft_steps, warmup=recipe.sft_warmup, peak=recipe.sft_lr
                )
            loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            bar.update(job, advance=1, loss=loss.item())

    model.eval()
    out_dir = Path(out_dir)
    quiet_progress_bars()  # no "Writing model shards" bar in the log
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "rlvr_base.json").write_text(_base_info(recipe, t0))
    return out_dir


REFERENCE_WEIGHTS: dict[str, str] = {
    EMBEDDED["default"].key(): "3a3253ae592c2fe5",
    EMBEDDED["calculator"].key(): "a5666575d0679554",
    EMBEDDED["reasoner"].key(): "6c18141726a5b2d0",
    EMBEDDED["reasoner_teacher"].key(): "ef735142d0cccd8b",
    EMBEDDED["student"].key(): "dc9b783d92703c66",
}
"""Recipe key -> the first 16 hex digits of the sha256 of ``model.safetensors`` that a portable build
(:func:`build_portable`) of that shipped recipe gives; the README's figures come from these models."""


def weights_sha(model_dir: str | Path) -> str:
    """The first 16 hex digits of the sha256 of ``model_dir/model.safetensors``."""
    return hashlib.sha256((Path(model_dir) / "model.safetensors").read_bytes()).hexdigest()[:16]


def build_portable(recipe: TinyRecipe, out_dir: str | Path, *, progress: bool = True) -> Path:
    """:func:`build_base` with portable numerics (:mod:`rlvr.numerics`) and ``BUILD_THREADS`` torch
    threads, so that every x86-64 machine with AVX2 builds the same weights. In this process when its
    torch already computes portably (the ``rlvr`` command sets that up before importing torch) or
    cannot (``RLVR_NUMERICS=native``, no AVX2: then the build is this machine's own, and says so);
    otherwise in a child process started with the portable environment."""
    import subprocess
    import sys

    from rlvr.numerics import build_threads, portable_env, portable_in_effect

    _check_recipe(recipe)
    extra = portable_env()
    if portable_in_effect() or not extra:
        if not portable_in_effect() and progress:
            console.print(
                "[yellow]base model: portable numerics are off (RLVR_NUMERICS=native, a variable "
                "of rlvr.numerics.PORTABLE_ENV set otherwise, or no AVX2): this build may differ "
                "from other machines'[/yellow]"
            )
        with build_threads():
            return build_base(recipe, out_dir, progress=progress)
    cmd = [sys.executable, "-m", "rlvr.models.tiny", "--recipe", json.dumps(asdict(recipe))]
    cmd += ["--out", str(out_dir)] + ([] if progress else ["--quiet"])
    proc = subprocess.run(cmd, env={**os.environ, **extra}, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"building the base model in a child process with portable numerics failed (exit "
            f"{proc.returncode}); its output is above. Command: {' '.join(cmd)}"
        )
    return Path(out_dir)


def ensure_base(recipe: TinyRecipe | None = None, *, progress: bool = True) -> Path:
    """The cached base model for ``recipe``, building it first (:func:`build_portable`) if it is
    not cached yet; a fresh build of a shipped recipe whose weights differ from
    :data:`REFERENCE_WEIGHTS` is reported (its results will not match the README's)."""
    recipe = recipe or TinyRecipe()
    path = cache_dir() / "base" / recipe.key()
    if (path / "model.safetensors").exists() and (path / "rlvr_base.json").exists():
        if progress:
            console.print(f"base model: reusing cached {path}")
        return path
    if progress:
        console.print(f"base model: building {path} (cached for later runs)")
    build_portable(recipe, path, progress=progress)
    check_reference(recipe, path)
    return path


def check_reference(recipe: TinyRecipe, path: str | Path) -> bool | None:
    """Compare a build of ``recipe`` at ``path`` with :data:`REFERENCE_WEIGHTS`: None when the recipe
    has no reference, True when the weights match, False (with a warning) when they do not."""
    want = REFERENCE_WEIGHTS.get(recipe.key())
    if want is None:
        return None
    got = weights_sha(path)
    if got != want:
        console.print(
            f"[yellow]base model: {path} has weights {got}, not the reference build's {want}; "
            "results on it will differ from the README's (see rlvr.numerics)[/yellow]"
        )
    return got == want


def _main(argv: list[str] | None = None) -> int:
    """``python -m rlvr.models.tiny --recipe JSON --out DIR``: the child process of
    :func:`build_portable`."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m rlvr.models.tiny", description=_main.__doc__)
    ap.add_argument("--recipe", required=True, help="the TinyRecipe's fields as JSON")
    ap.add_argument("--out", required=True, help="where the model directory goes")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    from rlvr.numerics import build_threads

    with build_threads():
        build_base(TinyRecipe(**json.loads(args.recipe)), args.out, progress=not args.quiet)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
