"""The [x_t ; x_0] objective: mask equivalence with plain block-causal forwards, packing, labels at the same position."""

from __future__ import annotations

import pytest
import torch

from redraft.model import BlockLayout, LLaDA2MoeConfig, dual_stream_mask
from redraft.model.testing import TINY_CONFIG, random_model
from redraft.training.masks import block_index, packed_dual_stream_mask
from redraft.training.noise import NoiseConfig
from redraft.training.objective import DiffusionObjective, TrainBatch, noisy_logits

VOCAB = 64
MASK_ID = 1


@pytest.fixture(scope="module")
def model():
    cfg = LLaDA2MoeConfig(**{**TINY_CONFIG, "vocab_size": VOCAB})
    return random_model(cfg, seed=3, head_std=1.0)


def single_segment(x0: torch.Tensor) -> TrainBatch:
    b, length = x0.shape
    pos = torch.arange(length).expand(b, length)
    return TrainBatch(x0, pos, torch.zeros_like(x0), torch.ones_like(x0, dtype=torch.bool))


def test_packed_mask_with_one_segment_equals_dual_stream_mask():
    length, bl = 12, 4
    pos = torch.arange(length)[None]
    got = packed_dual_stream_mask(pos, torch.zeros_like(pos), bl)[0, 0]
    assert torch.equal(got, dual_stream_mask(length, bl))


def test_noisy_half_equals_block_causal_on_clean_prefix_and_noisy_block(model):
    g = torch.Generator().manual_seed(0)
    length, bl = 12, 4
    x0 = torch.randint(2, VOCAB, (2, length), generator=g)
    x_t = torch.randint(1, VOCAB, (2, length), generator=g)
    full = noisy_logits(model, x_t, single_segment(x0), bl)
    for b in range(length // bl):
        ids = torch.cat([x0[:, :b * bl], x_t[:, b * bl:(b + 1) * bl]], dim=1)
        ref = model(ids, layout=BlockLayout(block_length=bl)).logits[:, b * bl:]
        torch.testing.assert_close(full[:, b * bl:(b + 1) * bl], ref, atol=1e-5, rtol=1e-5)


def test_clean_half_with_x_t_equal_x0_is_plain_block_causal(model):
    length, bl = 12, 4
    x0 = torch.randint(2, VOCAB, (1, length), generator=torch.Generator().manual_seed(1))
    pos = torch.arange(length)[None]
    mask = packed_dual_stream_mask(pos, torch.zeros_like(pos), bl)
    out = model(torch.cat([x0, x0], 1), torch.cat([pos, pos], 1), attn_mask=mask).logits
    ref = model(x0, layout=BlockLayout(block_length=bl)).logits
    torch.testing.assert_close(out[:, length:], ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[:, :length], ref, atol=1e-5, rtol=1e-5)


def test_packed_segments_do_not_see_each_other(model):
    g = torch.Generator().manual_seed(2)
    bl = 4
    a, b = torch.randint(2, VOCAB, (1, 8), generator=g), torch.randint(2, VOCAB, (1, 8), generator=g)
    at, bt = torch.randint(1, VOCAB, (1, 8), generator=g), torch.randint(1, VOCAB, (1, 8), generator=g)
    pos = torch.cat([torch.arange(8), torch.arange(8), torch.arange(4)])[None]
    seg = torch.tensor([[0] * 8 + [1] * 8 + [-1] * 4])
    x0 = torch.cat([a, b, torch.zeros(1, 4, dtype=torch.long)], 1)
    x_t = torch.cat([at, bt, torch.zeros(1, 4, dtype=torch.long)], 1)
    packed = noisy_logits(model, x_t, TrainBatch(x0, pos, seg, seg >= 0), bl)
    alone_a = noisy_logits(model, at, single_segment(a), bl)
    alone_b = noisy_logits(model, bt, single_segment(b), bl)
    torch.testing.assert_close(packed[:, :8], alone_a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed[:, 8:16], alone_b, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(packed).all()


def test_one_block_per_sequence_runs_noisy_stream_alone(model):
    x0 = torch.randint(2, VOCAB, (1, 8), generator=torch.Generator().manual_seed(4))
    x_t = x0.clone()
    x_t[0, 3] = MASK_ID
    got = noisy_logits(model, x_t, single_segment(x0), 8)
    ref = model(x_t).logits  # one bidirectional block
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_block_index_counts_blocks_and_segments():
    pos = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 0]])
    seg = torch.tensor([[0, 0, 0, 0, 0, 1, 1, -1]])
    assert block_index(pos, seg, 2).tolist() == [[0, 0, 1, 1, 2, 3, 3, 4]]


class CleanCopyModel(torch.nn.Module):
    """Two-stream input [x_t ; x_0]: the logits of every position are peaked on the clean token at the same position."""

    def forward(self, input_ids, position_ids=None, layout=None, *, attn_mask=None, cache=None):
        length = input_ids.shape[1] // 2
        clean = input_ids[:, length:]
        logits = torch.full((*input_ids.shape, VOCAB), -30.0)
        logits[:, :length].scatter_(-1, clean[..., None], 30.0)
        return type("Out", (), {"logits": logits})()


def test_loss_labels_are_at_the_same_position():
    """Logit i must be scored against token i: a next-token shift would cost ~60 nats per position here."""
    x0 = torch.randint(2, VOCAB, (2, 16), generator=torch.Generator().manual_seed(5))
    objective = DiffusionObjective(NoiseConfig(mtf_turns=1), MASK_ID, torch.arange(2, VOCAB))
    loss, metrics = objective(CleanCopyModel(), single_segment(x0), 4, torch.Generator().manual_seed(0))
    assert float(metrics["m2t_count"]) > 0
    assert float(loss) < 1e-6
