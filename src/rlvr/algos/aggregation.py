"""Loss aggregation: per-token loss [N, T] and mask [N, T] -> scalar.

All aggregations here are linear in the loss, which lets the trainer split a mini-batch into
micro-batches and still get exactly the full-batch value.
"""

from __future__ import annotations

from torch import Tensor

from rlvr.registry import Registry

AGGREGATIONS = Registry("aggregation")


@AGGREGATIONS.register("token_mean")
def token_mean(loss: Tensor, mask: Tensor) -> Tensor:
    """Sum_{i,t} L_it m_it / Sum_{i,t} m_it: every token of the batch weighs the same (DAPO, "DAPO: An
    Open-Source LLM Reinforcement Learning System at Scale"; TRL's default)."""
    return (loss * mask).sum() / mask.sum().clamp(min=1)


@AGGREGATIONS.register("seq_mean_token_mean")
def seq_mean_token_mean(loss: Tensor, mask: Tensor) -> Tensor:
    """(1/N) Sum_i [Sum_t L_it m_it / Sum_t m_it]: each sequence weighs the same (the original GRPO,
    "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models")."""
    per_seq = (loss * mask).sum(-1) / mask.sum(-1).clamp(min=1)  # [N]
    return per_seq.mean()


@AGGREGATIONS.register("seq_mean_token_sum")
def seq_mean_token_sum(loss: Tensor, mask: Tensor) -> Tensor:
    """(1/N) Sum_i Sum_t L_it m_it: mean over sequences of each sequence's token sum (verl's
    ``loss_agg_mode = "seq-mean-token-sum"``)."""
    return (loss * mask).sum(-1).mean()


@AGGREGATIONS.register("constant", bounds={"max_tokens": ">= 1"})
def constant(loss: Tensor, mask: Tensor, *, max_tokens: int | None = None) -> Tensor:
    """Sum_{i,t} L_it m_it / (N * T_max), a constant normaliser (Dr. GRPO, "Understanding R1-Zero-Like
    Training: A Critical Perspective").

    T_max is ``max_tokens`` if given, else ``mask.shape[-1]``.
    """
    t_max = mask.shape[-1] if max_tokens is None else max_tokens
    return (loss * mask).sum() / (mask.shape[0] * t_max)
