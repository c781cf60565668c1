"""EBPO: ELBO-based Block-level Policy Optimization (LLaDA2.1 §3.2) for editable block-diffusion LMs.

Parts: `rollout` (G samples per prompt through the decoding engine), `rewards`, `advantages` (group-normalised),
`likelihood` (the block-level ELBO, every block in one forward per noise level, eq. 5), `loss` (the clipped
surrogate, eq. 4, with an exact per-level backward), `recipe` (the training loop) and `commands` (`redraft rl`).
"""

from .advantages import AdvantageConfig, group_advantages
from .likelihood import ElboConfig, ElboTerms, SequenceBatch, block_terms, noise_level, normalizer, sequence_logp
from .loss import LossConfig, clipped_surrogate, ebpo_backward, ebpo_loss, k3
from .rewards import REWARDS, CombinedReward, RewardSpec

__all__ = ["AdvantageConfig", "group_advantages", "ElboConfig", "ElboTerms", "SequenceBatch", "block_terms", "noise_level", "normalizer",
           "sequence_logp", "LossConfig", "clipped_surrogate", "ebpo_backward", "ebpo_loss", "k3", "REWARDS",
           "CombinedReward", "RewardSpec"]
