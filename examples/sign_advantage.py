"""A new advantage estimator in ten lines: the worked example of docs/adding-a-method.md.

Use it without touching rlvr:  rlvr train --plugin examples/sign_advantage.py algo.advantage=sign
"""

from __future__ import annotations

from torch import Tensor

from rlvr.algos import ADVANTAGES


@ADVANTAGES.register("sign", bounds={"margin": ">= 0"})
def sign(rewards: Tensor, *, margin: float = 0.0) -> Tensor:
    """Sign advantage: only whether a sample beat its group's mean counts, not by how much.

    A_i = sign(r_i - mean_g(r))  if |r_i - mean_g(r)| > margin,  else 0

    rewards [B, G] -> [B, G]. A constant group gets exactly 0 (its centred rewards are 0 up to
    rounding, which the margin test with margin >= 0 and a tolerance removes).
    """
    r = rewards.float()
    centred = r - r.mean(dim=1, keepdim=True)  # [B, G]
    keep = centred.abs() > max(margin, 1e-6)  # [B, G] float32 rounding of the mean is ~1e-8
    return centred.sign() * keep  # [B, G]
