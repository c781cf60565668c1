"""AR -> block diffusion: map a Hugging Face causal LM checkpoint onto the LLaDA2-MoE layout (`redraft convert`).

Supported sources (config.json `model_type`):
- `bailing_moe_v2` / `bailing_moe` (Ling): the architecture LLaDA2.0 was converted from; the parameter names and
  config fields are already LLaDA2-MoE's, so only `model_type` / `architectures` change.
- `qwen3`: dense. q/k RMSNorm per head (`q_norm` / `k_norm` -> `query_layernorm` / `key_layernorm`), rotary on the
  whole head (`partial_rotary_factor: 1.0`), every layer dense (`first_k_dense_replace = num_hidden_layers`).
- `llama` (and `mistral` without a sliding window): dense, no q/k norm (`use_qk_norm: false`).

Names: `embed_tokens` -> `word_embeddings`, `self_attn.{q,k,v}_proj` -> `attention.query_key_value` (rows q, k, v),
`self_attn.o_proj` -> `attention.dense`; norms, `mlp.{gate,up,down}_proj`, `model.norm` and `lm_head` keep theirs.
The converted model with a causal mask computes exactly the source's logits (`tests/test_convert.py`, fp32 <= 1e-4).

The `<|mask|>` token is added to the tokenizer as a special token. Its id is the tokenizer's next id; if the
embedding already has a padding row there (checkpoints often pad the vocabulary), that row is used, otherwise the
embedding and the LM head grow by the needed rows. The mask row (and any padding row between) is initialised to the
**mean of the existing rows** in both the embedding and the head: the input is an "average token" with the usual norm,
and the head gives the mask the mean logit (decoding never commits it; `forbid_mask_token` masks it out entirely).

Refused, with the reason named: another architecture; rotary scaling (`rope_scaling` / a non-default `rope_type`);
sliding-window attention; MLP biases or a non-SiLU activation; tied embeddings (LLaDA2-MoE has a separate head; untie
the checkpoint first); a tokenizer larger than the embedding; a tokenizer where `<|mask|>` is an ordinary (non-special)
token; `allow_resize=False` with no padding row for the mask.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .config import LLaDA2MoeConfig
from .tokenizer import DEFAULT_CHAT_TEMPLATE, MASK_TOKEN

DENSE = ("qwen3", "llama", "mistral")
BAILING = ("bailing_moe_v2", "bailing_moe")
SUPPORTED = BAILING + DENSE


def _rope_theta(hf: dict[str, Any]) -> float:
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling")
    rope_type = params.get("rope_type", "default") if isinstance(params, dict) else "default"
    if scaling or rope_type not in ("default", None):
        raise ValueError(f"convert: rotary scaling ({scaling or rope_type!r}) is not supported; the LLaDA2-MoE "
                         "rotary embedding is the plain one")
    theta = params.get("rope_theta") if isinstance(params, dict) else None
    return float(theta if theta is not None else hf.get("rope_theta", 10000.0))


def convert_config(hf: dict[str, Any]) -> LLaDA2MoeConfig:
    """The LLaDA2-MoE config of a source config.json (ValueError naming what is unsupported)."""
    kind = hf.get("model_type")
    if kind in BAILING:
        data = {k: v for k, v in hf.items() if k not in ("auto_map", "architectures")}
        data["model_type"] = "llada2_moe"
        return LLaDA2MoeConfig.from_dict(data)
    if kind not in DENSE:
        raise ValueError(f"convert: unsupported architecture model_type={kind!r}; supported: {list(SUPPORTED)}")
    if hf.get("tie_word_embeddings", kind != "qwen3"):
        raise ValueError("convert: tied embeddings (tie_word_embeddings: true) are not supported: LLaDA2-MoE has a "
                         "separate LM head; untie the checkpoint (copy the embedding into lm_head) first")
    if hf.get("use_sliding_window") or (kind == "mistral" and hf.get("sliding_window")):
        raise ValueError("convert: sliding-window attention is not supported")
    if hf.get("mlp_bias"):
        raise ValueError("convert: MLP biases (mlp_bias: true) are not supported")
    act = hf.get("hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"convert: hidden_act {act!r} is not supported (only 'silu')")
    heads = int(hf["num_attention_heads"])
    layers = int(hf["num_hidden_layers"])
    bias = bool(hf.get("attention_bias", False))
    return LLaDA2MoeConfig(
        vocab_size=int(hf["vocab_size"]), hidden_size=int(hf["hidden_size"]),
        intermediate_size=int(hf["intermediate_size"]), num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=int(hf.get("num_key_value_heads") or heads),
        head_dim=hf.get("head_dim") or int(hf["hidden_size"]) // heads, partial_rotary_factor=1.0,
        rope_theta=_rope_theta(hf), rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        max_position_embeddings=int(hf.get("max_position_embeddings", 4096)), first_k_dense_replace=layers,
        num_experts=0, num_shared_experts=0, use_qk_norm=kind == "qwen3", use_qkv_bias=bias, use_bias=bias,
        tie_word_embeddings=False, pad_token_id=hf.get("pad_token_id"),
        torch_dtype=str(hf.get("torch_dtype") or hf.get("dtype") or "float32"),
        extra={"converted_from": kind})


def convert_state(hf_state: dict[str, Tensor], kind: str) -> dict[str, Tensor]:
    """Source tensors -> official LLaDA2-MoE names (ValueError naming a tensor it does not know)."""
    if kind in BAILING:
        return dict(hf_state)
    out: dict[str, Tensor] = {}
    qkv: dict[str, dict[str, Tensor]] = {}
    for name, t in hf_state.items():
        if name.startswith("model.embed_tokens."):
            out[name.replace("embed_tokens", "word_embeddings")] = t
        elif name in ("model.norm.weight", "lm_head.weight"):
            out[name] = t
        elif name.startswith("model.layers."):
            _, _, idx, rest = name.split(".", 3)
            prefix = f"model.layers.{idx}."
            if rest.startswith("self_attn.") and rest.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
                proj, suffix = rest.split(".")[1], rest.split(".", 2)[2]
                qkv.setdefault(f"{prefix}attention.query_key_value.{suffix}", {})[proj] = t
            elif rest.startswith("self_attn.o_proj."):
                out[prefix + "attention.dense." + rest.split(".", 2)[2]] = t
            elif rest.startswith(("self_attn.q_norm.", "self_attn.k_norm.")):
                which = "query_layernorm" if ".q_norm." in rest else "key_layernorm"
                out[prefix + f"attention.{which}." + rest.split(".", 2)[2]] = t
            elif rest.startswith(("input_layernorm.", "post_attention_layernorm.", "mlp.gate_proj.", "mlp.up_proj.",
                                  "mlp.down_proj.")):
                out[name] = t
            elif rest.endswith("rotary_emb.inv_freq"):
                continue
            else:
                raise ValueError(f"convert: unexpected tensor {name!r} for model_type {kind!r}")
        elif name.endswith("rotary_emb.inv_freq"):
            continue
        else:
            raise ValueError(f"convert: unexpected tensor {name!r} for model_type {kind!r}")
    for name, parts in qkv.items():
        if set(parts) != {"q_proj", "k_proj", "v_proj"}:
            raise ValueError(f"convert: {name}: missing {sorted({'q_proj', 'k_proj', 'v_proj'} - set(parts))}")
        out[name] = torch.cat([parts["q_proj"], parts["k_proj"], parts["v_proj"]])
    return out


def _read_state(root: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    index = root / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (root / "model.safetensors").exists():
        files = ["model.safetensors"]
    else:
        raise ValueError(f"convert: {root}: no model.safetensors or model.safetensors.index.json (convert "
                         "PyTorch .bin checkpoints to safetensors first)")
    state: dict[str, Tensor] = {}
    for f in files:
        state.update(load_file(str(root / f)))
    return state


def add_mask_token(src: Path, vocab_rows: int, allow_resize: bool = True):
    """(tokenizer with `<|mask|>`, mask id, rows the embedding needs, whether the token was added). ValueError for
    a tokenizer larger than the embedding, a non-special `<|mask|>`, or no room when resizing is not allowed."""
    from tokenizers import AddedToken
    from tokenizers import Tokenizer as HFTokenizer

    from .tokenizer import Tokenizer

    tok_file = src / "tokenizer.json"
    if not tok_file.exists():
        raise ValueError(f"convert: {src}: no tokenizer.json (a fast tokenizer is needed)")
    hf = HFTokenizer.from_file(str(tok_file))
    config_file = src / "tokenizer_config.json"
    config = json.loads(config_file.read_text()) if config_file.exists() else {}
    size = hf.get_vocab_size(with_added_tokens=True)
    if size > vocab_rows:
        raise ValueError(f"convert: the tokenizer has {size} tokens but the embedding only {vocab_rows} rows")
    existing = hf.token_to_id(MASK_TOKEN)
    if existing is not None:
        special = hf.get_added_tokens_decoder().get(existing)
        if special is None or not special.special:
            raise ValueError(f"convert: the tokenizer already has {MASK_TOKEN!r} as an ordinary token (id "
                             f"{existing}); it would collide with the mask token")
        mask_id, added = existing, False
    else:
        added = True
        hf.add_special_tokens([AddedToken(MASK_TOKEN, special=True, normalized=False)])
        mask_id = hf.token_to_id(MASK_TOKEN)
    rows = max(vocab_rows, mask_id + 1)
    if rows > vocab_rows and not allow_resize:
        raise ValueError(f"convert: no room for {MASK_TOKEN!r}: the tokenizer fills all {vocab_rows} embedding "
                         "rows and resizing is off")
    config = {k: v for k, v in config.items() if k not in ("added_tokens_decoder", "tokenizer_class", "auto_map")}
    config["mask_token"] = MASK_TOKEN
    config.setdefault("chat_template", DEFAULT_CHAT_TEMPLATE)
    eos = config.get("eos_token")
    if eos is None:
        raise ValueError(f"convert: {src}/tokenizer_config.json names no eos_token")
    return Tokenizer(hf, config), mask_id, rows, added


def _grow(weight: Tensor, rows: int, fill_from: int) -> Tensor:
    """`weight` resized to `rows` rows, rows [fill_from, rows) set to the mean of rows [0, fill_from)."""
    out = torch.empty(rows, weight.shape[1], dtype=weight.dtype)
    n = min(weight.shape[0], rows)
    out[:n] = weight[:n]
    out[fill_from:] = weight[:fill_from].float().mean(0).to(weight.dtype)
    return out


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, allow_resize: bool = True) -> Path:
    """`redraft convert SRC DST`: a causal LM folder (config.json, safetensors, tokenizer.json) -> an LLaDA2-MoE
    checkpoint (config.json, model.safetensors, tokenizer with `<|mask|>` and a chat template)."""
    from .loading import save_model
    from .modeling import LLaDA2MoeModelLM

    root = Path(src)
    if not (root / "config.json").is_file():
        raise ValueError(f"convert: {root}: no config.json")
    hf = json.loads((root / "config.json").read_text())
    cfg = convert_config(hf)
    state = convert_state(_read_state(root), hf.get("model_type"))
    tokenizer, mask_id, rows, added = add_mask_token(root, cfg.vocab_size, allow_resize)
    if "lm_head.weight" not in state:
        raise ValueError("convert: the checkpoint has no lm_head.weight (tied embeddings are not supported)")
    if added:  # the mask row (and the unused padding rows after it) start at the mean of the token rows
        for key in ("model.word_embeddings.weight", "lm_head.weight"):
            state[key] = _grow(state[key], rows, mask_id)
    cfg.vocab_size = rows
    with torch.device("meta"):
        model = LLaDA2MoeModelLM(cfg)
    model = model.to_empty(device="cpu").to(cfg.dtype)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("inv_freq")]
    if missing or unexpected:
        raise ValueError(f"convert: tensors do not fit the converted config: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}")
    model.reset_non_persistent_buffers()
    return save_model(model, dst, tokenizer=tokenizer)
