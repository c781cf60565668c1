"""The auxiliary-loss-free expert balancer: loads counted by router hooks, the bias update, torch.compile-friendly."""

from __future__ import annotations

import torch

from redraft.model import LLaDA2MoeConfig
from redraft.model.moe import Router
from redraft.model.testing import TINY_CONFIG, random_model
from redraft.training.balance import ExpertLoadBalancer


def tiny():
    return random_model(LLaDA2MoeConfig(**{**TINY_CONFIG, "vocab_size": 64}), seed=0).train()


def test_loads_count_every_routed_token_and_move_the_bias_against_the_load():
    model = tiny()
    balancer = ExpertLoadBalancer(model, rate=0.01)
    routers = [m for m in model.modules() if isinstance(m, Router)]
    assert routers and len(balancer.loads) == len(routers)
    picked: list[torch.Tensor] = []
    handles = [r.register_forward_hook(lambda m, i, o: picked.append(o[0].detach().reshape(-1))) for r in routers]
    ids = torch.randint(2, 64, (3, 10), generator=torch.Generator().manual_seed(0))
    model(ids)
    model(ids[:1])  # two forwards: the counts add up
    for h in handles:
        h.remove()
    k = model.config.num_experts_per_tok
    for i, load in enumerate(balancer.loads):
        expected = torch.bincount(torch.cat(picked[i::len(routers)]), minlength=load.numel()).float()
        assert torch.equal(load, expected) and float(load.sum()) == (30 + 10) * k
    before = [r.expert_bias.clone() for r in routers]
    loads = [load.clone() for load in balancer.loads]
    imbalance = balancer.step()
    assert imbalance >= 1.0  # max / mean load
    for r, b, load in zip(routers, before, loads):
        step = r.expert_bias - b
        assert torch.allclose(step, 0.01 * torch.sign(load.mean() - load))
    assert all(not load.any() for load in balancer.loads)  # zeroed for the next step
    assert balancer.step() == 0.0  # nothing ran since: no update


def test_balancer_hooks_leave_the_training_forward_one_graph():
    """A data-dependent op in the hook (bincount) broke the graph, and torch.compile then skipped the whole model
    forward (eager speed with compile on)."""
    model = tiny()
    ExpertLoadBalancer(model, rate=0.01)
    ids = torch.randint(2, 64, (2, 8), generator=torch.Generator().manual_seed(1))
    pos = torch.arange(8).expand(2, 8)
    mask = torch.ones(2, 1, 8, 8, dtype=torch.bool)  # the objective passes an explicit mask
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(ids, pos, attn_mask=mask)
    torch._dynamo.reset()
    assert explained.graph_break_count == 0, explained.break_reasons
