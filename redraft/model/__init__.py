"""LLaDA2-MoE model, KV cache, masks, checkpoint and tokenizer loading."""

from redraft._lazy import lazy_package

# public names, imported on first use (the CLI imports this package without torch)
lazy_package(__name__, {
    "LLaDA2MoeConfig": ".config", "KVCache": ".kv_cache", "CheckpointError": ".loading",
    "load_model": ".loading", "save_model": ".loading", "BlockLayout": ".masks", "dual_stream_mask": ".masks",
    "TwoStreamMask": ".masks", "RowTiles": ".invariant",
    "LLaDA2MoeModelLM": ".modeling", "ModelOutput": ".modeling"
})
