"""`redraft convert`: a tiny random Qwen3 / Llama made with `transformers` -> LLaDA2-MoE layout; with a causal mask the
converted model computes the source's logits (fp32, <= 1e-4); the mask token; bad input named."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from redraft.model import load_model  # noqa: E402
from redraft.model.convert import convert_checkpoint  # noqa: E402
from redraft.model.testing import stdlib_texts  # noqa: E402
from redraft.model.tokenizer import EOS_TOKEN, load_tokenizer  # noqa: E402


def ar_tokenizer():
    """A byte-level BPE tokenizer of 300 tokens with an EOS and no mask token (as an AR model's)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=[EOS_TOKEN], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(stdlib_texts(limit=3), trainer=trainer)
    return tok

SHAPE = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             head_dim=16, max_position_embeddings=256, tie_word_embeddings=False, rms_norm_eps=1e-6)


def write_source(path, kind: str, vocab_rows: int | None = None, **over):
    """A random HF causal LM folder with a BPE tokenizer (no mask token) of 300 tokens."""
    tok = ar_tokenizer()
    tok.vocab_size = tok.get_vocab_size(with_added_tokens=True)
    rows = vocab_rows or tok.vocab_size + 4  # padded vocabulary, as checkpoints often have
    torch.manual_seed(0)
    if kind == "qwen3":
        model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(vocab_size=rows, **{**SHAPE, **over}))
    else:
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(vocab_size=rows, **{**SHAPE, **over}))
    with torch.no_grad():  # spread the weights a little so the logits are not all near zero
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    model.save_pretrained(path)
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"eos_token": EOS_TOKEN, "tokenizer_class": "X"}))
    return model.eval(), tok


@pytest.mark.parametrize("kind", ["qwen3", "llama"])
def test_converted_model_with_causal_mask_matches_source_logits(kind, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    source, tok = write_source(src, kind)
    convert_checkpoint(src, dst)
    model = load_model(dst, dtype=torch.float32)
    cfg = json.loads((dst / "config.json").read_text())
    assert cfg["model_type"] == "llada2_moe" and cfg["use_qk_norm"] == (kind == "qwen3")
    assert cfg["partial_rotary_factor"] == 1.0 and cfg["first_k_dense_replace"] == cfg["num_hidden_layers"]
    ids = torch.randint(0, tok.vocab_size, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = source(ids).logits.float()
        causal = torch.ones(40, 40, dtype=torch.bool).tril()
        got = model(ids, attn_mask=causal).logits
    assert want.abs().max() > 0.1
    n = tok.vocab_size  # the token rows; the unused padding rows from the mask on are re-initialised (mean row)
    assert (got[..., :n] - want[..., :n]).abs().max() <= 1e-4
    # the mask token: a new special id (here the first padding row, no resize), initialised to the mean row
    converted = load_tokenizer(dst)
    assert converted.mask_id == tok.vocab_size and converted.token_to_id("<|mask|>") == tok.vocab_size
    assert model.config.vocab_size == source.config.vocab_size
    emb = model.model.word_embeddings.weight
    assert torch.allclose(emb[converted.mask_id], emb[:converted.mask_id].mean(0), atol=1e-6)
    assert converted.apply_chat_template([{"role": "user", "content": "hi"}])


def test_mask_token_grows_the_embedding_when_there_is_no_room(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    source, tok = write_source(src, "llama", vocab_rows=None)
    cfg = json.loads((src / "config.json").read_text())
    # shrink the source to exactly the tokenizer: no padding row left
    from safetensors.torch import load_file, save_file

    state = load_file(str(src / "model.safetensors"))
    n = tok.vocab_size
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        state[key] = state[key][:n].contiguous()
    save_file(state, str(src / "model.safetensors"), metadata={"format": "pt"})
    (src / "config.json").write_text(json.dumps({**cfg, "vocab_size": n}))
    with pytest.raises(ValueError, match="no room"):
        convert_checkpoint(src, dst, allow_resize=False)
    convert_checkpoint(src, dst)
    model = load_model(dst, dtype=torch.float32)
    assert model.config.vocab_size == n + 1 and load_tokenizer(dst).mask_id == n
    ids = torch.randint(0, n, (1, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        source.model.embed_tokens.weight.data = state["model.embed_tokens.weight"]
        source.lm_head.weight.data = state["lm_head.weight"]
        want = source(ids).logits
        got = model(ids, attn_mask=torch.ones(16, 16, dtype=torch.bool).tril()).logits
    assert (got[..., :n] - want).abs().max() <= 1e-4


def test_bad_sources_are_named(tmp_path):
    src = tmp_path / "src"
    write_source(src, "llama")
    cfg = json.loads((src / "config.json").read_text())
    for change, match in (({"model_type": "gpt2"}, "unsupported architecture"),
                          ({"tie_word_embeddings": True}, "tied embeddings"),
                          ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rotary scaling"),
                          ({"hidden_act": "gelu"}, "hidden_act")):
        (src / "config.json").write_text(json.dumps({**cfg, **change}))
        with pytest.raises(ValueError, match=match):
            convert_checkpoint(src, tmp_path / "out")
    (src / "config.json").write_text(json.dumps(cfg))
    # a tokenizer where <|mask|> is ordinary text
    tok = json.loads((src / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    vocab["<|mask|>"] = max(vocab.values()) + 1
    (src / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(ValueError, match="ordinary token"):
        convert_checkpoint(src, tmp_path / "out")


def test_shipped_convert_recipe_loads():
    from pathlib import Path

    from redraft.training.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "convert-qwen3.yaml")
    lengths = [cfg.block_length_at(s) for s in (0, 250, 450, 650, 900, 7500, 9000)]
    assert lengths == [1, 4, 32, 64, 512, 64, 32]  # warm-up to the full row, then back down


def test_cli_convert(tmp_path, capsys):
    from redraft.cli import main

    write_source(tmp_path / "src", "qwen3")
    assert main(["convert", str(tmp_path / "src"), str(tmp_path / "dst")]) == 0
    assert json.loads(capsys.readouterr().out)["from"] == "qwen3"
    assert main(["convert", str(tmp_path / "nope"), str(tmp_path / "x")]) == 2  # error named, exit 2
