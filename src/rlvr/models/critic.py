"""A critic for PPO-style training: a causal-LM backbone with a scalar value head."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import AutoModel

from rlvr.models.hf import quiet_progress_bars

__all__ = ["ValueModel"]


class ValueModel(nn.Module):
    """V(s_t) for every completion token: the backbone of a Hugging Face causal LM (initialised from
    ``path``, usually the policy's base) and a linear head on its last hidden state.

    The head starts at zero, so the first values are 0 and GAE starts as the Monte-Carlo return.
    """

    def __init__(self, path: str | Path, *, device: torch.device | str = "cpu") -> None:
        super().__init__()
        quiet_progress_bars()
        self.backbone = AutoModel.from_pretrained(path, dtype=torch.float32)
        self.head = nn.Linear(self.backbone.config.hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
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
