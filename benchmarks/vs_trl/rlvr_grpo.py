"""rlvr's side of the rlvr-vs-TRL benchmark: ``rlvr.train.train`` on the default task, step by step.

Run with rlvr's own interpreter (/work/main/.venv/bin/python) by ``run.py``; two modes:

    rlvr_grpo.py dump --out prompts.json --prompts 272          # the shared prompt stream
    rlvr_grpo.py train --max-new-tokens 32 --steps 33 --run-dir DIR --prompts prompts.json

``dump`` writes the first ``--prompts`` problems of the training stream that ``train`` draws from (the
grpo recipe's task, seed 0), each with the chat content, the text ``format_prompt`` makes of it and its
token ids, so that TRL is given exactly the same prompts in the same order.

``train`` runs the grpo recipe with the benchmark's settings (the ``answer`` reward only, beta = 0, one
epoch, no mini-batches, lr 1e-4, CPU, no evaluation) through the public ``train`` function, and times
the pieces of every step from the outside, by wrapping the names the trainer module looks up:
``generate`` (sampling), ``_score_step`` (rewards), ``sequence_logp`` (the learner's forward and
log-probs), plus ``Tensor.backward`` and the optimizer's step through torch's global hooks. The step
ends when the trainer writes its metrics line (``append_jsonl`` to metrics.jsonl), where the worker
reports the step and, between blocks, waits for the driver (outside rlvr's own ``step_time``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from protocol import Timers, Worker

B, G, LR = 8, 8, 1e-4


def overrides(max_new_tokens: int, steps: int, seed: int = 0) -> list[str]:
    """The grpo recipe changed to the benchmark's work (what TRL is configured with, too)."""
    return [
        "rewards={answer={weight=1.0}}",  # the task's strict verifier only, as TRL's reward function
        f"rollout.prompts_per_step={B}",
        f"rollout.samples_per_prompt={G}",
        f"rollout.max_new_tokens={max_new_tokens}",
        "rollout.temperature=1.0",
        "algo.beta=0.0",
        "algo.epochs=1",
        "algo.minibatches=1",
        f"optim.lr={LR}",
        f"train.steps={steps}",
        f"train.seed={seed}",
        "model.device='cpu'",
        "eval.before=false",
        "eval.after=false",
    ]


def dump(out: Path, count: int, seed: int = 0) -> None:
    from rlvr.data.prompts import INSTRUCTION, format_prompt
    from rlvr.models.hf import load_tokenizer
    from rlvr.models.tiny import EMBEDDED, ensure_base
    from rlvr.train import load_config
    from rlvr.train.setup import build_task

    cfg = load_config("grpo", overrides(12, 1, seed))
    task = build_task(cfg)
    base = ensure_base(EMBEDDED[cfg.model.embedded], progress=False)
    tok = load_tokenizer(base)
    rows = []
    for p in task.next(count):
        text = format_prompt(tok, p.question)
        rows.append(
            {
                "question": p.question,
                "content": f"{p.question}\n{INSTRUCTION}",
                "prompt_text": text,
                "prompt_ids": tok(text, add_special_tokens=False)["input_ids"],
                "answer": p.answer,
                "meta": json.dumps(p.meta, default=list),
            }
        )
    out.write_text(json.dumps({"model": str(base), "rows": rows}))


def run_train(max_new_tokens: int, steps: int, run_dir: Path, prompts_path: Path, seed: int = 0) -> None:
    worker = Worker(f"rlvr-T{max_new_tokens}")
    import torch

    import rlvr
    import rlvr.train.advantage as adv_mod
    import rlvr.train.learner as learner_mod
    import rlvr.train.metrics as metrics_mod
    import rlvr.train.rounds as rounds_mod
    import rlvr.train.trainer as tr
    from rlvr.train import load_config
    from rlvr.train.score import Scorer

    rows = json.loads(prompts_path.read_text())["rows"]
    timers = Timers()
    timers.install_torch_hooks()
    shape: dict[str, Any] = {}

    gen_fn = timers.wrap(rounds_mod.generate, "gen")
    policy: list[Any] = []  # the trainer's model, seen at its first generate call

    def save(path: str) -> None:
        torch.save({k: v.detach().cpu() for k, v in policy[0].state_dict().items()}, path)

    worker.saver = save

    def generate(model: Any, prompts: Any, **kw: Any) -> Any:
        if not policy:
            policy.append(model)
        k = worker.steps_done  # the step being generated (0-based)
        expected = [r["prompt_ids"] for r in rows[k * B : (k + 1) * B]]
        roll = gen_fn(model, prompts, **kw)
        shape.update(
            T=int(roll.completion_ids.shape[1]),
            P=int(roll.prompt_ids.shape[1]),
            tokens=int(roll.lengths.sum()),
            same_prompts=[list(p) for p in prompts] == expected,
        )
        return roll

    rounds_mod.generate = generate
    Scorer._components = timers.wrap(Scorer._components, "score")  # the reward components
    learner_mod.sequence_logp = timers.wrap(learner_mod.sequence_logp, "logp")
    adv_mod.sequence_logp = learner_mod.sequence_logp  # the reference's forward, when there is one
    append = metrics_mod.append_jsonl

    def append_jsonl(path: Any, record: dict[str, Any], **kw: Any) -> None:
        append(path, record, **kw)
        if Path(path).name != "metrics.jsonl":
            return
        parts = timers.take()
        worker.step_end(
            {
                **shape,
                "parts": parts,
                "reward_mean": record["reward_mean"],
                "accuracy": record["accuracy"],
                "own_step_time": record["step_time"],
                "own_gen_time": record["gen_time"],
                "own_learn_time": record["learn_time"],
            }
        )

    metrics_mod.append_jsonl = append_jsonl
    cfg = load_config("grpo", overrides(max_new_tokens, steps, seed))
    worker.start(
        torch=torch.__version__,
        rlvr=getattr(rlvr, "__version__", "?"),
        threads=torch.get_num_threads(),
    )
    tr.train(cfg, run_dir=run_dir, progress=True)
    raise RuntimeError("rlvr worker: training ended before the driver stopped it")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    d = sub.add_parser("dump")
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--prompts", type=int, required=True)
    d.add_argument("--seed", type=int, default=0, help="train.seed: the stream of problems")
    t = sub.add_parser("train")
    t.add_argument("--max-new-tokens", type=int, required=True)
    t.add_argument("--steps", type=int, required=True)
    t.add_argument("--run-dir", type=Path, required=True)
    t.add_argument("--prompts", type=Path, required=True)
    t.add_argument("--seed", type=int, default=0, help="train.seed (its stream must match --prompts)")
    a = ap.parse_args()
    if a.mode == "dump":
        dump(a.out, a.prompts, a.seed)
    else:
        run_train(a.max_new_tokens, a.steps, a.run_dir, a.prompts, a.seed)


if __name__ == "__main__":
    main()
