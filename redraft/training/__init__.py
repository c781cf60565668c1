"""Training: the Mixture M2T + T2T block-diffusion objective with Multi-Turn Forward, data, trainer, checkpoints."""

from .config import OptimConfig, TrainConfig, load_config
from .data import DataConfig
from .masks import packed_dual_stream_mask
from .noise import NoiseConfig, NoisedBatch, apply_noise
from .objective import DiffusionObjective, TrainBatch
from .prepare import PreparedData, load_prepared, prepare_data
from .trainer import Trainer

__all__ = ["DataConfig", "DiffusionObjective", "NoiseConfig", "NoisedBatch", "OptimConfig", "PreparedData",
           "TrainBatch", "TrainConfig", "Trainer", "apply_noise", "load_config", "load_prepared",
           "packed_dual_stream_mask", "prepare_data"]
