"""The evaluator of the time-to-target benchmark (``ttt.py``): held-out pass@1 of saved weights.

Run with rlvr's interpreter by ``ttt.py``: ``ttt_eval.py --seed S``. It loads the embedded tiny base
once and the grpo recipe's held-out problems (256 questions fixed by ``task.split_seed``, never in the
training stream), then answers one JSON line per request on stdin:

    {"path": P}  ->  {"pass1": x, "seconds": s}   (P: a torch.save'd state dict of the base's shape)

pass@1 is rlvr's evaluation with the recipe's settings (``eval.samples`` = 8 samples per problem,
temperature 1.0, 12 new tokens, the strict ``answer`` verifier, sampling seed S), the same for the
weights of either trainer. ``{"path": ""}`` evaluates the base itself.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # library prints go to stderr

    import torch
    from rlvr_grpo import overrides

    from rlvr.models.hf import load_model
    from rlvr.models.tiny import EMBEDDED, ensure_base
    from rlvr.train import load_config
    from rlvr.train.evaluation import evaluate_problems
    from rlvr.train.setup import build_task, build_verifier

    cfg = load_config("grpo", overrides(12, 1, a.seed))
    task = build_task(cfg)
    base = ensure_base(EMBEDDED[cfg.model.embedded], progress=False)
    model, tok = load_model(base, device="cpu")
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    verifier = build_verifier(cfg, log=lambda _: None)
    out.write(json.dumps({"kind": "ready", "heldout": len(task.heldout)}) + "\n")
    for line in sys.stdin:
        req = json.loads(line)
        t0 = time.perf_counter()
        state = torch.load(req["path"], map_location="cpu") if req["path"] else initial
        model.load_state_dict(state)
        model.eval()
        res = evaluate_problems(model, tok, task.heldout, cfg, verifier, n=cfg.eval.samples)
        p1 = res.summary()["pass@1"]
        out.write(json.dumps({"kind": "eval", "pass1": p1, "seconds": time.perf_counter() - t0}) + "\n")


if __name__ == "__main__":
    main()
