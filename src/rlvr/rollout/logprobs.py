"""Log-probabilities of sampled completions under a causal LM, computed in row chunks.

When the whole [N, T, V] logits would be large (a big vocabulary), the model's decoder is run alone
for the hidden states [N, T, H] and the output head is applied to a few rows at a time, each chunk
under activation checkpointing, so that neither the forward nor the backward ever holds more than
one chunk's logits (see :func:`sequence_logp`).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from rlvr.models.lora import plain_model
from rlvr.models.shard import headless, is_sharded

__all__ = [
    "CHUNKABLE_MODEL_TYPES",
    "LOGIT_BUDGET_BYTES",
    "TOKEN_STATS",
    "chunk_rows",
    "pooled_hidden",
    "sequence_hidden",
    "sequence_logp",
    "token_logp",
]

TOKEN_STATS = ("entropy", "sum_pi_sq")
"""What :func:`token_logp` and :func:`sequence_logp` return beside the log-probs: the entropy of
softmax(z) at each position, or sum_v softmax(z)_v^2 (the collision probability, which the optimal
token baseline reads)."""

CHUNKABLE_MODEL_TYPES = frozenset({"qwen2", "qwen3", "llama", "mistral"})
"""Model types whose causal-LM forward is exactly ``logits = lm_head(model(x).last_hidden_state)`` (the
decoder's output already through its final norm; no logit scaling or soft-capping), so that the head
may be applied to chunks of the hidden states."""

LOGIT_BUDGET_BYTES = 64 << 20
"""Float32 logits larger than this, N * T * V * 4 bytes, are computed in row chunks of at most this
size each (when the model type allows it). A chunk's backward holds several [rows, T, V] tensors at
once (the recomputed logits, the softmax, their gradients), so the chunk size sets the head's share of
the update's peak: 64 MiB instead of 256 MiB took the peak resident memory of a LoRA r=8,
checkpointed update on the Qwen2-0.5B shape of ``benchmarks/memory.py`` from 5231 to 4293 MiB, at the
same total work (one head matmul per row either way)."""


def _blocks(inverse: Tensor) -> tuple[Tensor, int] | None:
    """(order [U], G) when rows come in U equal contiguous blocks of G rows, block j being prompt
    ``order[j]`` and every prompt one block (the sampler's layout); otherwise None."""
    n, u = inverse.shape[0], int(inverse.max()) + 1
    if n % u:
        return None
    g = n // u
    order = inverse[::g]  # [U]
    if not torch.equal(inverse.view(u, g), order.unsqueeze(1).expand(u, g)):
        return None
    if not torch.equal(torch.sort(order).values, torch.arange(u, device=order.device)):
        return None
    return order, g


def _spread_cache(cache: object, inverse: Tensor, g: int | None) -> None:
    """Give row n of every layer's key/value cache the rows of prompt ``inverse[n]``, differentiably.

    cache tensors [U, H, P, D] -> [N, H, P, D]. With ``g`` (row n is prompt n // g) this is an expand,
    whose backward is a sum over the G copies; otherwise, or for a cache without per-layer tensors,
    ``reorder_cache``: an index_select, whose backward is a scatter-add (about 20x slower on the CPU
    for the default batch). The forward values are the same either way.
    """
    layers = getattr(cache, "layers", None)
    if g is None or layers is None or any(not torch.is_tensor(getattr(x, "keys", None)) for x in layers):
        cache.reorder_cache(inverse)
        return
    n = inverse.shape[0]
    for layer in layers:
        for name in ("keys", "values"):
            x = getattr(layer, name)  # [U, H, P, D]
            rows = x.unsqueeze(1).expand(x.shape[0], g, *x.shape[1:])  # [U, G, H, P, D]
            setattr(layer, name, rows.reshape(n, *x.shape[1:]))  # [N, H, P, D]


def _decoder_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """(decoder, output head) of a causal LM whose logits are ``head(decoder(x).last_hidden_state)``;
    None for any other model (not in :data:`CHUNKABLE_MODEL_TYPES`, or without those parts). A model
    with LoRA adapters (peft) is looked at underneath, adapters included."""
    model = plain_model(model)  # a peft model: the Hugging Face model, adapters injected
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in CHUNKABLE_MODEL_TYPES:
        return None
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return None
    decoder, head = getattr(model, "model", None), getattr(model, "lm_head", None)
    if not isinstance(decoder, torch.nn.Module) or not isinstance(head, torch.nn.Linear):
        return None
    return decoder, head


def chunk_rows(model: torch.nn.Module, n: int, t: int, logit_chunk: int | None = None) -> int | None:
    """Rows per chunk of the head for N = ``n`` sequences of T = ``t`` completion tokens, or None for
    the plain path (the model computes the whole [N, T, V] logits).

    ``logit_chunk``: None chooses: chunks when the model type allows it and N * T * V * 4 bytes exceed
    :data:`LOGIT_BUDGET_BYTES`, then c = max(1, budget // (T * V * 4)) rows each; 0 never chunks; k > 0
    forces chunks of k rows (a ValueError for a model type that does not allow it).
    """
    parts = _decoder_and_head(model)
    if logit_chunk is not None:
        if logit_chunk < 0:
            raise ValueError(f"logit_chunk must be None, 0 or a number of rows >= 1, got {logit_chunk}")
        if logit_chunk == 0:
            return None
        if parts is None:
            kind = getattr(getattr(model, "config", None), "model_type", None)
            raise ValueError(
                f"logit_chunk={logit_chunk}: model type {kind!r} is not known to compute its logits "
                f"as lm_head(decoder(x)); chunked log-probs support {sorted(CHUNKABLE_MODEL_TYPES)}"
            )
        return logit_chunk
    if parts is None:
        return None
    row_bytes = t * parts[1].weight.shape[0] * 4  # one row's float32 logits [T, V]
    if n * row_bytes <= LOGIT_BUDGET_BYTES:
        return None
    return max(1, LOGIT_BUDGET_BYTES // row_bytes)


def _head_logp(
    head: torch.nn.Module, hidden: Tensor, ids: Tensor, temperature: float, stat: str = "entropy"
) -> tuple[Tensor, Tensor]:
    """hidden [c, T, H], ids [c, T] -> token_logp(head(hidden) / temperature, ids), one chunk."""
    logits = head(hidden)  # [c, T, V]
    if temperature != 1.0:
        logits = logits / temperature
    return token_logp(logits, ids, chunk=hidden.shape[0], stat=stat)


def _chunked_logp(
    head: torch.nn.Module,
    hidden: Tensor,
    ids: Tensor,
    temperature: float,
    rows: int,
    stat: str = "entropy",
) -> tuple[Tensor, Tensor]:
    """hidden [N, T, H], ids [N, T] -> (logp [N, T], ``stat`` [N, T]), ``rows`` rows at a time.

    With gradients each chunk is checkpointed: its forward keeps only the chunk's hidden states, and
    the backward recomputes the chunk's logits, so at most one chunk of [rows, T, V] logits is alive.
    """
    logps, stats = [], []
    for h, ix in zip(hidden.split(rows), ids.split(rows), strict=True):
        if torch.is_grad_enabled():
            lp, st = checkpoint(_head_logp, head, h, ix, temperature, stat, use_reentrant=False)
        else:
            lp, st = _head_logp(head, h, ix, temperature, stat)
        logps.append(lp)
        stats.append(st)
    return torch.cat(logps), torch.cat(stats)


def token_logp(
    logits: Tensor,
    ids: Tensor,
    *,
    chunk: int = 16,
    stat: Literal["entropy", "sum_pi_sq"] = "entropy",
) -> tuple[Tensor, Tensor]:
    """log softmax(logits)[ids] and a statistic of softmax(logits), in chunks of rows.

    logits [N, T, V], ids [N, T] -> (logp [N, T], stat [N, T]), with ``stat`` (:data:`TOKEN_STATS`)

        "entropy":   lse(z) - sum_v softmax(z)_v z_v
        "sum_pi_sq": sum_v softmax(z)_v^2 = exp(lse(2 z) - 2 lse(z))

    where lse = logsumexp over the vocabulary. Chunking over rows keeps the float32 [chunk, T, V]
    temporaries small when the vocabulary is large.
    """
    if stat not in TOKEN_STATS:
        raise ValueError(f"stat must be one of {TOKEN_STATS}, got {stat!r}")
    logps, stats = [], []
    for lg, ix in zip(logits.split(chunk), ids.split(chunk), strict=True):
        lg = lg.float()
        lse = torch.logsumexp(lg, dim=-1)  # [c, T]
        logps.append(lg.gather(-1, ix.unsqueeze(-1)).squeeze(-1) - lse)
        if stat == "entropy":
            p = torch.softmax(lg, dim=-1)  # [c, T, V]
            stats.append(lse - (p * lg).sum(-1))
        else:
            stats.append(torch.exp(torch.logsumexp(2 * lg, dim=-1) - 2 * lse))  # [c, T]
    return torch.cat(logps), torch.cat(stats)


def sequence_logp(
    model: torch.nn.Module,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    completion_ids: Tensor,
    completion_mask: Tensor,
    *,
    temperature: float = 1.0,
    share_prompts: bool | None = None,
    logit_chunk: int | None = None,
    stat: Literal["entropy", "sum_pi_sq"] = "entropy",
) -> tuple[Tensor, Tensor]:
    """Per-token log-probs and entropies of the completions under ``model``.

    prompt_ids/prompt_mask [N, P] (left-padded), completion_ids/completion_mask [N, T] (right-padded)
    -> (logp [N, T], entropy [N, T]). Logits are divided by ``temperature``, as in sampling, so that
    at the first update the ratio to the behaviour policy is 1:

        logp[n, t] = z[n, t, y] - logsumexp_v z[n, t, v],   z = logits / temperature,  y = token t
        entropy[n, t] = logsumexp_v z - sum_v softmax(z)_v z_v

    ``stat = "sum_pi_sq"`` returns sum_v softmax(z[n, t])_v^2 [N, T] in place of the entropy (see
    :func:`token_logp`), computed the same way, chunked or not.

    Shared prompts: the G completions of one prompt share its P prompt tokens, whose hidden states do
    not depend on the completion (causal attention). The prompt is then run once per distinct prompt
    (U rows instead of N), its key/value cache gathered to the N rows (a differentiable index), and
    only the completions run per row. Gradients are exactly those of the full forward. By default this
    path is taken when there are at most N/2 distinct prompts.

    Chunked logits (:func:`chunk_rows`, ``logit_chunk``): for a model whose logits are
    ``lm_head(decoder(x))`` the decoder alone gives the hidden states h [N, T, H], and z is computed
    from ``rows`` rows of h at a time, each chunk under activation checkpointing (its logits are
    recomputed in the backward), instead of the model's whole [N, T, V]. The values and gradients are
    those of the plain path up to float rounding. By default this is done only when the float32
    logits would exceed :data:`LOGIT_BUDGET_BYTES`.
    """
    if stat not in TOKEN_STATS:
        raise ValueError(f"stat must be one of {TOKEN_STATS}, got {stat!r}")
    n, t = completion_ids.shape
    rows = chunk_rows(model, n, t, logit_chunk)
    parts = _decoder_and_head(model) if rows is not None else None
    # the network that runs: the decoder (hidden states out) when chunking, else the whole model
    net = model if parts is None else parts[0]

    def run(**kw: object) -> tuple[Tensor, object]:
        """(logits, or the decoder's hidden states when chunking; the cache)."""
        if parts is None:
            out = net(**kw)
            return out.logits, out.past_key_values
        if is_sharded(model):  # through the root, so that FSDP gathers and reduces the head too
            with headless(model):
                out = model(**kw)
            return out.logits, out.past_key_values  # hidden states [*, L, H]
        keep = int(kw.pop("logits_to_keep", 0))  # type: ignore[call-overload]
        out = net(**kw)
        h = out.last_hidden_state  # [*, L, H]
        return (h[:, -keep:] if keep else h), out.past_key_values

    key = torch.cat([prompt_ids, prompt_mask.long()], dim=1)  # [N, 2P]
    uniq, inverse = torch.unique(key, dim=0, return_inverse=True)  # [U, 2P], [N]
    if share_prompts is None:
        share_prompts = uniq.shape[0] * 2 <= n
    if not share_prompts:
        ids = torch.cat([prompt_ids, completion_ids], dim=1)  # [N, P+T]
        attn = torch.cat([prompt_mask, completion_mask.to(prompt_mask.dtype)], dim=1)  # [N, P+T]
        pos = (attn.long().cumsum(-1) - 1).clamp(min=0)  # [N, P+T]
        logits = run(
            input_ids=ids,
            attention_mask=attn,
            position_ids=pos,
            logits_to_keep=t + 1,
            use_cache=False,
        )[0][:, :-1]  # [N, T, V] (or hidden states [N, T, H] when chunking)
    else:
        p = prompt_ids.shape[1]
        blocks = _blocks(inverse)
        if blocks is not None:  # prompts in block order, so that spreading the cache is an expand
            order, g = blocks
            uniq = uniq[order]  # [U, 2P]
            inverse = torch.arange(uniq.shape[0], device=inverse.device).repeat_interleave(g)  # [N]
        u_ids, u_mask = uniq[:, :p], uniq[:, p:]  # [U, P]
        u_pos = (u_mask.cumsum(-1) - 1).clamp(min=0)  # [U, P]
        last, cache = run(
            input_ids=u_ids,
            attention_mask=u_mask,
            position_ids=u_pos,
            logits_to_keep=1,
            use_cache=True,
        )
        first = last[:, -1][inverse].unsqueeze(1)  # [N, 1, V] (or [N, 1, H]) predicts token 0
        if t == 1:
            logits = first
        else:
            _spread_cache(cache, inverse, None if blocks is None else blocks[1])  # rows U -> N
            attn = torch.cat(
                [prompt_mask, completion_mask[:, :-1].to(prompt_mask.dtype)], dim=1
            )  # [N, P+T-1]
            pos = u_pos[inverse][:, -1:] + torch.arange(1, t, device=completion_ids.device)
            rest = run(
                input_ids=completion_ids[:, :-1],
                attention_mask=attn,
                position_ids=pos,
                past_key_values=cache,
                use_cache=True,
            )[0]  # [N, T-1, V] (or [N, T-1, H])
            logits = torch.cat([first, rest], dim=1)  # [N, T, V] (or hidden states [N, T, H])
    if parts is not None:
        return _chunked_logp(parts[1], logits, completion_ids, temperature, rows, stat)  # type: ignore[arg-type]
    if temperature != 1.0:
        logits = logits / temperature
    return token_logp(logits, completion_ids, stat=stat)


def sequence_hidden(
    model: torch.nn.Module,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    completion_ids: Tensor,
    completion_mask: Tensor,
    *,
    after: bool = False,
) -> Tensor:
    """The causal LM's own last hidden state before each completion token.

    prompt [N, P] left-padded, completion [N, T] right-padded -> hidden [N, T, H] (float32): row t is
    the decoder's output (after its final norm, the input of the output head) at position P - 1 + t,
    the state that predicts completion token t from the prompt and tokens < t; 0 on masked positions.
    ``after``: the state at position P + t instead, after reading token t.
    One plain forward of the decoder (``base_model``; a LoRA policy with its adapters; a sharded one
    through its root with the head swapped for the identity, :func:`rlvr.models.shard.headless`).
    """
    p, t = prompt_ids.shape[1], completion_ids.shape[1]
    ids = torch.cat([prompt_ids, completion_ids], dim=1)  # [N, P+T]
    attn = torch.cat([prompt_mask, completion_mask.to(prompt_mask.dtype)], dim=1)  # [N, P+T]
    pos = (attn.long().cumsum(-1) - 1).clamp(min=0)  # [N, P+T]
    kw = {"input_ids": ids, "attention_mask": attn, "position_ids": pos, "use_cache": False}
    if is_sharded(model):
        with headless(model):
            h = model(**kw).logits  # [N, P+T, H]
    else:
        h = plain_model(model).base_model(**kw).last_hidden_state  # [N, P+T, H]
    start = p if after else p - 1
    return h[:, start : start + t].float() * completion_mask[..., None].to(torch.float32)  # [N, T, H]


def pooled_hidden(
    model: torch.nn.Module,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    completion_ids: Tensor,
    completion_mask: Tensor,
) -> Tensor:
    """[N, H]: the mean over each completion's counted tokens of the hidden state after reading the
    token (:func:`sequence_hidden` with ``after``); 0 for an empty completion."""
    h = sequence_hidden(model, prompt_ids, prompt_mask, completion_ids, completion_mask, after=True)
    m = completion_mask.to(torch.float32)  # [N, T]
    return h.sum(1) / m.sum(1, keepdim=True).clamp(min=1)  # [N, H]
