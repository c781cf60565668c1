"""Draft-and-Edit decoding (LLaDA2.1): the pure rule (`policy`), the batched engine, presets and `generate`.

Semantics (exact official rule with `mbe_blocks = 0`; see docs/decoding.md):
  * Canvas = prompt + `max_new_tokens` masks, padded to whole blocks; prompt-only blocks are not decoded.
  * Each step runs the model on the row's window and applies eq. 3 = M2T (eq. 1: masks with p > tau_mask, else the
    `num_to_transfer` most confident) together with T2T (eq. 2: written non-prompt tokens whose top token differs
    and p > tau_edit). A step that starts with no mask is a post step; the block ends when post steps exceed
    `max_post_steps` (checked before the forward) or when such a step makes no edit. Optional eos early stop after
    a block ends; output cut just after the first eos.
  * KV cache: final blocks' K/V are committed exactly (block-causal, on final tokens): directly from the forward
    that ended a block without edits, else as a "commit copy" prepended to the row's next forward window.
  * Multi-Block Editing (`mbe_blocks = k > 0`): the editable window is the current block plus the last k finished
    blocks, attended bidirectionally (every window query sees the whole window) so earlier blocks see the newly
    decoded one; M2T fills masks of the window, T2T edits its non-prompt tokens; post steps/block end look at the
    whole window. A block is final (streamed, committed by a block-causal commit copy on its final tokens) when it
    falls more than k blocks behind the current one, so the cache always equals a block-causal recompute.
"""

from redraft._lazy import lazy_package

# public names, imported on first use (the CLI imports this package without torch)
lazy_package(__name__, {
    "DecodeConfig": ".config", "PRESETS": ".config", "preset": ".config", "Engine": ".engine",
    "generate": ".generate", "PolicyResult": ".policy", "decide": ".policy", "greedy_top": ".policy",
    "DecodeStats": ".results", "GenerationResult": ".results", "StepEvent": ".results", "Trajectory": ".results",
    "TrajectoryStep": ".results"
})
