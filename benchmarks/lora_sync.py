"""What a LoRA run should send its rollout workers after each update: the merged weights (what
rlvr does) or the adapters only, measured on a random model of the Qwen2-0.5B shape (CPU, Ray).

    python benchmarks/lora_sync.py                        # Qwen2-0.5B shape, ranks 8 and 64
    python benchmarks/lora_sync.py --layers 2 --quick     # a quick check of the script itself

Two ways to bring a worker up to date, each timed from the learner's side as one round trip:

- **merged** (rlvr's way, ``rlvr.models.lora.merged_weights``): the learner computes
  W + (alpha / r) B A for every adapted layer, puts the whole state dict in Ray's object store, and
  the worker loads it into a plain model (``load_state_dict``, strict).
- **adapters**: the learner puts only the adapters' tensors (peft's ``get_peft_model_state_dict``);
  the worker holds a peft model over its own copy of the base, loads them
  (``set_peft_model_state_dict``), and then either generates with the adapters unmerged (an extra
  low-rank product in every adapted layer at every token) or merges them itself (the same
  W + (alpha / r) B A as the learner's, on every worker, keeping the base weights to merge again).

Reported per rank: the bytes sent, the learner's time to prepare them, the round trip (put + the
worker's load, and its merge where there is one), and the worker's generation time for a batch of
rollouts with the plain (merged) model and with the unmerged peft model. Timings are medians of
``--repeats`` on a shared 2-core machine beside other jobs: a rough guide; the bytes are exact.
Results: benchmarks/lora_sync.json and benchmarks/lora_sync.md (rewritten).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from rlvr.utils import atomic_write_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import qwen2_05b_config as _config  # the same model as memory.py's

ROOT = Path(__file__).resolve().parent
MIB = 2**20


def _nbytes(sd: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in sd.values())


def _median_s(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


class Worker:
    """A rollout worker's side: a plain model, and a peft model over a second copy of the base."""

    def __init__(self, layers: int, vocab: int, rank: int, threads: int) -> None:
        from transformers import Qwen2ForCausalLM

        from rlvr.models.lora import add_adapters

        torch.set_num_threads(threads)
        torch.manual_seed(0)
        self.plain = Qwen2ForCausalLM(_config(layers, vocab)).eval()
        torch.manual_seed(0)
        base = Qwen2ForCausalLM(_config(layers, vocab)).eval()
        self.peft = add_adapters(base, rank=rank, alpha=2.0 * rank, dropout=0.0).eval()

    def load_merged(self, weights: dict[str, torch.Tensor]) -> int:
        self.plain.load_state_dict(weights, strict=True)
        return len(weights)

    def load_adapters(self, adapters: dict[str, torch.Tensor], merge: bool) -> int:
        from peft import set_peft_model_state_dict

        from rlvr.models.lora import merged_weights

        set_peft_model_state_dict(self.peft, adapters)
        if merge:  # the worker's own merge, into its plain model: W0 + (alpha / r) B A
            with torch.no_grad():
                self.load_merged(merged_weights(self.peft))
        return len(adapters)

    def generate(self, which: str, prompts: int, samples: int, tokens: int, repeats: int) -> float:
        from rlvr.rollout import generate

        model = self.plain if which == "merged" else self.peft
        batch = [list(range(10 + 7 * j, 42 + 7 * j)) for j in range(prompts)]

        def run():
            with torch.no_grad():
                return generate(
                    model,
                    batch,
                    num_samples=samples,
                    max_new_tokens=tokens,
                    eos_id=-1,
                    pad_id=0,
                    generator=torch.Generator().manual_seed(3),
                )

        run()  # warm-up
        return _median_s(run, repeats)[0]


def measure(rank: int, args: argparse.Namespace) -> dict:
    import ray
    from peft import get_peft_model_state_dict
    from transformers import Qwen2ForCausalLM

    from rlvr.models.lora import add_adapters, merged_weights

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(_config(args.layers, args.vocab))
    model = add_adapters(model, rank=rank, alpha=2.0 * rank, dropout=0.0)
    with torch.no_grad():  # trained adapters: B is no longer zero
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.normal_(0.0, 0.02)
    n_params = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    worker = (
        ray.remote(num_cpus=0)(Worker)
        .options(max_concurrency=1)
        .remote(args.layers, args.vocab, rank, args.threads)
    )

    def merged_prepare():
        with torch.no_grad():
            return {k: v.detach().to("cpu") for k, v in merged_weights(model).items()}

    def adapters_prepare():
        return {k: v.detach().to("cpu").clone() for k, v in get_peft_model_state_dict(model).items()}

    t_merge, merged = _median_s(merged_prepare, args.repeats)
    t_adapt, adapters = _median_s(adapters_prepare, args.repeats)
    ray.get(worker.load_merged.remote(merged))  # warm-up of both paths
    ray.get(worker.load_adapters.remote(adapters, True))
    t_sync_merged = _median_s(lambda: ray.get(worker.load_merged.remote(ray.put(merged))), args.repeats)[
        0
    ]
    t_sync_adapters = _median_s(
        lambda: ray.get(worker.load_adapters.remote(ray.put(adapters), False)), args.repeats
    )[0]
    t_sync_adapters_merge = _median_s(
        lambda: ray.get(worker.load_adapters.remote(ray.put(adapters), True)), args.repeats
    )[0]
    gen = {
        which: ray.get(
            worker.generate.remote(which, args.prompts, args.samples, args.tokens, args.repeats)
        )
        for which in ("merged", "unmerged")
    }
    ray.kill(worker)
    return {
        "rank": rank,
        "base_params": n_params,
        "merged_bytes": _nbytes(merged),
        "adapter_bytes": _nbytes(adapters),
        "learner_merge_s": t_merge,
        "learner_adapters_s": t_adapt,
        "sync_merged_s": t_sync_merged + t_merge,
        "sync_adapters_unmerged_s": t_sync_adapters + t_adapt,
        "sync_adapters_worker_merge_s": t_sync_adapters_merge + t_adapt,
        "generate_merged_s": gen["merged"],
        "generate_unmerged_s": gen["unmerged"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--layers", type=int, default=24)
    p.add_argument("--vocab", type=int, default=151936)
    p.add_argument("--ranks", type=int, nargs="*", default=[8, 64])
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--samples", type=int, default=2)
    p.add_argument("--tokens", type=int, default=32, help="new tokens per rollout row")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="torch threads of the learner and worker")
    p.add_argument("--quick", action="store_true", help="a small vocabulary and 4 new tokens")
    p.add_argument("--out", type=Path, default=ROOT / "lora_sync.md")
    args = p.parse_args()
    if args.quick:
        args.vocab, args.tokens, args.repeats = 4096, 4, 1
    import ray

    torch.set_num_threads(args.threads)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        rows = []
        for rank in args.ranks:
            rec = measure(rank, args)
            rows.append(rec)
            print(json.dumps(rec))
    finally:
        ray.shutdown()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    shape = {k: getattr(args, k) for k in ("layers", "vocab", "prompts", "samples", "tokens")}
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "commit": commit, "torch": torch.__version__}
    meta |= {"shape": shape, "threads": args.threads, "repeats": args.repeats}
    atomic_write_text(args.out.with_suffix(".json"), json.dumps({**meta, "ranks": rows}, indent=2))
    lines = [
        "# LoRA: what the rollout workers receive after each update",
        "",
        f"Produced by `python benchmarks/lora_sync.py` on {meta['date']} at {commit}, torch "
        f"{meta['torch']}, CPU, {args.threads} threads, one Ray worker on the same machine. Model: "
        f"a random Qwen2 shape, {rows[0]['base_params'] / 1e6:.0f} M parameters ({args.layers} "
        f"layers, vocabulary {args.vocab}, tied head), fp32, adapters on every attention and MLP "
        f"projection (alpha = 2r). Generation: {args.prompts} prompts x {args.samples} samples of "
        f"{args.tokens} new tokens. Times are medians of {args.repeats} on a shared 2-core machine "
        "(a rough guide); the bytes are exact. A sync's time counts the learner's preparation, "
        "Ray's put and the worker's load (and its merge, in the last column).",
        "",
        "| rank | merged: bytes sent | adapters: bytes sent | merged: sync s | adapters, "
        "unmerged: sync s | adapters, merged by the worker: sync s | generate, merged s | "
        "generate, unmerged s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['rank']} | {r['merged_bytes'] / MIB:.0f} MiB | {r['adapter_bytes'] / MIB:.1f} MiB"
            f" | {r['sync_merged_s']:.2f} | {r['sync_adapters_unmerged_s']:.2f} | "
            f"{r['sync_adapters_worker_merge_s']:.2f} | {r['generate_merged_s']:.2f} | "
            f"{r['generate_unmerged_s']:.2f} |"
        )
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
