"""Sampling completions from a causal LM: the Rollout batch, the generator, log-probabilities."""

from rlvr.rollout.batch import Rollout
from rlvr.rollout.logprobs import sequence_logp
from rlvr.rollout.sampler import generate, left_pad

__all__ = ["Rollout", "generate", "left_pad", "sequence_logp"]
