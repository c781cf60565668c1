"""Auxiliary-loss-free expert load balancing (DeepSeek-V3 style) for the MoE routers' `expert_bias`.

The router adds `expert_bias` to its scores for expert *selection* only (the gate weights are unbiased). After each
optimiser step every router's bias moves by `rate * sign(mean load - load_e)`: overloaded experts become less likely
to be picked, idle ones more. Loads are counted by forward hooks on the routers over the whole step (every turn and
micro-batch), summed over processes when distributed. Off when the rate is 0.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from redraft.model.moe import Router


class ExpertLoadBalancer:
    def __init__(self, model: nn.Module, rate: float):
        if rate < 0:
            raise ValueError(f"expert_bias_update_rate must be >= 0, got {rate}")
        self.rate = rate
        self.routers = [m for m in model.modules() if isinstance(m, Router)]
        self.loads: list[Tensor | None] = [None] * len(self.routers)
        self.handles = [r.register_forward_hook(self._hook(i)) for i, r in enumerate(self.routers)] if rate else []

    def _hook(self, i: int):
        def hook(module: Router, inputs, output) -> None:
            idx = output[0].detach()
            counts = torch.bincount(idx.reshape(-1), minlength=module.expert_bias.numel()).float()
            self.loads[i] = counts if self.loads[i] is None else self.loads[i] + counts
        return hook

    @torch.no_grad()
    def step(self) -> float:
        """Update the biases from the loads counted since the last call; returns the mean max/mean load ratio."""
        if not self.rate:
            return 0.0
        imbalance = []
        for router, load in zip(self.routers, self.loads):
            if load is None:
                continue
            if dist.is_available() and dist.is_initialized():
                dist.all_reduce(load)
            bias = router.expert_bias
            bias.add_(self.rate * torch.sign(load.mean() - load).to(bias.dtype))
            imbalance.append(float(load.max() / load.mean().clamp(min=1.0)))
        self.loads = [None] * len(self.routers)
        return sum(imbalance) / len(imbalance) if imbalance else 0.0
