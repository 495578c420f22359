"""Critics for PPO-style training: a causal-LM backbone with a scalar value head (``ValueModel``), or a
linear probe on the policy's own hidden states (``ProbeValue``, POISE). ``critic.kind`` chooses
(:func:`build_critic`); both take the same inputs and give values [N, T]."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AutoModel

from rlvr.models.hf import quiet_progress_bars

__all__ = ["CRITIC_KINDS", "ProbeValue", "ValueModel", "build_critic"]


def _zero_head(hidden: int) -> nn.Linear:
    """A scalar value head hidden -> 1 with weight and bias 0, so the first values are 0 (GAE then
    starts as the Monte-Carlo return); the head of both critic kinds."""
    head = nn.Linear(hidden, 1)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head


class ValueModel(nn.Module):
    """V(s_t) for every completion token: the backbone of a Hugging Face causal LM (initialised from
    ``path``, usually the policy's base) and a linear head on its last hidden state.

    The head starts at zero, so the first values are 0 and GAE starts as the Monte-Carlo return.
    """

    def __init__(self, path: str | Path, *, device: torch.device | str = "cpu") -> None:
        super().__init__()
        quiet_progress_bars()
        self.backbone = AutoModel.from_pretrained(path, dtype=torch.float32)
        self.head = _zero_head(self.backbone.config.hidden_size)
        self.to(device)

    def forward(
        self, prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor, completion_mask: Tensor
    ) -> Tensor:
        """prompt [N, P] left-padded, completion [N, T] right-padded -> values [N, T].

        values[:, t] is the value of the state before completion token t (prompt and tokens < t),
        read from the hidden state at position P - 1 + t; 0 on masked positions.
        """
        p, t = prompt_ids.shape[1], completion_ids.shape[1]
        ids = torch.cat([prompt_ids, completion_ids], dim=1)  # [N, P+T]
        attn = torch.cat([prompt_mask, completion_mask.to(prompt_mask.dtype)], dim=1)  # [N, P+T]
        pos = (attn.long().cumsum(-1) - 1).clamp(min=0)  # [N, P+T]
        hidden = self.backbone(
            input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False
        ).last_hidden_state  # [N, P+T, H]
        values = self.head(hidden[:, p - 1 : p - 1 + t]).squeeze(-1)  # [N, T]
        return values * completion_mask


class ProbeValue(nn.Module):
    """POISE's light critic ("Your Language Model is Its Own Critic: Reinforcement Learning with Value
    Estimation from Actor's Internal States"): a linear probe on the policy's own hidden states,

        V(s_t) = w . h_t + b,   h_t = the policy's last hidden state before completion token t [H]

    (:func:`rlvr.rollout.logprobs.sequence_hidden`, a no-grad forward of the policy as it is when
    called: before the step's update for the values, after it for the fit). Only w and b [H + 1]
    are trained (its own optimizer, the clipped value loss to the credit assigner's returns); the
    policy is read, not owned: it is not a submodule, so ``state_dict`` holds the probe alone.

    h_t depends on the prompt and the tokens before t only, so V(s_t) is a state baseline for token t
    and A_t = R - V(s_t) (``credit:gae`` with gamma = lam = 1) stays unbiased with one rollout per
    prompt; this stands in for POISE's cross-rollout construction (the paper's probe reads
    trajectory-conditioned features and so predicts a rollout's value from another rollout's), and
    the probe reads no token-entropy statistics. The head starts at zero, as ``ValueModel``'s.
    """

    def __init__(
        self,
        policy: nn.Module,
        *,
        device: torch.device | str = "cpu",
        precision: Callable[[], Any] | None = None,
    ) -> None:
        super().__init__()
        from rlvr.models.lora import plain_model

        self._policy = [policy]  # a list: read, not registered (no policy weights in state_dict)
        self.precision = precision or contextlib.nullcontext
        self.head = _zero_head(plain_model(policy).config.hidden_size)
        self.to(device)

    def forward(
        self, prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor, completion_mask: Tensor
    ) -> Tensor:
        """prompt [N, P] left-padded, completion [N, T] right-padded -> values [N, T], 0 on masked
        positions; gradients reach the probe only."""
        from rlvr.rollout.logprobs import sequence_hidden

        with torch.no_grad(), self.precision():
            h = sequence_hidden(
                self._policy[0], prompt_ids, prompt_mask, completion_ids, completion_mask
            )
        return self.head(h).squeeze(-1) * completion_mask  # [N, T]


CRITIC_KINDS = ("model", "probe")
"""``critic.kind``: 'model' (``ValueModel``, the base's backbone and a head) or 'probe'
(``ProbeValue``, a linear head on the policy's hidden states)."""


def build_critic(
    kind: str,
    *,
    base: str | Path,
    policy: nn.Module,
    device: torch.device | str,
    precision: Callable[[], Any] | None = None,
) -> nn.Module:
    """The critic of ``critic.kind``."""
    if kind == "model":
        return ValueModel(base, device=device)
    if kind == "probe":
        return ProbeValue(policy, device=device, precision=precision)
    raise ValueError(f"critic.kind: expected one of {CRITIC_KINDS}, got {kind!r}")
