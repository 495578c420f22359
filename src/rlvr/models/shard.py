"""FSDP2 sharding of the policy over the learner ranks (``scale.shard = 'fsdp'``).

With plain learner ranks (``rlvr.train.scale``) every rank holds the whole policy, its gradients and
its AdamW moments. Sharded, each decoder layer and the root module are ``fully_shard``-ed over the
ranks: a rank keeps 1/M of every parameter, gradient and optimizer moment, all-gathers a layer's
parameters just before its forward and backward, and reduce-scatters the gradients after.

How the training loop uses it:

- **Gradients.** FSDP averages the ranks' gradients; each rank's loss is its share of the *global*
  aggregate (see ``rlvr.train.scale``), so the loss is multiplied by the number of ranks before the
  backward, and the reduced gradient is the sum: the update of one rank on the whole batch.
  (``set_gradient_divide_factor(1)`` would say the same, but gloo lacks the reduction it needs.)
- **Generation and evaluation** run inside :func:`gathered`: every rank all-gathers the whole policy
  once, and the forwards that follow are local, so the ranks may decode different numbers of tokens
  and rank 0 may evaluate alone. The memory saved is the gradients' and the optimizer's, the larger
  part for AdamW (3 fp32 copies of the parameters against 1).
- **Checkpoints** hold the full weights (gathered to rank 0 by :func:`full_weights`) and the full
  optimizer state keyed by parameter name (:func:`full_optimizer_state`): a sharded run's checkpoint
  is an ordinary model directory, and a resumed run loads that state into its shards. (A plain
  run's optimizer state is keyed by position instead; the two kinds do not resume into each other.)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "drop_aliases",
    "full_optimizer_state",
    "full_weights",
    "gathered",
    "grad_norm",
    "headless",
    "is_sharded",
    "load_optimizer_state",
    "shard_policy",
]


def is_sharded(model: torch.nn.Module) -> bool:
    """True for a model that :func:`shard_policy` sharded."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def shard_policy(model: torch.nn.Module, world: int, device: torch.device) -> None:
    """Shard ``model`` in place over the ``world`` ranks of the default process group: one FSDP unit
    per decoder layer (the classes the model names in ``_no_split_modules``, as Accelerate and TRL
    wrap them) and one for the rest (embeddings, final norm, output head: tied weights stay in one
    unit). The root keeps its parameters gathered between its forward and backward, as FSDP does by
    default for the root. Build the optimizer after this: the parameters become DTensor shards."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    layers = set(getattr(model, "_no_split_modules", None) or [])
    if not layers:
        raise ValueError(
            f"scale.shard = 'fsdp': {type(model).__name__} does not name its decoder layer class "
            "(_no_split_modules), so there is no unit to shard by"
        )
    mesh = init_device_mesh(device.type, (world,))
    units = [m for m in model.modules() if type(m).__name__ in layers and m is not model]
    if not units:
        raise ValueError(
            f"scale.shard = 'fsdp': no module of {sorted(layers)} in {type(model).__name__}"
        )
    for m in units:
        fully_shard(m, mesh=mesh, reshard_after_forward=True)
    fully_shard(model, mesh=mesh, reshard_after_forward=False)


def _units(model: torch.nn.Module) -> list[Any]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextmanager
def gathered(model: torch.nn.Module) -> Iterator[None]:
    """The whole policy gathered on every rank for the block (nothing to do for an unsharded model).

    Entered by every rank together (the gather is a collective); inside, forwards use the gathered
    weights without communication, so ranks may run different numbers of them (generation, rank 0's
    evaluation). On exit the weights go back to shards."""
    if not is_sharded(model):
        yield
        return
    units = _units(model)
    for u in units:  # keep the gathered weights between forwards
        u.set_reshard_after_forward(False, recurse=False)
    for u in units:
        u.unshard()
    try:
        yield
    finally:
        for u in units:
            u.reshard()
            u.set_reshard_after_forward(u is not model, recurse=False)  # as shard_policy set them


@contextmanager
def headless(model: torch.nn.Module) -> Iterator[None]:
    """A sharded causal LM whose forward returns the decoder's hidden states in ``logits``: its
    ``lm_head`` swapped for the identity for the block. Chunked log-probs apply the real head to them
    a few rows at a time; going through the root's forward (not the decoder's) lets FSDP gather and
    reduce the root's parameters, the head's among them."""
    head = model.lm_head
    model.lm_head = torch.nn.Identity()
    try:
        yield
    finally:
        model.lm_head = head


def _full(t: Tensor) -> Tensor:
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def grad_norm(params: list[torch.nn.Parameter], clip: float) -> Tensor:
    """The global L2 norm of the gradients, clipped to ``clip`` first when ``clip`` > 0 (sharded
    gradients: the norm over every rank's shard, the same number on every rank)."""
    grads = [p.grad for p in params if p.grad is not None]
    if clip > 0:
        return _full(torch.nn.utils.clip_grad_norm_(params, clip))
    return _full(torch.nn.utils.get_total_norm(grads))


def full_weights(model: torch.nn.Module, *, everywhere: bool = False) -> dict[str, Tensor]:
    """The sharded policy's full state dict, on the CPU of rank 0 (``{}`` on the other ranks), or on
    every rank's device with ``everywhere``. A collective: every rank calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=not everywhere)
    return get_model_state_dict(model, options=opts)


def drop_aliases(model: torch.nn.Module, weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """``weights`` without the second names of tied parameters (a tied output head), as
    ``save_pretrained`` writes a model's own weights: gathered copies no longer share storage, so it
    cannot tell them apart itself."""
    first: dict[int, str] = {}
    out = dict(weights)
    for name, p in model.named_parameters(remove_duplicate=False):
        if first.setdefault(id(p), name) != name:
            out.pop(name, None)
    return out


def full_optimizer_state(model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's full state keyed by parameter name, on the CPU of rank 0 (collective)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(model, opt, options=opts)


def load_optimizer_state(model: torch.nn.Module, opt: torch.optim.Optimizer, state: dict) -> None:
    """Load a :func:`full_optimizer_state` into the sharded optimizer (every rank passes the whole
    state; each keeps its shards)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, opt, state, options=StateDictOptions(full_state_dict=True))
