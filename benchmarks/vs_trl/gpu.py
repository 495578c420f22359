"""rlvr vs TRL's GRPOTrainer on one GPU (issue 8, GPU part): a random Qwen2 of the Qwen2-0.5B shape.

    python benchmarks/vs_trl/gpu.py --out DIR                         # the device machine (GPU.md)
    python benchmarks/vs_trl/gpu.py --out DIR --device cpu --small    # the same pipeline, tiny, on CPU

Standard library only at the top (it is also the file of the reward function, loaded by rlvr, and of
the worker processes). One command does everything, in separate processes, one after another:

1. ``build`` (rlvr's interpreter): a Qwen2ForCausalLM from a config, random weights from a fixed seed,
   no download, saved with a tokenizer as an HF directory, and the prompts as a JSONL file.
   Full shape: hidden 896, 24 layers, 14 heads, 2 KV heads, MLP 4864, vocabulary 151,936, tied
   embeddings (494 M parameters). ``--small``: hidden 64, 2 layers, 4 heads, 2 KV heads, MLP 128,
   vocabulary 4,096. The tokenizer is a byte-level BPE like Qwen2's: specials, the 256 byte symbols
   (one token per prompt character, no merges) and filler words `` w<id>`` up to the model's V; its EOS
   ``<|end|>`` has id V, outside the model's output, so no completion ever ends early and both sides
   always generate all ``--new-tokens`` (the work is equal). Every prompt is exactly ``--prompt-tokens``
   tokens after the chat template (random letters, then the instruction rlvr appends).
2. ``trl`` (TRL's interpreter): TRL 1.16 ``GRPOTrainer`` on those prompts, HF ``generate``.
3. ``rlvr`` (rlvr's interpreter), once per ``--rlvr-micro-batches`` value: ``rlvr.train.train`` with
   the grpo recipe on the same prompts (a file task), its own KV-cache sampler.

Both sides: B prompts x G samples (16 x 8; small 8 x 2), temperature 1.0, GRPO with beta = 0, one
optimizer step per batch, lr 1e-6, the same dense reward (``word_parity``: the share of completion
words whose last digit is even; its value is irrelevant to speed but gives non-zero advantages),
``--dtype bfloat16`` (TRL ``bf16=True``; rlvr ``model.dtype='bfloat16'``: float32 master weights, bf16
autocast) or float32. TRL keeps GRPOConfig's defaults otherwise (gradient checkpointing on); no vLLM.

Each worker speaks protocol.py's line protocol (as in run.py): the driver runs ``--warmup`` steps,
then ``--steps`` measured steps. A step's time is the wall time between two optimizer-step ends.
Pieces (generation, scoring, learner forward, backward, optimizer) are timed from outside as in run.py.
GPU memory: ``torch.cuda.max_memory_allocated`` / ``max_memory_reserved``, read and reset at every step
end (so the whole-run peak is the max over steps and the start-up) and the peak of the measured steps.
Writes DIR/gpu_results.json and DIR/gpu_results.md (the table), and the workers' logs DIR/*.log.
Model and data go to ``--work`` (default: a fresh temporary directory), never to DIR.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PIECES = ["gen", "score", "logp", "backward", "optim"]
LR = 1e-6

SHAPES: dict[str, dict[str, int]] = {
    "full": {  # Qwen2-0.5B
        "hidden_size": 896,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "intermediate_size": 4864,
        "vocab_size": 151936,
        "prompts": 16,
        "samples": 8,
        "prompt_tokens": 64,
        "new_tokens": 256,
    },
    "small": {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
        "vocab_size": 4096,
        "prompts": 8,
        "samples": 2,
        "prompt_tokens": 64,
        "new_tokens": 16,
    },
}
SPECIALS = ["<|pad|>", "<|endoftext|>", "<|user|>", "<|assistant|>", "<|eot|>"]  # ids 0..4
EOS = "<|end|>"  # id V: outside the model's output vocabulary, so never sampled
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|eot|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------------- the reward


def word_parity(prompt: str, completion: str, answer: str, **meta: Any) -> float:
    """Share of the completion's words ``wK`` whose last digit is even (0 for no words): a dense,
    cheap reward, the same on both sides; r = #{words with even last digit} / #words."""
    words = [w for w in completion.split() if w[-1:].isdigit()]
    return sum(int(w[-1]) % 2 == 0 for w in words) / len(words) if words else 0.0


# ------------------------------------------------------------------------------- build (rlvr's venv)


def build(work: Path, shape: dict[str, int], rows: int, seed: int) -> dict[str, Any]:
    """Write the model directory, the prompts (JSONL) into ``work``; return their description."""
    import random

    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    from rlvr.data.prompts import INSTRUCTION, format_prompt
    from rlvr.models.hf import load_tokenizer

    v = shape["vocab_size"]
    # byte-level BPE as Qwen2's (AutoTokenizer loads a qwen2 directory as a Qwen2Tokenizer, which keeps
    # the vocabulary and merges but sets Qwen2's pre-tokenizer): the specials, the 256 byte symbols
    # (prompts are spelled with these, one token per character: no merges), then filler words
    # " w<id>" that only sampling produces, up to the model's V; EOS is id V
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {t: i for i, t in enumerate([*SPECIALS, *alphabet])}
    vocab.update({f"\u0120w{i}": i for i in range(len(vocab), v)})  # "\u0120" is the byte-level space
    vocab[EOS] = v
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([*SPECIALS, EOS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token="<|pad|>",
        unk_token="<|endoftext|>",
        padding_side="left",
    )
    fast.chat_template = CHAT_TEMPLATE
    model_dir = work / "model"
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=v,
        hidden_size=shape["hidden_size"],
        intermediate_size=shape["intermediate_size"],
        num_hidden_layers=shape["num_hidden_layers"],
        num_attention_heads=shape["num_attention_heads"],
        num_key_value_heads=shape["num_key_value_heads"],
        max_position_embeddings=32768,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        eos_token_id=v,
        pad_token_id=0,
        bos_token_id=None,
    )
    model = Qwen2ForCausalLM(config)  # float32, random (HF init, fixed seed)
    model.generation_config.eos_token_id = v
    model.generation_config.pad_token_id = 0
    model.save_pretrained(model_dir, safe_serialization=True)
    fast.save_pretrained(model_dir)
    params = sum(p.numel() for p in model.parameters())
    del model

    tokenizer = load_tokenizer(model_dir)  # as rlvr (and TRL) will load it
    fixed = len(tokenizer(format_prompt(tokenizer, ""), add_special_tokens=False)["input_ids"])
    words = shape["prompt_tokens"] - fixed
    if words < 1:
        raise ValueError(f"--prompt-tokens {shape['prompt_tokens']} leaves no room for a question")
    rng = random.Random(seed)
    data = work / "prompts.jsonl"
    with data.open("w") as f:
        for k in range(rows):
            question = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(words))
            text = format_prompt(tokenizer, question)
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) != shape["prompt_tokens"] or max(ids) >= v:
                raise RuntimeError(
                    f"prompt {k}: {len(ids)} tokens (max id {max(ids)}), expected "
                    f"{shape['prompt_tokens']} below {v}"
                )
            row = {"question": question, "content": f"{question}\n{INSTRUCTION}", "answer": "w0"}
            f.write(json.dumps({**row, "prompt_ids": ids}) + "\n")
    return {"model": str(model_dir), "data": str(data), "params": params, "eos_id": v, "rows": rows}


# ------------------------------------------------------------------------------ worker helpers


def _memory(torch: Any, device: str) -> dict[str, float]:
    """GiB peaks since the last reset (then reset), on CUDA; {} on the CPU."""
    if not device.startswith("cuda"):
        return {}
    out = {
        "max_alloc_gib": torch.cuda.max_memory_allocated() / 2**30,
        "max_reserved_gib": torch.cuda.max_memory_reserved() / 2**30,
    }
    torch.cuda.reset_peak_memory_stats()
    return out


def trl_worker(spec: dict[str, Any]) -> None:
    """TRL 1.16 GRPOTrainer on the prompts; reports every step to the driver."""
    from protocol import Timers, Worker

    worker = Worker("trl")
    import torch
    import transformers
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    b, g, t = spec["prompts"], spec["samples"], spec["new_tokens"]
    rows = [json.loads(x) for x in Path(spec["data"]).read_text().splitlines()]
    timers = Timers()
    timers.install_trl_hooks()
    info: dict[str, Any] = {}

    def _score(completions: list[Any], completion_ids: list[list[int]], **_: Any) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        lengths = [len(c) for c in completion_ids]
        out = [word_parity("", x, "") for x in texts]
        info.update(T=max(lengths), tokens=sum(lengths), reward_mean=sum(out) / len(out))
        return out

    reward = timers.wrap(_score, "score")
    reward.__name__ = "word_parity"

    class Report(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            worker.step_end({**info, "parts": timers.take(), **_memory(torch, spec["device"])})

    gc = {
        "default": {},
        "on": {"gradient_checkpointing": True},
        "off": {"gradient_checkpointing": False},
    }
    config = GRPOConfig(
        output_dir=spec["trl_out"],
        per_device_train_batch_size=b * g,  # one optimizer step per generation batch of B x G
        num_generations=g,
        max_completion_length=t,
        temperature=1.0,
        beta=0.0,
        num_iterations=1,
        learning_rate=LR,
        max_steps=spec["total_steps"],
        use_cpu=spec["device"] == "cpu",
        bf16=spec["dtype"] == "bfloat16",
        seed=0,
        shuffle_dataset=False,
        save_strategy="no",
        report_to="none",
        **gc[spec["trl_gradient_checkpointing"]],
    )
    dataset = Dataset.from_list(
        [{"prompt": [{"role": "user", "content": r["content"]}], "answer": r["answer"]} for r in rows]
    )
    trainer = GRPOTrainer(
        model=spec["model"],
        reward_funcs=reward,
        args=config,
        train_dataset=dataset,
        callbacks=[Report()],
    )
    tok = trainer.processing_class
    ids = tok.apply_chat_template(
        [{"role": "user", "content": rows[0]["content"]}], add_generation_prompt=True, tokenize=True
    )
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    if list(ids) != rows[0]["prompt_ids"]:
        raise RuntimeError(f"TRL's prompt ids {list(ids)} differ from rlvr's {rows[0]['prompt_ids']}")
    if trainer.eos_token_ids != [spec["eos_id"]]:
        raise RuntimeError(f"TRL's EOS ids {trainer.eos_token_ids}; expected [{spec['eos_id']}] only")
    worker.start(
        torch=torch.__version__,
        transformers=transformers.__version__,
        trl=trl.__version__,
        gradient_checkpointing=bool(config.gradient_checkpointing),
        optim=str(config.optim),
        loss_type=config.loss_type,
        bf16=bool(config.bf16),
        device_name=_device_name(torch, spec["device"]),
        **_memory(torch, spec["device"]),
    )
    trainer.train()
    raise RuntimeError("TRL worker: training ended before the driver stopped it")


def _device_name(torch: Any, device: str) -> str:
    return torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "cpu"


def rlvr_overrides(spec: dict[str, Any], micro_batches: int) -> list[str]:
    """The grpo recipe changed to the benchmark's work (what TRL is configured with, too)."""
    fn = json.dumps(f"{Path(__file__).resolve()}:word_parity")
    return [
        f"model.path={json.dumps(spec['model'])}",
        f"model.device='{spec['device']}'",
        f"model.dtype='{spec['dtype']}'",
        "task.source='file'",
        f"task.path={json.dumps(spec['data'])}",
        "task.prompt_field='question'",
        "task.answer_field='answer'",
        "task.heldout_size=1",  # the smallest allowed; the data has rows to spare
        "task.verifier='parity'",
        f"rewards={{parity={{weight=1.0, function={fn}}}}}",
        f"rollout.prompts_per_step={spec['prompts']}",
        f"rollout.samples_per_prompt={spec['samples']}",
        f"rollout.max_new_tokens={spec['new_tokens']}",
        "rollout.temperature=1.0",
        "rollout.top_p=1.0",
        "algo.beta=0.0",
        "algo.epochs=1",
        "algo.minibatches=1",
        f"algo.micro_batches={micro_batches}",
        f"optim.lr={LR}",
        f"train.steps={spec['total_steps']}",
        "train.seed=0",
        "train.checkpoint_every=1000000",
        "eval.before=false",
        "eval.after=false",
        "eval.every=0",
    ]


def rlvr_worker(spec: dict[str, Any], micro_batches: int) -> None:
    """rlvr.train.train with the grpo recipe on the prompts; reports every step to the driver."""
    from protocol import Timers, Worker

    worker = Worker(f"rlvr-mb{micro_batches}")
    import functools

    import torch

    import rlvr
    import rlvr.train.advantage as adv_mod
    import rlvr.train.learner as learner_mod
    import rlvr.train.metrics as metrics_mod
    import rlvr.train.rounds as rounds_mod
    import rlvr.train.trainer as tr
    from rlvr.train import load_config
    from rlvr.train.score import Scorer

    timers = Timers()
    timers.install_torch_hooks()
    shape: dict[str, Any] = {}
    gen_fn = timers.wrap(rounds_mod.generate, "gen")

    def generate(model: Any, prompts: Any, **kw: Any) -> Any:
        roll = gen_fn(model, prompts, **kw)
        shape.update(
            T=int(roll.completion_ids.shape[1]),
            P=int(roll.prompt_ids.shape[1]),
            tokens=int(roll.lengths.sum()),
        )
        return roll

    rounds_mod.generate = generate
    Scorer._components = timers.wrap(Scorer._components, "score")  # the reward components
    logp_fn = learner_mod.sequence_logp
    if spec["rlvr_logit_chunk"] is not None:
        logp_fn = functools.partial(logp_fn, logit_chunk=spec["rlvr_logit_chunk"])
    learner_mod.sequence_logp = adv_mod.sequence_logp = timers.wrap(logp_fn, "logp")
    append = metrics_mod.append_jsonl

    def append_jsonl(path: Any, record: dict[str, Any], **kw: Any) -> None:
        append(path, record, **kw)
        if Path(path).name != "metrics.jsonl":
            return
        worker.step_end(
            {
                **shape,
                "parts": timers.take(),
                "reward_mean": record["reward_mean"],
                "loss": record.get("loss"),
                "own_step_time": record["step_time"],
                **_memory(torch, spec["device"]),
            }
        )

    metrics_mod.append_jsonl = append_jsonl
    cfg = load_config("grpo", rlvr_overrides(spec, micro_batches))
    worker.start(
        torch=torch.__version__,
        rlvr=getattr(rlvr, "__version__", "?"),
        transformers=__import__("transformers").__version__,
        micro_batches=micro_batches,
        logit_chunk=spec["rlvr_logit_chunk"],
        device_name=_device_name(torch, spec["device"]),
        **_memory(torch, spec["device"]),
    )
    tr.train(cfg, run_dir=Path(spec["work"]) / f"rlvr-mb{micro_batches}", progress=False)
    raise RuntimeError("rlvr worker: training ended before the driver stopped it")


# ------------------------------------------------------------------------------------ the driver


def summarize(
    steps: list[dict[str, Any]], ready: dict[str, Any], final: dict[str, Any]
) -> dict[str, Any]:
    walls = [s["wall"] for s in steps]
    parts = {k: statistics.fmean(s["parts"].get(k, 0.0) for s in steps) for k in PIECES}
    parts["other"] = statistics.fmean(walls) - sum(parts.values())
    out: dict[str, Any] = {
        "steps_measured": len(steps),
        "median_s": statistics.median(walls),
        "min_s": min(walls),
        "max_s": max(walls),
        "mean_s": statistics.fmean(walls),
        "steps_per_s": 1 / statistics.median(walls),
        "tokens_per_step": statistics.fmean(s["tokens"] for s in steps),
        "positions_per_step": statistics.fmean(s["T"] for s in steps),
        "tokens_per_s": sum(s["tokens"] for s in steps) / sum(walls),
        "parts_mean_s": parts,
        "peak_rss_mib": final.get("peak_rss_mib"),
    }
    if "max_alloc_gib" in steps[0]:
        out["measured_max_alloc_gib"] = max(s["max_alloc_gib"] for s in steps)
        out["measured_max_reserved_gib"] = max(s["max_reserved_gib"] for s in steps)
    return out


def run_side(
    name: str, cmd: list[str], out: Path, warmup: int, steps: int, deadline: float
) -> dict[str, Any]:
    """Start one worker, run the warm-up block and then measured steps one at a time, until ``steps``
    or the ``deadline`` (``time.perf_counter()`` seconds; at least one measured step), stop it."""
    from run import Proc

    t0 = time.perf_counter()
    p = Proc(name, cmd, out / f"{name}.log", "default")
    try:
        p.wait_ready()
        log(f"{name}: ready after {time.perf_counter() - t0:.1f} s; warm-up {warmup} steps")
        warm, _ = p.block(steps=warmup)
        log(f"{name}: warm-up walls " + ", ".join(f"{s['wall']:.2f}" for s in warm))
        measured: list[dict[str, Any]] = []
        while len(measured) < steps and (not measured or time.perf_counter() < deadline):
            measured += p.block(steps=1)[0]
        if len(measured) < steps:
            log(f"{name}: deadline reached after {len(measured)} of {steps} measured steps")
        p.stop()
    finally:
        if p.p.poll() is None:
            p.p.kill()
    res = summarize(measured, p.ready, p.final)
    every = [p.ready, *warm, *measured]
    if "max_alloc_gib" in p.ready:
        res["peak_alloc_gib"] = max(x["max_alloc_gib"] for x in every)
        res["peak_reserved_gib"] = max(x["max_reserved_gib"] for x in every)
    res.update(ready=p.ready, warmup_walls=[s["wall"] for s in warm], raw=measured)
    res["wall_total_s"] = time.perf_counter() - t0
    log(
        f"{name}: median {res['median_s']:.3f} s/step"
        + (f", peak {res['peak_alloc_gib']:.2f} GiB allocated" if "peak_alloc_gib" in res else "")
    )
    return res


def fmt_md(res: dict[str, Any]) -> str:
    sides = res["sides"]
    a = res["args"]
    names = [s.get("ready", {}).get("device_name") for s in sides.values()]
    device = next((x for x in names if x), a["device"])
    lines = [
        f"# rlvr vs TRL GRPOTrainer, {device} ({res['date']})",
        "",
        f"Command: `{res['command']}`. Model: random Qwen2, {res['params'] / 1e6:.2f} M parameters, "
        f"shape {json.dumps(res['shape'])}; {a['dtype']}; {a['warmup']} warm-up + {a['steps']} "
        f"measured steps each. Versions: "
        + "; ".join(
            f"{n}: "
            + ", ".join(
                f"{k} {s['ready'][k]}" for k in ("torch", "transformers", "trl") if k in s["ready"]
            )
            for n, s in sides.items()
            if "ready" in s
        )
        + ".",
        "",
        "| trainer | s/step median | min | max | steps/s | tokens/step | tokens/s | peak alloc GiB | "
        "peak reserved GiB | measured-steps alloc GiB | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, s in sides.items():
        if "error" in s:
            last = (s["error"].strip().splitlines() or [""])[-1].replace("|", "/")[:200]
            lines.append(f"| {n} | failed: {last} |" + " |" * 9)
            continue
        lines.append(
            f"| {n} | {s['median_s']:.3f} | {s['min_s']:.3f} | {s['max_s']:.3f} | "
            f"{s['steps_per_s']:.3f} | {s['tokens_per_step']:.0f} | {s['tokens_per_s']:.0f} | "
            f"{s.get('peak_alloc_gib', 0):.2f} | "
            f"{s.get('peak_reserved_gib', 0):.2f} | {s.get('measured_max_alloc_gib', 0):.2f} | "
            f"{s['peak_rss_mib']:.0f} |"
        )
    lines += ["", "Where the step goes (mean s per measured step):", ""]
    ok = [n for n, s in sides.items() if "error" not in s]
    lines += ["| piece | " + " | ".join(ok) + " |", "|---|" + "---|" * len(ok)]
    for k in [*PIECES, "other"]:
        lines.append(f"| {k} | " + " | ".join(f"{sides[n]['parts_mean_s'][k]:.3f}" for n in ok) + " |")
    if res.get("ratios"):
        lines += ["", "Ratios against TRL (steps/s: TRL median / side median; memory: side / TRL):", ""]
        for n, r in res["ratios"].items():
            lines.append(f"- {n}: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()))
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="results: gpu_results.json/.md, logs")
    ap.add_argument("--work", type=Path, default=None, help="model and data (default: a temp dir)")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--small", action="store_true", help="the small shape (a CPU smoke test)")
    ap.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10, help="measured steps per trainer")
    ap.add_argument("--prompt-tokens", type=int, default=None, help="override the shape's 64")
    ap.add_argument("--new-tokens", type=int, default=None, help="override the shape's 256 (small 16)")
    ap.add_argument("--sides", nargs="+", default=["trl", "rlvr"], choices=["trl", "rlvr"])
    ap.add_argument(
        "--rlvr-micro-batches",
        type=int,
        nargs="+",
        default=[8],
        help="algo.micro_batches of rlvr's learner (it has no gradient checkpointing: 8 keeps its "
        "activations near 7 GiB at the full shape); one rlvr run per value",
    )
    ap.add_argument(
        "--rlvr-logit-chunk",
        type=int,
        default=None,
        help="force sequence_logp's logit_chunk (rows per chunk; 0 = never); default: automatic",
    )
    ap.add_argument("--trl-gradient-checkpointing", choices=["default", "on", "off"], default="default")
    trl_default = HERE / ".venv-trl" / "bin" / "python"
    ap.add_argument("--trl-python", default=str(trl_default) if trl_default.exists() else sys.executable)
    ap.add_argument("--rlvr-python", default=sys.executable)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--deadline",
        type=float,
        default=530.0,
        help="seconds after start: no further measured step, and no new trainer within 60 s of it "
        "(the device tool kills a command at 600 s; results so far are saved after every trainer)",
    )
    a = ap.parse_args()

    shape = dict(SHAPES["small" if a.small else "full"])
    if a.prompt_tokens:
        shape["prompt_tokens"] = a.prompt_tokens
    if a.new_tokens:
        shape["new_tokens"] = a.new_tokens
    a.out.mkdir(parents=True, exist_ok=True)
    work = a.work or Path(tempfile.mkdtemp(prefix="rlvr-gpu-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    total = a.warmup + a.steps
    res: dict[str, Any] = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(["python benchmarks/vs_trl/gpu.py", *sys.argv[1:]]),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "shape": shape,
        "host": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "sides": {},
    }

    def save() -> None:
        (a.out / "gpu_results.json").write_text(json.dumps(res, indent=1, default=str))
        if res["sides"]:
            (a.out / "gpu_results.md").write_text(fmt_md(res))

    t0 = time.perf_counter()
    spec_path = work / "spec.json"
    build_spec = {
        "shape": shape,
        "rows": shape["prompts"] * (total + 1),
        "seed": a.seed,
        "work": str(work),
    }
    spec_path.write_text(json.dumps(build_spec))
    with (a.out / "build.log").open("w") as f:
        subprocess.run(
            [a.rlvr_python, __file__, "build", str(spec_path)], check=True, stdout=f, stderr=f
        )
    built = json.loads((work / "built.json").read_text())
    log(f"built {built['params'] / 1e6:.1f} M parameters in {time.perf_counter() - t0:.1f} s: {work}")
    res["params"] = built["params"]
    spec = {
        **built,
        "prompts": shape["prompts"],
        "samples": shape["samples"],
        "new_tokens": shape["new_tokens"],
        "total_steps": total,
        "device": a.device,
        "dtype": a.dtype,
        "work": str(work),
        "trl_out": str(work / "trl-out"),
        "trl_gradient_checkpointing": a.trl_gradient_checkpointing,
        "rlvr_logit_chunk": a.rlvr_logit_chunk,
    }
    spec_path.write_text(json.dumps(spec))
    runs: list[tuple[str, list[str]]] = []
    if "trl" in a.sides:
        runs.append(("trl", [a.trl_python, __file__, "trl", str(spec_path)]))
    if "rlvr" in a.sides:
        for mb in a.rlvr_micro_batches:
            runs.append((f"rlvr-mb{mb}", [a.rlvr_python, __file__, "rlvr", str(spec_path), str(mb)]))
    for name, cmd in runs:
        if time.perf_counter() > t0 + a.deadline - 60:
            log(f"{name}: skipped, too close to the deadline of {a.deadline:.0f} s")
            res["sides"][name] = {"error": f"skipped: too close to the deadline ({a.deadline:.0f} s)"}
            save()
            continue
        try:
            res["sides"][name] = run_side(name, cmd, a.out, a.warmup, a.steps, t0 + a.deadline)
        except Exception as err:  # one side failing (e.g. out of memory) must not lose the others
            log(f"{name}: FAILED: {err}")
            res["sides"][name] = {"error": str(err)[-4000:]}
        save()
    ok = {n: s for n, s in res["sides"].items() if "error" not in s}
    if "trl" in ok:
        trl = ok["trl"]
        res["ratios"] = {}
        for n, s in ok.items():
            if n == "trl":
                continue
            r = {"steps_per_s_vs_trl": trl["median_s"] / s["median_s"]}
            if "peak_alloc_gib" in s:
                r["peak_alloc_vs_trl"] = s["peak_alloc_gib"] / trl["peak_alloc_gib"]
                r["peak_reserved_vs_trl"] = s["peak_reserved_gib"] / trl["peak_reserved_gib"]
            res["ratios"][n] = r
    res["wall_total_s"] = time.perf_counter() - t0
    save()
    log(f"wrote {a.out / 'gpu_results.json'} and {a.out / 'gpu_results.md'}")
    print((a.out / "gpu_results.md").read_text() if res["sides"] else "no results", flush=True)
    if a.work is None:
        shutil.rmtree(work, ignore_errors=True)


def entry() -> None:
    """``gpu.py build|trl|rlvr SPEC [MICRO_BATCHES]`` are the worker processes; anything else is the
    driver (``main``)."""
    if len(sys.argv) >= 3 and sys.argv[1] in ("build", "trl", "rlvr"):
        sys.path.insert(0, str(HERE))  # protocol.py, run.py
        spec = json.loads(Path(sys.argv[2]).read_text())
        if sys.argv[1] == "build":
            built = build(Path(spec["work"]), spec["shape"], spec["rows"], spec["seed"])
            (Path(spec["work"]) / "built.json").write_text(json.dumps(built))
        elif sys.argv[1] == "trl":
            trl_worker(spec)
        else:
            rlvr_worker(spec, int(sys.argv[3]))
        return
    sys.path.insert(0, str(HERE))
    main()


if __name__ == "__main__":
    entry()
