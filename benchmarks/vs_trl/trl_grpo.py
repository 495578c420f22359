"""TRL's side of the rlvr-vs-TRL benchmark: ``trl.GRPOTrainer`` on the same work as ``rlvr_grpo.py``.

Run with the TRL venv's interpreter (benchmarks/vs_trl/.venv-trl/bin/python) by ``run.py``:

    trl_grpo.py --max-new-tokens 32 --steps 33 --out-dir DIR --prompts prompts.json

The model is the embedded tiny base directory (``model`` in prompts.json); the prompts are the chat
contents rlvr's stream gives, in its order, as conversational prompts (TRL applies the same chat
template; the worker checks that the token ids equal rlvr's). The reward is rlvr's ``answer`` reward
rewritten for TRL's reward-function signature: the text inside the last ``<answer>...</answer>`` of the
completion, scored by reasoning-gym's ``score_answer`` of the problem's task, 1.0 only for full credit.

GRPOConfig keeps TRL's defaults except what the benchmark fixes (8 prompts x 8 samples in one optimizer
step, max new tokens, temperature 1.0, beta = 0, one iteration, lr 1e-4, CPU, bf16 off) and three knobs
that do not change the algorithm: ``shuffle_dataset=False`` (so that TRL takes the prompts in rlvr's
order), ``save_strategy="no"`` and ``report_to="none"`` (no checkpoints or trackers, as in rlvr's run).
Pieces of every step are timed from the outside: ``GenerationMixin.generate``, the reward function,
``GRPOTrainer._get_per_token_logps_and_entropies`` (the learner's forward), ``Tensor.backward`` and the
optimizer's step (torch's global hooks).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from protocol import Timers, Worker, strict_answer_score, trl_rows

B, G, LR = 8, 8, 1e-4


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-new-tokens", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--out-dir", type=Path, required=True)
    ap.add_argument("--prompts", type=Path, required=True)
    ap.add_argument(
        "--gradient-checkpointing",
        choices=["default", "on", "off"],
        default="default",
        help="GRPOConfig.gradient_checkpointing (TRL's default is on)",
    )
    ap.add_argument("--seed", type=int, default=0, help="GRPOConfig.seed")
    ap.add_argument(
        "--match-rlvr-optim",
        action="store_true",
        help="constant lr and Adam beta2 = 0.99 as rlvr's defaults (TRL's: linear decay to 0 at "
        "max_steps, beta2 0.999), for time-to-target runs where the schedule over max_steps matters",
    )
    a = ap.parse_args()
    worker = Worker(f"trl-T{a.max_new_tokens}")

    import torch
    import transformers
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    spec = json.loads(a.prompts.read_text())
    rows = spec["rows"][: a.steps * B]
    if len(rows) < a.steps * B:
        raise ValueError(f"{a.prompts}: {len(rows)} prompts, {a.steps * B} needed for {a.steps} steps")
    timers = Timers()
    timers.install_trl_hooks()
    step_info: dict[str, Any] = {}

    def _score(
        prompts: list[Any],
        completions: list[Any],
        completion_ids: list[list[int]],
        answer: list[str],
        meta: list[str],
        **_: Any,
    ) -> list[float]:
        """rlvr's strict ``answer`` reward: reasoning-gym's score of the last <answer>...</answer>."""
        k = worker.steps_done
        expected = [r["content"] for r in rows[k * B : (k + 1) * B] for _ in range(G)]
        out = [
            strict_answer_score(p, c, ans, m)
            for p, c, ans, m in zip(prompts, completions, answer, meta, strict=True)
        ]
        lengths = [len(c) for c in completion_ids]
        step_info.update(
            T=max(lengths),
            tokens=sum(lengths),
            same_prompts=[p[-1]["content"] for p in prompts] == expected,
            reward_mean=sum(out) / len(out),
            accuracy=sum(out) / len(out),
        )
        return out

    answer_reward = timers.wrap(_score, "score")
    answer_reward.__name__ = "answer_reward"

    class Report(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            worker.step_end({**step_info, "parts": timers.take()})

    gc = {
        "default": {},
        "on": {"gradient_checkpointing": True},
        "off": {"gradient_checkpointing": False},
    }
    config = GRPOConfig(
        output_dir=str(a.out_dir),
        per_device_train_batch_size=B * G,  # one optimizer step per batch of 8 prompts x 8 samples
        num_generations=G,
        max_completion_length=a.max_new_tokens,
        temperature=1.0,
        beta=0.0,
        num_iterations=1,
        learning_rate=LR,
        max_steps=a.steps,
        use_cpu=True,
        bf16=False,
        seed=a.seed,
        shuffle_dataset=False,
        save_strategy="no",
        report_to="none",
        **gc[a.gradient_checkpointing],
        **({"lr_scheduler_type": "constant", "adam_beta2": 0.99} if a.match_rlvr_optim else {}),
    )
    dataset = Dataset.from_list(trl_rows(rows))
    trainer = GRPOTrainer(
        model=spec["model"],
        reward_funcs=answer_reward,
        args=config,
        train_dataset=dataset,
        callbacks=[Report()],
    )

    def save(path: str) -> None:
        torch.save({k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}, path)

    worker.saver = save
    tok = trainer.processing_class
    ids = tok.apply_chat_template(
        [{"role": "user", "content": rows[0]["content"]}], add_generation_prompt=True, tokenize=True
    )
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    if list(ids) != rows[0]["prompt_ids"]:
        raise RuntimeError(f"TRL's prompt ids {list(ids)} differ from rlvr's {rows[0]['prompt_ids']}")
    worker.start(
        torch=torch.__version__,
        transformers=transformers.__version__,
        trl=trl.__version__,
        threads=torch.get_num_threads(),
        gradient_checkpointing=bool(config.gradient_checkpointing),
        optim=str(config.optim),
        lr_scheduler=str(config.lr_scheduler_type),
        loss_type=config.loss_type,
        logging_steps=config.logging_steps,
    )
    trainer.train()
    raise RuntimeError("TRL worker: training ended before the driver stopped it")


if __name__ == "__main__":
    main()
