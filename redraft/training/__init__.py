"""Training: the Mixture M2T + T2T block-diffusion objective with Multi-Turn Forward, data, trainer, checkpoints."""

from redraft._lazy import lazy_package

# public names, imported on first use (the CLI imports this package without torch)
lazy_package(__name__, {
    "DataConfig": ".data", "DiffusionObjective": ".objective", "NoiseConfig": ".noise", "NoisedBatch": ".noise",
    "OptimConfig": ".config", "PreparedData": ".prepare", "TrainBatch": ".objective", "TrainConfig": ".config",
    "Trainer": ".trainer", "apply_noise": ".noise", "load_config": ".config", "load_prepared": ".prepare",
    "packed_dual_stream_mask": ".masks", "prepare_data": ".prepare"
})
