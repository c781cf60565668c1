"""The [x_t ; x_0] objective: mask equivalence with plain block-causal forwards, packing, labels at the same position."""

from __future__ import annotations

import pytest
import torch

from redraft.model import BlockLayout, LLaDA2MoeConfig, dual_stream_mask
from redraft.model.testing import TINY_CONFIG, random_model
from redraft.training.masks import block_index, packed_dual_stream_mask, packed_two_stream_mask
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

    def forward(self, input_ids, position_ids=None, layout=None, *, attn_mask=None, cache=None, logits_index=None):
        length = input_ids.shape[1] // 2
        clean = input_ids[:, length:]
        logits = torch.full((*input_ids.shape, VOCAB), -30.0)
        logits[:, :length].scatter_(-1, clean[..., None], 30.0)
        return type("Out", (), {"logits": _select(logits, logits_index)})()


def _select(logits, logits_index):
    """The model's `logits_index` contract: logits at those window positions only ([B, E, V])."""
    if logits_index is None:
        return logits
    return logits.gather(1, logits_index[:, :, None].expand(-1, -1, logits.shape[-1]))


def test_loss_labels_are_at_the_same_position():
    """Logit i must be scored against token i: a next-token shift would cost ~60 nats per position here."""
    x0 = torch.randint(2, VOCAB, (2, 16), generator=torch.Generator().manual_seed(5))
    objective = DiffusionObjective(NoiseConfig(mtf_turns=1), MASK_ID, torch.arange(2, VOCAB))
    loss, metrics = objective(CleanCopyModel(), single_segment(x0), 4, torch.Generator().manual_seed(0))
    assert float(metrics["m2t_count"]) > 0
    assert float(loss) < 1e-6


class DraftingModel(torch.nn.Module):
    """Predicts a fixed token per position, DRAFT(pos) = 2 + (7 * pos + 3) % (VOCAB - 2) (never x_0 below, never the
    mask), whatever the input; records each forward's noisy half and whether gradients were on."""

    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(VOCAB))
        self.calls: list[tuple[torch.Tensor, bool]] = []

    @staticmethod
    def draft(pos: torch.Tensor) -> torch.Tensor:
        return 2 + (7 * pos + 3) % (VOCAB - 2)

    def forward(self, ids, pos, attn_mask=None, logits_index=None):
        self.calls.append((ids[:, :ids.shape[1] // 2].clone(), torch.is_grad_enabled()))
        logits = 8.0 * torch.nn.functional.one_hot(self.draft(pos), VOCAB).float() + self.bias
        return type("Out", (), {"logits": _select(logits, logits_index)})()


@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_mtf_trains_on_the_models_own_drafts_against_clean_tokens(fraction):
    """MTF (mtf_turns=2): turn 1 runs without gradient on x_t; the trained forward (turn 2) sees the model's own
    argmax at the drafted positions (masked ones, all or a random fraction), the mask token at the rest, the clean
    token elsewhere; the loss is cross-entropy against x_0 (not against the drafts) on masked + drafted positions."""
    length, bl = 16, 4
    pos = torch.arange(length).expand(3, length)
    x0 = torch.full((3, length), VOCAB - 1)  # DRAFT(pos) never equals VOCAB - 1 at these positions
    assert not (DraftingModel.draft(pos) == x0).any()
    batch = TrainBatch(x0, pos, torch.zeros_like(x0), torch.ones_like(x0, dtype=torch.bool))
    cfg = NoiseConfig(mask_ratio_min=0.5, mask_ratio_max=0.9, t2t_ratio=0.0, keep_weight=0.1,
                      mtf_turns=2, mtf_ratio=1.0, mtf_select="random", mtf_fraction=fraction)
    objective = DiffusionObjective(cfg, MASK_ID, torch.arange(2, VOCAB))
    model = DraftingModel()
    loss, metrics = objective(model, batch, bl, torch.Generator().manual_seed(0))

    (first, first_grad), (trained, trained_grad) = model.calls
    assert not first_grad and trained_grad  # the draft turn has no gradient, the trained turn has
    masked0 = first == MASK_ID  # what turn 1 saw masked
    assert masked0.any() and torch.equal(first[~masked0], x0[~masked0])
    drafted = trained != first
    assert drafted.any() and torch.equal(drafted, masked0 & (trained != MASK_ID))
    assert torch.equal(trained[drafted], DraftingModel.draft(pos)[drafted])  # the model's own drafts
    assert torch.equal(trained[~masked0], x0[~masked0])
    if fraction == 1.0:
        assert torch.equal(drafted, masked0)
    else:
        assert (masked0 & ~drafted).any()  # some positions stay masked for M2T
    assert float(metrics["draft_count"]) == float(drafted.sum())
    assert float(metrics["m2t_count"]) == float((masked0 & ~drafted).sum())

    # the loss: CE of the trained forward's logits against x_0, weight 1 on masked + drafted, keep_weight elsewhere
    logits = 8.0 * torch.nn.functional.one_hot(DraftingModel.draft(pos), VOCAB).float()
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), x0.reshape(-1), reduction="none").view(3, -1)
    w = masked0.float() + 0.1 * (~masked0).float()
    assert float(loss.detach()) == pytest.approx(float((ce * w).sum() / w.sum()), rel=1e-5)
    # scored against the drafts instead, the drafted positions would cost ~0 nats, not ~8
    labels = torch.where(drafted, trained, x0)
    ce_vs_drafts = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1),
                                                     reduction="none").view(3, -1)
    assert float(ce[drafted].min()) > 7.5 and float(ce_vs_drafts[drafted].max()) < 0.1
    assert float(loss.detach()) > float((ce_vs_drafts * w).sum() / w.sum()) + 1.0
    loss.backward()
    assert model.bias.grad is not None and model.bias.grad[VOCAB - 1] < 0  # pushes toward the clean token


@pytest.mark.parametrize("ratio", [0.5, 1e-9])
def test_mtf_draft_forward_runs_on_the_mtf_rows_only(ratio):
    """With mtf_ratio < 1 the draft turn runs on the rows drawn for MTF only (with none drawn, on one row, so that
    every process of a sharded run takes part); drafts land in those rows alone, and the other rows reach the
    trained forward exactly as noised."""
    rows, length, bl = 8, 16, 4
    pos = torch.arange(length).expand(rows, length)
    x0 = torch.full((rows, length), VOCAB - 1)
    batch = TrainBatch(x0, pos, torch.zeros_like(x0), torch.ones_like(x0, dtype=torch.bool))
    cfg = NoiseConfig(mask_ratio_min=0.5, mask_ratio_max=0.9, t2t_ratio=0.0, mtf_turns=2, mtf_ratio=ratio,
                      mtf_select="random", mtf_fraction=1.0)
    objective = DiffusionObjective(cfg, MASK_ID, torch.arange(2, VOCAB))
    model = DraftingModel()
    objective(model, batch, bl, torch.Generator().manual_seed(1))
    (first, _), (trained, _) = model.calls
    mtf_rows = (trained != MASK_ID) & (trained != x0)  # drafted positions
    drafted_rows = mtf_rows.any(1)
    if ratio == 0.5:
        assert 0 < len(first) < rows and int(drafted_rows.sum()) == len(first)
        # the draft forward saw exactly the drafted rows, as they were noised
        assert torch.equal(first, torch.where(mtf_rows, MASK_ID, trained)[drafted_rows])
    else:
        assert len(first) == 1 and not drafted_rows.any()
    # rows without MTF: mask or clean token only, as noised
    others = trained[~drafted_rows]
    assert ((others == MASK_ID) | (others == x0[~drafted_rows])).all()


def reference_dual_stream_mask(pos: torch.Tensor, seg: torch.Tensor, bl: int) -> torch.Tensor:
    """The [x_t ; x_0] rule written out position by position (the definition in `packed_dual_stream_mask`)."""
    b, length = pos.shape
    out = torch.zeros(b, 1, 2 * length, 2 * length, dtype=torch.bool)
    for r in range(b):
        for i in range(2 * length):
            for j in range(2 * length):
                qi, kj = i % length, j % length
                same = bool(seg[r, qi] == seg[r, kj]) and int(seg[r, qi]) >= 0
                qb, kb = int(pos[r, qi]) // bl, int(pos[r, kj]) // bl
                noisy_q, noisy_k = i < length, j < length
                if noisy_q:
                    ok = same and (kb == qb if noisy_k else kb < qb)
                else:
                    ok = same and not noisy_k and kb <= qb
                out[r, 0, i, j] = ok or i == j
    return out


@pytest.mark.parametrize("block_length", [1, 3, 4, 16])
def test_two_stream_mask_is_the_dual_stream_mask_in_two_parts(block_length):
    pos = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 0, 1], list(range(10))])
    seg = torch.tensor([[0, 0, 0, 0, 0, 1, 1, 1, -1, -1], [0] * 10])  # two segments and padding; one segment
    split = packed_two_stream_mask(pos, seg, block_length)
    assert split.noisy.shape == (2, 1, 10, 20) and split.clean.shape == (2, 1, 10, 10)
    want = reference_dual_stream_mask(pos, seg, block_length)
    assert torch.equal(split.full(), want) and torch.equal(packed_dual_stream_mask(pos, seg, block_length), want)
    assert not want[:, :, 10:, :10].any()  # what the split skips: clean queries over noisy keys


def test_two_stream_mask_refuses_a_window_it_does_not_cover(model):
    split = packed_two_stream_mask(torch.arange(6)[None], torch.zeros(1, 6, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="TwoStreamMask"):
        model(torch.zeros(1, 10, dtype=torch.long), attn_mask=split)


def test_two_stream_attention_equals_the_full_mask(model):
    """Attention over the live parts only (clean queries skip the noisy keys) gives the logits and gradients of the
    full [2L, 2L] mask (the skipped scores are exact zeros after the softmax; float rounding may differ)."""
    g = torch.Generator().manual_seed(7)
    pos = torch.tensor([[0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5], list(range(12))])
    seg = torch.tensor([[0] * 6 + [1] * 6, [0] * 12])
    ids = torch.randint(2, VOCAB, (2, 24), generator=g)
    pos2 = torch.cat([pos, pos], 1)
    split = packed_two_stream_mask(pos, seg, 4)
    outs = []
    for mask in (split, split.full()):
        model.zero_grad()
        logits = model(ids, pos2, attn_mask=mask).logits
        logits.square().mean().backward()
        outs.append((logits.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (a, ga), (b, gb) = outs
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)
    assert len(ga) == len(gb) and all(torch.allclose(x, y, rtol=1e-4, atol=1e-6) for x, y in zip(ga, gb))
    model.zero_grad()
