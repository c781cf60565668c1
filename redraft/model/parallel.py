"""Tensor- and expert-parallel inference as a transform of a built model (the shape of gpt-fast's `tp.py`).

`apply_parallel(model, ParallelConfig(tp, ep))` cuts every weight of a built `LLaDA2MoeModelLM` in place to this
rank's part and registers one all-reduce hook per attention block and per MLP/MoE block; `modeling.py` never sees
ranks. All ranks hold the same activations [B, T, H] between blocks (replicated), so routing, masks, the KV cache
bookkeeping and the decoding policy run identically on every rank.

Layout of rank r of `tp` ranks (every count below must divide evenly; `ParallelConfig.check` says which does not):
- attention: query heads [r*nh/tp, (r+1)*nh/tp) and their KV heads: the fused `query_key_value` rows of those q, k
  and v heads (column-parallel); KV heads are replicated when tp > num_key_value_heads (tp a multiple of it).
  `dense` takes the matching input columns (row-parallel) -> one all-reduce of the block output.
- dense MLP and shared experts: gate and up rows [r*I/tp, (r+1)*I/tp) each (the fused `gate_up_proj` keeps its gate
  half first), `down_proj` the matching columns -> one all-reduce (the shared experts' partial output is added to
  the routed experts' before the MoE block's single all-reduce).
- routed experts, `ep` groups (ep divides tp): rank r holds experts of group r // (tp/ep), E/ep of the stacked bank
  (expert parallel), each cut along its intermediate dim into tp/ep parts (tensor parallel inside an expert).
  ep = 1: every rank holds every expert's slice; ep = tp: every rank holds whole experts. Every rank routes all
  tokens (router replicated, identical results) and runs only its experts; the MoE all-reduce sums the rest.
- embedding: vocab rows [r*V/tp, (r+1)*V/tp); a masked lookup + all-reduce.
- LM head: the same vocab rows. The model's logits are gathered over ranks (so a plain forward returns [.., V]);
  under `ParallelState.sharded_logits()` they stay local and `ParallelState.reduce_top` reduces each position's
  (max logit, argmax, sum exp) across ranks: the top token and its probability without gathering V logits.

Collectives are torch.distributed's (gloo on CPU, NCCL on CUDA), on the process group given (default: WORLD).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .config import LLaDA2MoeConfig
from .layers import MLP
from .moe import MoE, ExpertBank
from .attention import Attention

# exp below this is subnormal in float32 (see `redraft.decoding.policy`); the same clamp keeps the reduce exact to it
_SUBNORMAL_EXP = -87.0


@dataclass(frozen=True)
class ParallelConfig:
    """tp: ranks the model is cut over. ep: expert-parallel groups among them (1 = TP inside every expert,
    tp = whole experts per rank); must divide tp."""

    tp: int = 1
    ep: int = 1

    def __post_init__(self) -> None:
        for name in ("tp", "ep"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ParallelConfig.{name} must be a positive int, got {value!r}")
        if self.tp % self.ep:
            raise ValueError(f"ParallelConfig.ep ({self.ep}) must divide tp ({self.tp})")

    @property
    def expert_tp(self) -> int:
        """Ranks sharing one expert group (each holds 1/expert_tp of every expert's intermediate dim)."""
        return self.tp // self.ep

    def check(self, cfg: LLaDA2MoeConfig) -> None:
        """ValueError naming the config field that this layout cannot cut evenly (call before reading weights)."""
        tp, ep = self.tp, self.ep

        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(f"tp={tp}, ep={ep} does not fit this model: {what}")

        need(cfg.num_attention_heads % tp == 0,
             f"num_attention_heads ({cfg.num_attention_heads}) is not a multiple of tp ({tp})")
        kv = cfg.num_key_value_heads
        need(kv % tp == 0 or tp % kv == 0,
             f"num_key_value_heads ({kv}) and tp ({tp}): one must be a multiple of the other")
        need(cfg.vocab_size % tp == 0, f"vocab_size ({cfg.vocab_size}) is not a multiple of tp ({tp})")
        if cfg.first_k_dense_replace > 0 or cfg.num_experts == 0:
            need(cfg.intermediate_size % tp == 0,
                 f"intermediate_size ({cfg.intermediate_size}) is not a multiple of tp ({tp})")
        if any(cfg.is_moe_layer(i) for i in range(cfg.num_hidden_layers)):
            need(cfg.num_experts % ep == 0, f"num_experts ({cfg.num_experts}) is not a multiple of ep ({ep})")
            need(cfg.moe_intermediate_size % self.expert_tp == 0,
                 f"moe_intermediate_size ({cfg.moe_intermediate_size}) is not a multiple of tp/ep ({self.expert_tp})")
            shared = cfg.moe_intermediate_size * cfg.num_shared_experts
            need(shared % tp == 0, f"shared experts' intermediate size ({shared}) is not a multiple of tp ({tp})")


@dataclass(frozen=True)
class Shard:
    """What rank `rank` holds under `config` for model config `model` (all counts local, all offsets global)."""

    model: LLaDA2MoeConfig
    config: ParallelConfig
    rank: int

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.config.tp:
            raise ValueError(f"rank must be in [0, tp={self.config.tp}), got {self.rank}")
        self.config.check(self.model)

    @property
    def heads(self) -> int:
        return self.model.num_attention_heads // self.config.tp

    @property
    def first_head(self) -> int:
        return self.rank * self.heads

    @property
    def kv_heads(self) -> int:
        return max(1, self.model.num_key_value_heads // self.config.tp)

    @property
    def first_kv_head(self) -> int:
        # the KV head of this rank's first query head (GQA: query head j reads KV head j // group)
        return self.first_head // (self.model.num_attention_heads // self.model.num_key_value_heads)

    def mlp_rows(self, intermediate: int) -> tuple[int, int]:
        part = intermediate // self.config.tp
        return self.rank * part, (self.rank + 1) * part

    @property
    def experts(self) -> tuple[int, int]:
        """[first, end) of this rank's routed experts."""
        per = self.model.num_experts // self.config.ep
        group = self.rank // self.config.expert_tp
        return group * per, (group + 1) * per

    @property
    def expert_rows(self) -> tuple[int, int]:
        """[start, end) of this rank's part of each local expert's intermediate dim."""
        part = self.model.moe_intermediate_size // self.config.expert_tp
        sub = self.rank % self.config.expert_tp
        return sub * part, (sub + 1) * part

    @property
    def vocab(self) -> tuple[int, int]:
        part = self.model.vocab_size // self.config.tp
        return self.rank * part, (self.rank + 1) * part


@dataclass(frozen=True)
class Piece:
    """This rank's part of one checkpoint tensor: the concatenation, along `dim`, of the index ranges `ranges` of
    the full tensor (None: the whole tensor, replicated)."""

    dim: int = 0
    ranges: tuple[tuple[int, int], ...] | None = None

    def take(self, full: Tensor) -> Tensor:
        if self.ranges is None:
            return full
        return torch.cat([full.narrow(self.dim, a, b - a) for a, b in self.ranges], dim=self.dim)

    def shape(self, full_shape: list[int]) -> list[int]:
        if self.ranges is None:
            return list(full_shape)
        out = list(full_shape)
        out[self.dim] = sum(b - a for a, b in self.ranges)
        return out


def shard_plan(shard: Shard) -> dict[str, Piece | None]:
    """Official checkpoint name -> this rank's `Piece` (None: held by other ranks only). Every tensor of the
    single-process checkpoint is a key, so a name missing here is not part of the model."""
    cfg, d = shard.model, shard.model.head_dim
    nh, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
    whole = Piece()
    h0, k0 = shard.first_head, shard.first_kv_head
    qkv = Piece(0, ((h0 * d, (h0 + shard.heads) * d), ((nh + k0) * d, (nh + k0 + shard.kv_heads) * d),
                    ((nh + nkv + k0) * d, (nh + nkv + k0 + shard.kv_heads) * d)))
    v0, v1 = shard.vocab
    plan: dict[str, Piece | None] = {"model.word_embeddings.weight": Piece(0, ((v0, v1),)),
                                     "model.norm.weight": whole, "lm_head.weight": Piece(0, ((v0, v1),))}

    def mlp(prefix: str, intermediate: int) -> None:
        a, b = shard.mlp_rows(intermediate)
        plan[f"{prefix}.gate_proj.weight"] = plan[f"{prefix}.up_proj.weight"] = Piece(0, ((a, b),))
        plan[f"{prefix}.down_proj.weight"] = Piece(1, ((a, b),))

    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}"
        plan[f"{p}.input_layernorm.weight"] = plan[f"{p}.post_attention_layernorm.weight"] = whole
        plan[f"{p}.attention.query_key_value.weight"] = qkv
        if cfg.use_qkv_bias:
            plan[f"{p}.attention.query_key_value.bias"] = qkv
        if cfg.use_qk_norm:
            plan[f"{p}.attention.query_layernorm.weight"] = plan[f"{p}.attention.key_layernorm.weight"] = whole
        plan[f"{p}.attention.dense.weight"] = Piece(1, ((h0 * d, (h0 + shard.heads) * d),))
        if cfg.use_bias:  # a row-parallel bias is added once: rank 0 holds it
            plan[f"{p}.attention.dense.bias"] = whole if shard.rank == 0 else None
        if not cfg.is_moe_layer(i):
            mlp(f"{p}.mlp", cfg.intermediate_size)
            continue
        plan[f"{p}.mlp.gate.weight"] = plan[f"{p}.mlp.gate.expert_bias"] = whole
        e0, e1 = shard.experts
        a, b = shard.expert_rows
        for e in range(cfg.num_experts):
            mine = e0 <= e < e1
            for name in ("gate_proj", "up_proj"):
                plan[f"{p}.mlp.experts.{e}.{name}.weight"] = Piece(0, ((a, b),)) if mine else None
            plan[f"{p}.mlp.experts.{e}.down_proj.weight"] = Piece(1, ((a, b),)) if mine else None
        if cfg.num_shared_experts:
            mlp(f"{p}.mlp.shared_experts", cfg.moe_intermediate_size * cfg.num_shared_experts)
    return plan


# ---------------------------------------------------------------------------------------------------- modules
class VocabParallelEmbedding(nn.Module):
    """Rows [vocab_start, vocab_start + num_embeddings) of the embedding; other ids give zeros, then all-reduce."""

    def __init__(self, num_embeddings: int, embedding_dim: int, vocab_start: int, group=None, reduce: bool = True):
        super().__init__()
        self.vocab_start = vocab_start
        self.num_embeddings = num_embeddings
        self.weight = nn.Parameter(torch.empty(num_embeddings, embedding_dim))
        self.group = group
        self.reduce = reduce  # False on a one-rank layout (nothing to sum, no process group needed)

    def forward(self, input_ids: Tensor) -> Tensor:
        local = input_ids - self.vocab_start
        inside = (local >= 0) & (local < self.num_embeddings)
        out = F.embedding(local.clamp(0, self.num_embeddings - 1), self.weight)
        out = out.masked_fill(~inside[..., None], 0.0)
        return all_reduce(out, self.group) if self.reduce else out


class ShardedExpertBank(ExpertBank):
    """Experts [first_expert, first_expert + num_experts) of a bank of `total_experts`, each possibly cut along its
    intermediate dim. Takes the full sorted dispatch of `MoE.forward` (rows of all experts, `counts` [total]) and
    returns this rank's part of each row (zeros for rows routed to other ranks' experts)."""

    def __init__(self, num_experts: int, hidden: int, intermediate: int, first_expert: int, total_experts: int):
        super().__init__(num_experts, hidden, intermediate)
        self.first_expert = first_expert
        self.total_experts = total_experts

    def official_views(self, keep_vars: bool = False) -> dict[str, Tensor]:
        views = super().official_views(keep_vars)
        out = {}
        for key, view in views.items():
            e, rest = key.split(".", 1)
            out[f"{int(e) + self.first_expert}.{rest}"] = view
        return out

    def forward(self, x_sorted: Tensor, counts: Tensor, tile: int | None = None) -> Tensor:
        if self.num_experts == self.total_experts:
            return super().forward(x_sorted, counts, tile)
        lo, hi = self.first_expert, self.first_expert + self.num_experts
        if x_sorted.is_cuda and torch.cuda.is_current_stream_capturing():
            return self._padded_local(x_sorted, counts)
        ends = counts.cumsum(0)
        start, stop = torch.stack([ends[lo] - counts[lo], ends[hi - 1]]).tolist()  # one host sync per layer
        out = torch.zeros_like(x_sorted)
        if stop > start:
            out[start:stop] = super().forward(x_sorted[start:stop], counts[lo:hi], tile)
        return out

    def _padded_local(self, x_sorted: Tensor, counts: Tensor) -> Tensor:
        """No host sync (CUDA-graph capture): every row padded into a per-expert batch; other ranks' rows go to a
        spare slot that is never multiplied."""
        m, n = x_sorted.shape[0], self.num_experts
        ar = torch.arange(m, device=x_sorted.device)
        ends = counts.cumsum(0)
        expert = torch.searchsorted(ends, ar, right=True).clamp(max=counts.shape[0] - 1)
        pos = ar - (ends - counts)[expert]
        local = expert - self.first_expert
        mine = (local >= 0) & (local < n)
        slot = torch.where(mine, local, torch.full_like(local, n))
        buf = x_sorted.new_zeros(n + 1, m, x_sorted.shape[1])
        buf[slot, pos] = x_sorted
        gate, up = torch.bmm(buf[:n], self.gate_up_proj.transpose(1, 2)).chunk(2, dim=-1)
        res = torch.bmm(F.silu(gate) * up, self.down_proj.transpose(1, 2))
        return res[slot.clamp(max=n - 1), pos] * mine[:, None].to(x_sorted.dtype)


# ---------------------------------------------------------------------------------------------------- state
class ParallelState:
    """Attached to a parallel model as `model.parallel`: the layout and the process group, the vocab-parallel
    logits helpers, and the local attention shape (`KVCache.for_model` reads `kv_heads`)."""

    def __init__(self, shard: Shard, group=None):
        self.shard = shard
        self.config = shard.config
        self.rank = shard.rank
        self.group = group
        self.kv_heads = shard.kv_heads
        self.vocab_start, self.vocab_end = shard.vocab
        self.vocab_size = shard.model.vocab_size
        self._sharded_logits = False

    @contextlib.contextmanager
    def sharded_logits(self) -> Iterator[None]:
        """Forwards inside return this rank's vocab slice of the logits [.., V/tp] (for `reduce_top`)."""
        before, self._sharded_logits = self._sharded_logits, True
        try:
            yield
        finally:
            self._sharded_logits = before

    def gather_logits(self, local: Tensor) -> Tensor:
        """[.., V/tp] on every rank -> [.., V] on every rank."""
        if self.config.tp == 1:
            return local
        local = local.contiguous()
        parts = [torch.empty_like(local) for _ in range(self.config.tp)]
        dist.all_gather(parts, local, group=self.group)
        return torch.cat(parts, dim=-1)

    def reduce_top(self, local: Tensor, forbid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Greedy top token and its probability per position from this rank's logits slice [.., V/tp]: each rank's
        (max logit, argmax, sum exp(logit - max)) is gathered (3 numbers per position) and combined; the same result
        as `redraft.decoding.policy.greedy_top` on the full logits, up to float rounding of the sum.
        forbid: optional [B, V] bool of ids a row may not predict (full vocab; this rank applies its columns)."""
        logits = local.float()
        if forbid is not None:
            logits = logits.masked_fill(forbid[:, None, self.vocab_start:self.vocab_end], float("-inf"))
        top_logit, top = logits.max(dim=-1)
        total = (logits - top_logit[..., None]).clamp_(min=_SUBNORMAL_EXP).exp_().sum(dim=-1)
        total = torch.where(torch.isinf(top_logit), torch.zeros_like(total), total)  # a fully forbidden slice
        stats = torch.stack([top_logit, (top + self.vocab_start).float(), total])  # ids < 2^24: exact in float32
        if self.config.tp > 1:
            parts = [torch.empty_like(stats) for _ in range(self.config.tp)]
            dist.all_gather(parts, stats.contiguous(), group=self.group)
            stats = torch.stack(parts)  # [tp, 3, ...]
        else:
            stats = stats[None]
        best, owner = stats[:, 0].max(dim=0)  # ties: the first rank, i.e. the lowest id (as argmax on full logits)
        token = stats[:, 1].gather(0, owner[None])[0].long()
        scale = (stats[:, 0] - best[None]).clamp(min=_SUBNORMAL_EXP).exp()
        scale = torch.where(torch.isinf(stats[:, 0]), torch.zeros_like(scale), scale)
        return token, (stats[:, 2] * scale).sum(dim=0).reciprocal()


def all_reduce(t: Tensor, group=None) -> Tensor:
    """Sum `t` over the group in place (every rank gets the sum); returns t."""
    dist.all_reduce(t, group=group)
    return t


# ---------------------------------------------------------------------------------------------------- transform
def _param(shape: list[int] | tuple[int, ...], like: Tensor) -> nn.Parameter:
    return nn.Parameter(torch.empty(shape, dtype=like.dtype, device=like.device), requires_grad=False)


def _shard_linear(linear: nn.Linear, out_features: int, in_features: int, keep_bias: bool = True) -> None:
    linear.weight = _param((out_features, in_features), linear.weight)
    if linear.bias is not None:
        linear.bias = _param((out_features,), linear.bias) if keep_bias else None
    linear.out_features, linear.in_features = out_features, in_features


def _shard_mlp(mlp: MLP, intermediate: int) -> None:
    hidden = mlp.gate_up_proj.in_features
    mlp.intermediate = intermediate
    _shard_linear(mlp.gate_up_proj, 2 * intermediate, hidden)
    _shard_linear(mlp.down_proj, hidden, intermediate, keep_bias=False)


def _reduce_output(group):
    def hook(module, args, output):
        if isinstance(output, tuple):  # attention: (output, new_kv)
            all_reduce(output[0], group)
        else:
            all_reduce(output, group)
        return output

    return hook


def _gather_logits_hook(state: ParallelState):
    def hook(module, args, output):
        if not state._sharded_logits:
            output.logits = state.gather_logits(output.logits)
        return output

    return hook


def shard_modules(model: nn.Module, shard: Shard, group=None) -> ParallelState:
    """Give every module of `model` this rank's shapes (new, uninitialised parameters on the same device and dtype,
    the meta device included) and register the collectives. Weights are filled afterwards (`apply_parallel` from the
    full model, `parallel_loading.load_sharded` from the checkpoint)."""
    if getattr(model, "parallel", None) is not None:
        raise ValueError("model is already parallel (apply_parallel was called on it before)")
    cfg = shard.model
    hidden, d = cfg.hidden_size, cfg.head_dim
    state = ParallelState(shard, group)
    hook = _reduce_output(group)
    old = model.model.word_embeddings
    distributed = shard.config.tp > 1  # tp = 1: the same modules, no collectives
    emb = VocabParallelEmbedding(shard.vocab[1] - shard.vocab[0], hidden, shard.vocab[0], group, distributed)
    emb.weight = _param(emb.weight.shape, old.weight)
    model.model.word_embeddings = emb
    _shard_linear(model.lm_head, shard.vocab[1] - shard.vocab[0], hidden)
    for layer in model.model.layers:
        att: Attention = layer.attention
        att.num_heads, att.num_kv_heads = shard.heads, shard.kv_heads
        _shard_linear(att.query_key_value, (shard.heads + 2 * shard.kv_heads) * d, hidden)
        _shard_linear(att.dense, hidden, shard.heads * d, keep_bias=shard.rank == 0)
        if distributed:
            att.register_forward_hook(hook)
        mlp = layer.mlp
        if isinstance(mlp, MoE):
            old_bank = mlp.experts
            e0, e1 = shard.experts
            a, b = shard.expert_rows
            with torch.device(old_bank.gate_up_proj.device):
                bank = ShardedExpertBank(e1 - e0, hidden, b - a, e0, cfg.num_experts)
            bank.gate_up_proj = _param(bank.gate_up_proj.shape, old_bank.gate_up_proj)
            bank.down_proj = _param(bank.down_proj.shape, old_bank.down_proj)
            bank.use_grouped_mm = old_bank.use_grouped_mm
            mlp.experts = bank
            if mlp.shared_experts is not None:
                _shard_mlp(mlp.shared_experts, mlp.shared_experts.intermediate // shard.config.tp)
        else:
            _shard_mlp(mlp, mlp.intermediate // shard.config.tp)
        if distributed:
            mlp.register_forward_hook(hook)
    model.register_forward_hook(_gather_logits_hook(state))
    model.parallel = state
    return state


def _rank_and_group(config: ParallelConfig, group) -> int:
    if not dist.is_available() or not dist.is_initialized():
        raise ValueError(f"tp={config.tp} needs an initialised torch.distributed process group "
                         "(see redraft.model.parallel_launch)")
    world = dist.get_world_size(group)
    if world != config.tp:
        raise ValueError(f"ParallelConfig.tp ({config.tp}) must equal the process group size ({world})")
    return dist.get_rank(group)


@torch.no_grad()
def apply_parallel(model: nn.Module, config: ParallelConfig, group=None) -> nn.Module:
    """Cut a built single-process model in place to this rank's part (every rank of `group` calls it with the
    same full weights) and return it. tp = 1 still installs the (no-op) layout, so code paths are the same."""
    config.check(model.config)
    rank = _rank_and_group(config, group) if config.tp > 1 else 0
    shard = Shard(model.config, config, rank)
    plan = shard_plan(shard)
    full = dict(model.state_dict())  # views of the full parameters, kept alive until copied
    shard_modules(model, shard, group)
    for name, target in model.state_dict(keep_vars=True).items():
        piece = plan.get(name)
        if piece is None:
            raise ValueError(f"parallel layout: tensor {name!r} has no piece for rank {rank}")
        target.copy_(piece.take(full[name]))
    return model


# ---------------------------------------------------------------------------------------------------- memory
_QUANTIZABLE = ("query_key_value.weight", "dense.weight", "gate_proj.weight", "up_proj.weight", "down_proj.weight")
FP8_BLOCK = 128  # an FP8 weight's scales: one float32 per 128 x 128 block (estimate used by `rank_memory`)


def rank_memory(cfg: LLaDA2MoeConfig, config: ParallelConfig, dtype: str = "bfloat16") -> list[dict[str, int]]:
    """Bytes each rank holds, from the config alone (no weights read): {"weights", "kv_per_1k_tokens"} per rank.

    dtype: "float32", "bfloat16", "float16", or "fp8" (an estimate: the linear and expert matrices in 1 byte plus
    float32 scales per 128 x 128 block; embeddings, LM head, norms and router in bfloat16; KV cache in bfloat16)."""
    config.check(cfg)
    sizes = {"float32": 4, "bfloat16": 2, "float16": 2, "fp8": 2}
    if dtype not in sizes:
        raise ValueError(f"dtype must be one of {sorted(sizes)}, got {dtype!r}")
    with torch.device("meta"):
        from .modeling import LLaDA2MoeModelLM

        shapes = {k: list(v.shape) for k, v in LLaDA2MoeModelLM(cfg).state_dict().items()}
    out = []
    for rank in range(config.tp):
        shard = Shard(cfg, config, rank)
        total = 0.0
        for name, piece in shard_plan(shard).items():
            if piece is None:
                continue
            numel = math.prod(piece.shape(shapes[name]))
            if dtype == "fp8" and name.endswith(_QUANTIZABLE) and ".mlp.gate." not in name:
                total += numel * (1 + 4 / FP8_BLOCK ** 2)
            else:
                total += numel * sizes[dtype]
        kv = 2 * cfg.num_hidden_layers * shard.kv_heads * cfg.head_dim * 1024 * sizes[dtype]
        out.append({"weights": int(total), "kv_per_1k_tokens": kv})
    return out
