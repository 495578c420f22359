"""Log-probabilities of sampled completions under a causal LM, computed in row chunks."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["sequence_logp", "token_logp"]


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


def token_logp(logits: Tensor, ids: Tensor, *, chunk: int = 16) -> tuple[Tensor, Tensor]:
    """log softmax(logits)[ids] and the entropy of softmax(logits), in chunks of rows.

    logits [N, T, V], ids [N, T] -> (logp [N, T], entropy [N, T]). Chunking over rows keeps the
    float32 [chunk, T, V] temporaries small when the vocabulary is large.
    """
    logps, ents = [], []
    for lg, ix in zip(logits.split(chunk), ids.split(chunk), strict=True):
        lg = lg.float()
        lse = torch.logsumexp(lg, dim=-1)  # [c, T]
        logps.append(lg.gather(-1, ix.unsqueeze(-1)).squeeze(-1) - lse)
        p = torch.softmax(lg, dim=-1)
        ents.append(lse - (p * lg).sum(-1))
    return torch.cat(logps), torch.cat(ents)


def sequence_logp(
    model: torch.nn.Module,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    completion_ids: Tensor,
    completion_mask: Tensor,
    *,
    temperature: float = 1.0,
    share_prompts: bool | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-token log-probs and entropies of the completions under ``model``.

    prompt_ids/prompt_mask [N, P] (left-padded), completion_ids/completion_mask [N, T] (right-padded)
    -> (logp [N, T], entropy [N, T]). Logits are divided by ``temperature``, as in sampling, so that
    at the first update the ratio to the behaviour policy is 1.

    Shared prompts: the G completions of one prompt share its P prompt tokens, whose hidden states do
    not depend on the completion (causal attention). The prompt is then run once per distinct prompt
    (U rows instead of N), its key/value cache gathered to the N rows (a differentiable index), and
    only the completions run per row. Gradients are exactly those of the full forward. By default this
    path is taken when there are at most N/2 distinct prompts.
    """
    n, t = completion_ids.shape
    key = torch.cat([prompt_ids, prompt_mask.long()], dim=1)  # [N, 2P]
    uniq, inverse = torch.unique(key, dim=0, return_inverse=True)  # [U, 2P], [N]
    if share_prompts is None:
        share_prompts = uniq.shape[0] * 2 <= n
    if not share_prompts:
        ids = torch.cat([prompt_ids, completion_ids], dim=1)  # [N, P+T]
        attn = torch.cat([prompt_mask, completion_mask.to(prompt_mask.dtype)], dim=1)  # [N, P+T]
        pos = (attn.long().cumsum(-1) - 1).clamp(min=0)  # [N, P+T]
        logits = model(
            input_ids=ids,
            attention_mask=attn,
            position_ids=pos,
            logits_to_keep=t + 1,
            use_cache=False,
        ).logits[:, :-1]  # [N, T, V]
    else:
        p = prompt_ids.shape[1]
        blocks = _blocks(inverse)
        if blocks is not None:  # prompts in block order, so that spreading the cache is an expand
            order, g = blocks
            uniq = uniq[order]  # [U, 2P]
            inverse = torch.arange(uniq.shape[0], device=inverse.device).repeat_interleave(g)  # [N]
        u_ids, u_mask = uniq[:, :p], uniq[:, p:]  # [U, P]
        u_pos = (u_mask.cumsum(-1) - 1).clamp(min=0)  # [U, P]
        out = model(
            input_ids=u_ids,
            attention_mask=u_mask,
            position_ids=u_pos,
            logits_to_keep=1,
            use_cache=True,
        )
        first = out.logits[:, -1][inverse].unsqueeze(1)  # [N, 1, V] predicts completion token 0
        if t == 1:
            logits = first
        else:
            cache = out.past_key_values
            _spread_cache(cache, inverse, None if blocks is None else blocks[1])  # rows U -> N
            attn = torch.cat(
                [prompt_mask, completion_mask[:, :-1].to(prompt_mask.dtype)], dim=1
            )  # [N, P+T-1]
            pos = u_pos[inverse][:, -1:] + torch.arange(1, t, device=completion_ids.device)
            rest = model(
                input_ids=completion_ids[:, :-1],
                attention_mask=attn,
                position_ids=pos,
                past_key_values=cache,
                use_cache=True,
            ).logits  # [N, T-1, V]
            logits = torch.cat([first, rest], dim=1)  # [N, T, V]
    if temperature != 1.0:
        logits = logits / temperature
    return token_logp(logits, completion_ids)
