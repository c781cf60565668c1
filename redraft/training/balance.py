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
        # one count buffer per router, added to in place (a hook that rebinds list items would make torch.compile
        # guard on them and recompile); `step` reads and zeroes them
        self.loads: list[Tensor] = [torch.zeros(r.expert_bias.numel(), device=r.expert_bias.device)
                                    for r in self.routers]
        self.handles = [r.register_forward_hook(self._hook(i)) for i, r in enumerate(self.routers)] if rate else []

    def _hook(self, i: int):
        def hook(module: Router, inputs, output) -> None:
            idx = output[0].detach().reshape(-1)
            # a scatter into the fixed-size buffer, not bincount (whose output size depends on the data: a graph
            # break that makes torch.compile skip the whole model forward)
            self.loads[i].scatter_add_(0, idx, torch.ones(idx.shape, dtype=self.loads[i].dtype, device=idx.device))
        return hook

    @torch.no_grad()
    def step(self) -> float:
        """Update the biases from the loads counted since the last call; returns the mean max/mean load ratio."""
        if not self.rate:
            return 0.0
        imbalance = []
        for router, load in zip(self.routers, self.loads):
            if dist.is_available() and dist.is_initialized():
                dist.all_reduce(load)
            if not load.any():  # the router did not run this step
                continue
            bias = router.expert_bias
            bias.add_(self.rate * torch.sign(load.mean() - load).to(bias.dtype))
            imbalance.append(float(load.max() / load.mean().clamp(min=1.0)))
        for load in self.loads:
            load.zero_()
        return sum(imbalance) / len(imbalance) if imbalance else 0.0
