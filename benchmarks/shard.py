"""Memory per learner rank with and without FSDP2 sharding (scale.shard), on the CPU with gloo.

    python benchmarks/shard.py                    # 2 ranks, a random ~100 M-parameter Qwen2 shape
    python benchmarks/shard.py --layers 4 --hidden 256 --steps 2     # a quick check

For each mode ('none': every rank holds the whole policy; 'fsdp': `shard_policy`), two ranks run the
trainer's own update (`Learner.update_policy`, grpo, AdamW) on the same fixed rollout, and each
rank reports:

- the bytes of training state it holds: parameters, gradients and AdamW moments, counted from its
  local tensors (a DTensor's local shard when sharded) after the last step;
- its peak resident memory (`ru_maxrss`), which also counts Python, torch, the activations,
  FSDP's transient gathered layers and the whole model each rank builds before sharding it;
- the seconds per update (median), which on a shared 2-core machine say little: sharding adds an
  all-gather and a reduce-scatter per layer and per forward/backward, and the gain is memory.

The model is built from a config with random weights (no download). Results: benchmarks/shard.json
and benchmarks/shard.md (rewritten).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rlvr.models.shard import shard_policy
from rlvr.rollout import generate
from rlvr.train.components import build_components
from rlvr.train.config import load_config
from rlvr.train.learner import Learner
from rlvr.train.scale import Learners
from rlvr.utils import atomic_write_text

ROOT = Path(__file__).resolve().parent


def _local_bytes(t: torch.Tensor | None) -> int:
    if t is None:
        return 0
    local = t.to_local() if hasattr(t, "to_local") else t
    return local.numel() * local.element_size()


def _rank(rank: int, world: int, port: int, mode: str, args: argparse.Namespace, out: str) -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        config = Qwen2Config(
            vocab_size=args.vocab,
            hidden_size=args.hidden,
            intermediate_size=args.hidden * 8 // 3,
            num_hidden_layers=args.layers,
            num_attention_heads=args.hidden // 64,
            num_key_value_heads=max(1, args.hidden // 256),
            tie_word_embeddings=True,
        )
        model = Qwen2ForCausalLM(config).train()
        n_params = sum(p.numel() for p in model.parameters())
        cfg = load_config(
            "grpo",
            ["rollout.prompts_per_step=4", "rollout.samples_per_prompt=4", "algo.micro_batches=1"],
        )
        prompts = [list(range(1 + j, 17 + j)) for j in range(4)]  # 4 prompts of 16 tokens
        roll = generate(
            model,
            prompts,
            num_samples=4,
            max_new_tokens=args.tokens,
            eos_id=-1,
            pad_id=0,
            generator=torch.Generator().manual_seed(3),
        )  # 16 rows of `tokens` new tokens, the same on every rank
        adv = torch.linspace(-1.0, 1.0, len(roll))  # [N]
        if mode == "fsdp":
            shard_policy(model, world, torch.device("cpu"))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
        learner, times = (
            Learner(model, opt, build_components(cfg), cfg, learners=Learners(rank, world)),
            [],
        )
        for _ in range(args.steps):
            t0 = time.perf_counter()
            learner.update_policy(roll, adv, torch.Generator().manual_seed(1))
            times.append(time.perf_counter() - t0)
        state = {
            "parameters": sum(_local_bytes(p) for p in model.parameters()),
            "gradients": sum(_local_bytes(p.grad) for p in model.parameters()),
            "adamw_moments": sum(
                _local_bytes(v) for s in opt.state.values() for v in s.values() if v.dim() > 0
            ),
        }
        rec = {
            "rank": rank,
            "mode": mode,
            "params": n_params,
            "state_bytes": state,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "s_per_update": statistics.median(times[1:] if len(times) > 1 else times),
        }
        Path(f"{out}.{mode}.{rank}").write_text(json.dumps(rec))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--vocab", type=int, default=32768)
    p.add_argument("--tokens", type=int, default=32, help="new tokens per rollout row")
    p.add_argument("--steps", type=int, default=4, help="updates per mode (the first is a warm-up)")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "shard.md")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("none", "fsdp"):  # one process group each: peak RSS is per process
            out = os.path.join(tmp, "rank")
            mp.start_processes(
                _rank, args=(args.ranks, _free_port(), mode, args, out), nprocs=args.ranks,
                start_method="spawn",
            )  # fmt: skip
            rows += [json.loads(Path(f"{out}.{mode}.{r}").read_text()) for r in range(args.ranks)]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "commit": commit,
        "torch": torch.__version__,
        "shape": {k: getattr(args, k) for k in ("layers", "hidden", "vocab", "tokens", "ranks")},
        "rollout": "4 prompts x 4 samples, 16-token prompts",
    }
    atomic_write_text(args.out.with_suffix(".json"), json.dumps({**meta, "ranks": rows}, indent=2))
    mib = 2**20
    lines = [
        "# Memory per learner rank: plain vs FSDP2 (`scale.shard`)",
        "",
        f"Produced by `python benchmarks/shard.py` on {meta['date']} at {commit}, torch "
        f"{meta['torch']}, CPU with gloo, {args.ranks} ranks, one thread each. Model: a random Qwen2 "
        f"shape, {rows[0]['params'] / 1e6:.1f} M parameters ({args.layers} layers, hidden "
        f"{args.hidden}, vocabulary {args.vocab}, tied head); update: grpo with AdamW on 16 rows of "
        f"{args.tokens} new tokens. State = parameters + gradients + AdamW moments held by the rank "
        "(fp32). Peak RSS also counts Python and torch, the activations, FSDP's transient "
        "gathered layers and, before sharding, the whole model that each rank builds (as the "
        "trainer loads it) and the rollout it generates; glibc keeps much of what is freed, so the "
        "saving shows in the state column, not in the peak. Seconds per update were measured on "
        "a shared machine beside other runs and mostly show the communication that sharding adds.",
        "",
        "| mode | rank | parameters MiB | gradients MiB | AdamW MiB | state MiB | peak RSS MiB "
        "| s/update |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["state_bytes"]
        lines.append(
            f"| {r['mode']} | {r['rank']} | {s['parameters'] / mib:.0f} | {s['gradients'] / mib:.0f} | "
            f"{s['adamw_moments'] / mib:.0f} | {sum(s.values()) / mib:.0f} | "
            f"{r['peak_rss_bytes'] / mib:.0f} | {r['s_per_update']:.2f} |"
        )
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
