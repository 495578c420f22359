"""TRL's side of ``procs.py``: ``trl.GRPOTrainer`` running freely (no driver), in one process or as
several data-parallel processes started by torchrun (gloo on the CPU).

    .venv-trl/bin/python trl_free.py --max-new-tokens 32 --steps 40 --prompts prompts.json --out t.json
    .venv-trl/bin/torchrun --standalone --nproc-per-node 2 trl_free.py ...   # two processes

The work is ``trl_grpo.py``'s (the same GRPOConfig: 8 prompts x 8 samples per optimizer step, beta 0,
one iteration, lr 1e-4, fp32 on the CPU, the strict ``answer`` reward, the prompts in rlvr's order);
with W processes each takes 64 / W completions of every step (``per_device_train_batch_size``), so the
global batch is the same. Rank 0 writes the wall-clock time of every optimizer step's end to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from protocol import strict_answer_score, trl_rows

B, G, LR = 8, 8, 1e-4


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-new-tokens", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--prompts", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/trl_free"))
    a = ap.parse_args()
    import torch
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    world = int(os.environ.get("WORLD_SIZE", "1"))
    spec = json.loads(a.prompts.read_text())
    rows = spec["rows"][: a.steps * B]
    if len(rows) < a.steps * B:
        raise ValueError(f"{a.prompts}: {len(rows)} prompts, {a.steps * B} needed for {a.steps} steps")

    def answer_reward(
        prompts: list[Any], completions: list[Any], answer: list[str], meta: list[str], **_: Any
    ) -> list[float]:
        """rlvr's strict ``answer`` reward (as trl_grpo.py)."""
        return [
            strict_answer_score(p, c, ans, m)
            for p, c, ans, m in zip(prompts, completions, answer, meta, strict=True)
        ]

    ends: list[float] = []

    class Ends(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            ends.append(time.perf_counter())

    config = GRPOConfig(
        output_dir=str(a.work),
        per_device_train_batch_size=B * G // world,  # the global batch stays 8 prompts x 8 samples
        num_generations=G,
        max_completion_length=a.max_new_tokens,
        temperature=1.0,
        beta=0.0,
        num_iterations=1,
        learning_rate=LR,
        max_steps=a.steps,
        use_cpu=True,
        bf16=False,
        seed=0,
        shuffle_dataset=False,
        save_strategy="no",
        report_to="none",
        logging_steps=10**6,
    )
    dataset = Dataset.from_list(trl_rows(rows))
    trainer = GRPOTrainer(
        model=spec["model"],
        reward_funcs=answer_reward,
        args=config,
        train_dataset=dataset,
        callbacks=[Ends()],
    )
    trainer.train()
    if int(os.environ.get("RANK", "0")) == 0:
        a.out.write_text(
            json.dumps(
                {
                    "ends": ends,
                    "processes": world,
                    "threads": torch.get_num_threads(),
                    "torch": torch.__version__,
                    "trl": trl.__version__,
                }
            )
        )


if __name__ == "__main__":
    main()
