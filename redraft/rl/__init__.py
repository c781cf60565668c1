"""EBPO: ELBO-based Block-level Policy Optimization (LLaDA2.1 §3.2) for editable block-diffusion LMs.

Parts: `rollout` (G samples per prompt through the decoding engine), `rewards`, `advantages` (group-normalised),
`likelihood` (the block-level ELBO, every block in one forward per noise level, eq. 5), `loss` (the clipped
surrogate, eq. 4, with an exact per-level backward), `recipe` (the training loop) and `commands` (`redraft rl`).
"""

from redraft._lazy import lazy_package

# public names, imported on first use (the CLI imports this package without torch)
lazy_package(__name__, {
    "AdvantageConfig": ".advantages", "group_advantages": ".advantages", "ElboConfig": ".likelihood",
    "ElboTerms": ".likelihood", "SequenceBatch": ".likelihood", "block_terms": ".likelihood",
    "noise_level": ".likelihood", "normalizer": ".likelihood", "sequence_logp": ".likelihood",
    "LossConfig": ".loss", "clipped_surrogate": ".loss", "ebpo_backward": ".loss", "ebpo_loss": ".loss",
    "k3": ".loss", "REWARDS": ".rewards", "CombinedReward": ".rewards", "RewardSpec": ".rewards"
})
