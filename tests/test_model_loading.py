"""Loading and saving: round trip, shards, dtype, hub ids through huggingface_hub, and clear errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from redraft.model import CheckpointError, load_model, save_model
from redraft.model.loading import resolve_checkpoint


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_official_names_round_trip(parity_dir, tmp_path):
    model = load_model(parity_dir / "model")
    official = load_file(parity_dir / "model" / "model.safetensors")
    state = model.state_dict()
    assert set(state) == set(official), "state dict names differ from the official checkpoint's"
    assert all(torch.equal(state[k], official[k]) for k in official)
    save_model(model, tmp_path / "copy")
    again = load_model(tmp_path / "copy")
    assert _same_weights(model, again)
    saved = load_file(tmp_path / "copy" / "model.safetensors")
    assert all(torch.equal(saved[k], official[k]) for k in official)  # byte-exact tensors
    cfg = json.loads((tmp_path / "copy" / "config.json").read_text())
    assert cfg["model_type"] == "llada2_moe" and cfg["sliding_window"] == 4096  # unknown keys kept


def test_sharded_round_trip(parity_dir, tmp_path):
    model = load_model(parity_dir / "model")
    save_model(model, tmp_path / "sharded", max_shard_bytes=100_000)
    shards = sorted((tmp_path / "sharded").glob("model-*-of-*.safetensors"))
    assert len(shards) > 2
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(model.state_dict())
    assert _same_weights(model, load_model(tmp_path / "sharded"))


def test_dtype_from_config_and_override(parity_dir, tmp_path):
    model = load_model(parity_dir / "model")
    assert next(model.parameters()).dtype == torch.float32
    save_model(model.to(torch.bfloat16), tmp_path / "bf16")
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert next(load_model(tmp_path / "bf16").parameters()).dtype == torch.bfloat16
    assert next(load_model(tmp_path / "bf16", dtype="float32").parameters()).dtype == torch.float32
    with pytest.raises(CheckpointError, match="dtype"):
        load_model(tmp_path / "bf16", dtype="int8")


def test_rotary_frequencies_are_computed(parity_dir):
    model = load_model(parity_dir / "model")
    rot = model.model.rotary_emb
    assert torch.isfinite(rot.inv_freq).all()
    assert torch.allclose(rot.inv_freq, rot.compute_inv_freq())


def test_hub_id_resolves_through_huggingface_hub(parity_dir, tmp_path, monkeypatch):
    """A hub id goes through huggingface_hub; offline, it is served from a local hub cache."""
    snapshot = tmp_path / "hub" / "models--acme--tiny-llada" / "snapshots" / "0123456789abcdef"
    shutil.copytree(parity_dir / "model", snapshot)
    (tmp_path / "hub" / "models--acme--tiny-llada" / "refs").mkdir()
    (tmp_path / "hub" / "models--acme--tiny-llada" / "refs" / "main").write_text("0123456789abcdef")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert resolve_checkpoint("acme/tiny-llada") == snapshot
    assert _same_weights(load_model("acme/tiny-llada"), load_model(parity_dir / "model"))
    with pytest.raises(CheckpointError, match="acme/missing"):
        load_model("acme/missing")


@pytest.fixture
def ckpt(parity_dir, tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(parity_dir / "model", dst)
    return dst


def _rewrite(path, fn):
    tensors = load_file(path / "model.safetensors")
    fn(tensors)
    save_file(tensors, path / "model.safetensors")


def test_missing_tensor_is_named(ckpt):
    _rewrite(ckpt, lambda t: t.pop("model.layers.1.mlp.experts.3.up_proj.weight"))
    with pytest.raises(CheckpointError, match=r"missing tensor.*layers\.1\.mlp\.experts\.3\.up_proj\.weight"):
        load_model(ckpt)


def test_unexpected_tensor_is_named(ckpt):
    _rewrite(ckpt, lambda t: t.__setitem__("model.layers.9.extra.weight", torch.zeros(2)))
    with pytest.raises(CheckpointError, match=r"unexpected tensor 'model\.layers\.9\.extra\.weight'"):
        load_model(ckpt)


def test_wrong_shape_is_named(ckpt):
    _rewrite(ckpt, lambda t: t.__setitem__("lm_head.weight", torch.zeros(10, 64)))
    with pytest.raises(CheckpointError, match=r"'lm_head\.weight' has shape \(10, 64\)"):
        load_model(ckpt)


def test_config_contradicting_weights(ckpt):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["hidden_size"] = 96
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="config.json implies"):
        load_model(ckpt)


def test_invalid_config_field_is_named(ckpt):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["num_key_value_heads"] = 3
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="num_key_value_heads"):
        load_model(ckpt)


def test_truncated_file(ckpt):
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_model(ckpt)
    (ckpt / "model.safetensors").write_bytes(data[:5])
    with pytest.raises(CheckpointError, match="truncated"):
        load_model(ckpt)


def test_missing_files(tmp_path, ckpt):
    with pytest.raises(CheckpointError, match="no such directory"):
        load_model(tmp_path / "nowhere")
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_model(ckpt)
    (ckpt / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_model(ckpt)


def test_not_llada(ckpt):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["model_type"] = "llama"
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="model_type 'llama'"):
        load_model(ckpt)


def test_no_pickle_in_the_package():
    """Checkpoints and states are safetensors/JSON only: no pickle-based loading anywhere in redraft."""
    import pathlib

    import redraft

    root = pathlib.Path(redraft.__file__).parent
    offenders = []
    for f in root.rglob("*.py"):
        text = f.read_text()
        if "import pickle" in text or "torch.load(" in text or "weights_only=False" in text:
            offenders.append(str(f.relative_to(root)))
    assert not offenders, f"pickle-based serialisation in {offenders}"
