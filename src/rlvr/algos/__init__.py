"""Pure tensor math of RL post-training: no I/O, no config objects, no model.

Every component is a plain function registered by name in one of the registries below. A component
that needs more than the basic inputs of its kind declares it (``needs``) and receives it as a
keyword argument; :data:`INPUTS` lists, per kind, the optional inputs the trainer can supply.
"""

from rlvr.algos.advantages import ADVANTAGES
from rlvr.algos.aggregation import AGGREGATIONS
from rlvr.algos.credit import CREDIT
from rlvr.algos.hybrid import hybrid as _hybrid  # noqa: F401  (registers hybrid, rl_plus, calibrl)
from rlvr.algos.kl import KL_ESTIMATORS
from rlvr.algos.objectives import OBJECTIVES
from rlvr.algos.reward_weights import REWARD_WEIGHTS
from rlvr.algos.shaping import SHAPING
from rlvr.algos.weights import TOKEN_WEIGHTS

__all__ = [
    "ADVANTAGES",
    "AGGREGATIONS",
    "CREDIT",
    "INPUTS",
    "KL_ESTIMATORS",
    "OBJECTIVES",
    "REWARD_WEIGHTS",
    "SHAPING",
    "TOKEN_WEIGHTS",
]

INPUTS: dict[str, frozenset[str]] = {
    # advantage estimators: rewards [B, G] -> [B, G]
    "advantage": frozenset(
        {
            "reward_parts",  # [B, G, K] unweighted reward components
            "reward_weights",  # [K] their weights
            "seq_logp",  # [B, G] log pi_old(y|x), summed over completion tokens
            "seq_ref_logp",  # [B, G] log pi_ref(y|x) (loads a reference model)
            "lengths",  # [B, G] completion lengths in tokens
            "greedy_rewards",  # [B, G] reward of the prompt's greedy response (one greedy rollout)
            # [B, G, D] the policy's last hidden state averaged over each completion's counted tokens
            # (one extra no-grad forward of the policy before the update)
            "seq_hidden",
        }
    ),
    # objectives: (logp, old_logp, adv, mask) -> loss [N, T]
    "objective": frozenset(
        {
            "ref_logp",  # [N, T] reference-model log-probs (loads a reference model)
            "entropy",  # [N, T] current policy's token entropy, detached
            "completion_ids",  # [N, T] sampled token ids
            "group",  # [N] prompt index; whole groups, contiguous
            "rewards",  # [N] scalar reward per sequence
            # [N] 1 on a demonstration row ([demos]: a worked solution the collector appended to
            # its group, not sampled by the policy; its old_logp is the policy's before the update)
            "demo",
            "demo_group",  # [N] 1 on every row of a group that has a demonstration row
            # [N, T] the policy's log-probs of a hinted row's tokens after its prompt with a correct
            # solution appended ([self_teacher]; old_logp on the other rows), as for credit
            "self_teacher_logp",
        }
    ),
    # token-level credit assigners: (rewards [B, G], mask [N, T]) -> advantages [N, T]; they replace the
    # outcome-level estimator when a recipe sets `credit`.
    "credit": frozenset(
        {
            "kl",  # [N, T] the chosen KL estimator between behaviour and reference (loads a reference)
            "old_logp",  # [N, T] behaviour log-probs
            "completion_ids",  # [N, T] sampled token ids (prefix trees of a group)
            "values",  # [N, T] the critic's values before each token (needs critic.enabled)
            "turn",  # [N, T] long: k >= 1 on the tokens of the k-th model turn, 0 elsewhere
            "turn_rewards",  # [N, K] the environment's reward after model turn k (column k-1)
            "turn_states",  # [N, K] long anchor-state id (>= 1) seen before model turn k, 0 beyond
            "process_rewards",  # [N, T] a step's score on its last token, 0 elsewhere (a step reward)
            # [N, T] Σ_v π_old(v|s_t)² of the policy at each completion position (one extra no-grad
            # forward of the policy before the update)
            "sum_pi_sq",
            # [N, T] log pi_teacher(y_t | x, y_<t) of each sampled token under the frozen teacher
            # ([teacher]), at the sampling temperature (one no-grad forward of the teacher)
            "teacher_logp",
            "ref_logp",  # [N, T] the reference's log-probs of the sampled tokens (loads a reference)
            # [N, T] beta (log pi_prm - log pi_ref) of each sampled token under the online implicit
            # PRM ([prm], PRIME; loads a reference), before this step's PRM update
            "implicit_rewards",
            # [N, T] log pi_self(y_t | x + hint, y_<t): the policy before the update, run on the
            # row's completion after its prompt with a correct solution appended ([self_teacher];
            # one extra no-grad forward of the policy over the hinted rows); old_logp on other rows
            "self_teacher_logp",
            "self_teacher_entropy",  # [N, T] that forward's entropy per position (0 on other rows)
            "self_teacher_mask",  # [N] 1 on the rows that got a hint (failed, with a solution)
        }
    ),
    # token weights: mask -> weights [N, T] that multiply any objective's per-token loss
    "token_weights": frozenset({"entropy", "logp", "group", "completion_ids", "rewards"}),
    # reward shaping: combined rewards [B, G] -> shaped rewards [B, G], applied before the advantage
    "shaping": frozenset(
        {
            "lengths",  # [B, G] completion lengths in tokens (float)
            "correct",  # [B, G] the verifier's outcome, 0/1
            "max_len",  # int, the generation budget in tokens
        }
    ),
}
