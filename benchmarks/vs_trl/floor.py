"""The forward-pass floor of the rlvr-vs-TRL benchmark: the model's own forwards for a step's tokens.

Run with rlvr's interpreter by ``run.py`` as a third worker (same protocol as the trainers). A block's
command carries the shapes of the trainers' latest steps (``{"side", "step", "T"}``: which trainer, its
step index, hence its 8 prompts, and the T positions it generated). For each shape it times, with the
plain Hugging Face model (no rlvr code):

- ``decode``: one prefill of the B = 8 left-padded prompts with a KV cache, the cache expanded to the
  N = B * G = 64 rows, then T - 1 incremental forwards of [N, 1] tokens (no sampling, no Python work
  beyond the loop); the minimum forward work any sampler of T tokens does;
- ``fwd``: the learner's forward over the step's distinct tokens, with gradients: the 8 prompts once,
  their KV cache expanded to the 64 rows (a differentiable index), the 64 x T completion tokens on it,
  and the log-probs of the completion tokens (log p_t = z_t[y_t] - logsumexp(z_t));
- ``bwd``: the backward of loss = -mean(log p);
- ``optim``: one AdamW step (lr 0, so the model stays the base) -- reported, not in the floor;
- ``fwd_padded`` / ``bwd_padded``: the same learner pass over the plain padded batch [N, P + T] (every
  prompt token once per row, as a trainer without prompt sharing does).

floor = decode + fwd + bwd: the forwards (and backward) that one GRPO step with beta = 0 and one epoch
cannot avoid; floor_padded = decode + fwd_padded + bwd_padded.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from protocol import Worker
from torch import Tensor

from rlvr.rollout.sampler import left_pad

B, G = 8, 8


def completion_logp(logits: Tensor, ids: Tensor) -> Tensor:
    """log p_t = z_t[y_t] - logsumexp(z_t): logits [N, T, V], ids [N, T] -> [N, T]."""
    lg = logits.float()
    return lg.gather(-1, ids.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(lg, -1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=Path, required=True)
    a = ap.parse_args()
    worker = Worker("floor")
    from transformers import AutoModelForCausalLM

    spec = json.loads(a.prompts.read_text())
    rows = spec["rows"]
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    pad = int(model.config.pad_token_id or 0)
    vocab = int(model.config.vocab_size)
    opt = torch.optim.AdamW(model.parameters(), lr=0.0)
    gen = torch.Generator().manual_seed(0)
    worker.start(torch=torch.__version__, threads=torch.get_num_threads())

    while True:
        for shape in worker.command["shapes"]:
            k, t = int(shape["step"]), int(shape["T"])
            seqs = [r["prompt_ids"] for r in rows[k * B : (k + 1) * B]]
            b_ids, b_mask = left_pad(seqs, pad)  # [B, P] each, as rlvr's sampler pads
            b_pos = (b_mask.cumsum(-1) - 1).clamp(min=0)  # [B, P]
            group = torch.arange(B).repeat_interleave(G)  # [N]
            n = B * G
            comp = torch.randint(2, vocab, (n, t), generator=gen)  # [N, T] stand-in completion tokens

            model.eval()
            t0 = time.perf_counter()
            with torch.no_grad():
                out = model(
                    input_ids=b_ids,
                    attention_mask=b_mask,
                    position_ids=b_pos,
                    use_cache=True,
                    logits_to_keep=1,
                )
                cache = out.past_key_values
                cache.reorder_cache(group)
                attn = b_mask[group]  # [N, P]
                pos = b_pos[group][:, -1:] + 1  # [N, 1]
                for j in range(t - 1):
                    attn = torch.cat([attn, torch.ones((n, 1), dtype=attn.dtype)], dim=1)
                    out = model(
                        input_ids=comp[:, j : j + 1],
                        attention_mask=attn,
                        position_ids=pos,
                        past_key_values=cache,
                        use_cache=True,
                    )
                    cache = out.past_key_values
                    pos = pos + 1
            t1 = time.perf_counter()

            model.train()
            # the learner's forward over the distinct tokens: the 8 prompts once, their key/value cache
            # expanded (differentiably) to the 64 rows, then the 64 x T completion tokens
            out = model(
                input_ids=b_ids,
                attention_mask=b_mask,
                position_ids=b_pos,
                use_cache=True,
                logits_to_keep=1,
            )
            first = out.logits[:, -1][group].unsqueeze(1)  # [N, 1, V]
            cache = out.past_key_values
            cache.reorder_cache(group)
            attn = torch.cat([b_mask[group], torch.ones((n, t - 1), dtype=torch.long)], dim=1)
            rest = model(
                input_ids=comp[:, :-1],
                attention_mask=attn,
                position_ids=b_pos[group][:, -1:] + torch.arange(1, t),
                past_key_values=cache,
                use_cache=True,
            ).logits  # [N, T-1, V]
            loss = -completion_logp(torch.cat([first, rest], dim=1), comp).mean()
            t2 = time.perf_counter()
            loss.backward()
            t3 = time.perf_counter()
            opt.step()
            opt.zero_grad(set_to_none=True)
            t4 = time.perf_counter()
            # the same with the plain padded batch: [N, P + T] rows, every prompt token once per row
            ids = torch.cat([b_ids[group], comp], dim=1)  # [N, P+T]
            mask = torch.cat([b_mask[group], torch.ones((n, t), dtype=torch.long)], dim=1)  # [N, P+T]
            logits = model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                use_cache=False,
                logits_to_keep=t + 1,
            ).logits[:, :-1]  # [N, T, V]
            loss = -completion_logp(logits, comp).mean()
            t5 = time.perf_counter()
            loss.backward()
            t6 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            worker.step_end(
                {
                    "side": shape["side"],
                    "step": k,
                    "T": t,
                    "P": b_ids.shape[1],
                    "parts": {
                        "decode": t1 - t0,
                        "fwd": t2 - t1,
                        "bwd": t3 - t2,
                        "optim": t4 - t3,
                        "fwd_padded": t5 - t4,
                        "bwd_padded": t6 - t5,
                    },
                    "floor": t3 - t0,
                    "floor_padded": (t1 - t0) + (t6 - t4),
                }
            )


if __name__ == "__main__":
    main()
