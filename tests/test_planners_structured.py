"""CFSP and PATCH math: budget allocation, scores, masks, tile gates and the refinement loop, on hand examples."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparc.errors import SparcError
from sparc.ir import TileFormat
from sparc.planners import cfsp, patch
from sparc.planners.masks import mask_2of4, mask_unstructured_rows


# CFSP

def test_coarse_importance_is_zero_for_identical_and_tokens_for_opposite_states():
    h = torch.randn(7, 16)
    assert cfsp.coarse_importance(h, h.clone()) == pytest.approx(0.0, abs=1e-6)
    assert cfsp.coarse_importance(h, -h) == pytest.approx(7.0)
    accumulated = cfsp.CoarseImportance()
    accumulated.add(h.reshape(1, 7, 16), -h.reshape(1, 7, 16))
    accumulated.add(h[:3], h[:3])
    assert accumulated.value == pytest.approx(7.0) and accumulated.tokens == 10


def test_shrink_rule_on_a_hand_example():
    p, importances = 0.5, [0.0, 0.0, 40000.0]
    s = [1 / (1 + math.exp(-z)) for z in (-4 / 3, -4 / 3, 8 / 3)]  # z = (I - mean I) / 1e4 at 131072 tokens
    mean, top = sum(s) / 3, max(s)
    assert top / mean * (1 - p) >= 1
    f = mean * (1 / (1 - p) - 1) / (top - mean) / 1.05
    assert cfsp.shrink_factor(torch.tensor(s, dtype=torch.float64), p) == pytest.approx(f)
    shrunk = [mean + (x - mean) * f for x in s]
    expected = [x / (sum(shrunk) / 3) * (1 - p) for x in shrunk]
    keep = cfsp.keep_ratios(importances, p, tokens=131072)
    assert keep.tolist() == pytest.approx(expected)
    assert keep.max() < 1 and keep.mean().item() == pytest.approx(1 - p)


def test_token_count_rescales_the_importances():
    per_token = [0.1, 0.3, 0.2, 0.6]
    small = cfsp.keep_ratios([x * 1000 for x in per_token], 0.3, tokens=1000)
    paper = cfsp.keep_ratios([x * 131072 for x in per_token], 0.3, tokens=131072)
    assert torch.allclose(small, paper)
    assert small.argmax() == 3 and small.argmin() == 0  # blocks that change their input more keep more


@pytest.mark.parametrize("p", [0.0, 0.2, 0.35, 0.5, 0.8])
def test_budget_removes_the_target_in_tile_multiples(p):
    importances = [3000.0, 9000.0, 500.0, 20000.0, 7000.0, 12000.0]
    channels, tile = 1024, 128
    kept = cfsp.allocate_budget(importances, p, tokens=131072, channels=channels, tile=tile)
    assert all(k % tile == 0 and tile <= k <= channels for k in kept)
    assert channels * len(kept) - sum(kept) == round(p * channels * len(kept) / tile) * tile


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 5e5), min_size=1, max_size=12), st.floats(0, 0.95), st.integers(1, 16),
       st.sampled_from([64, 128]), st.integers(1000, 300000))
def test_budget_property(importances, p, tiles_per_block, tile, tokens):
    channels = tiles_per_block * tile
    kept = cfsp.allocate_budget(importances, p, tokens=tokens, channels=channels, tile=tile)
    target = channels * len(kept) - round(p * channels * len(kept) / tile) * tile
    assert all(k % tile == 0 and tile <= k <= channels for k in kept)
    assert sum(kept) == target or all(k == tile for k in kept)


def test_budget_never_exceeds_the_block_or_drops_below_a_tile():
    kept = cfsp.allocate_budget([0.0, 0.0, 1e6], 0.9, tokens=131072, channels=256, tile=128)
    assert all(128 <= k <= 256 for k in kept)


def test_fine_scores_match_a_hand_computation_on_two_channels():
    w_up = torch.tensor([[1.0, 3.0], [2.0, -2.0]])  # (C, D)
    w_gate = torch.tensor([[0.5, 0.5], [-1.0, 3.0]])
    w_down = torch.tensor([[4.0, 1.0], [-4.0, 3.0]])  # (D, C)
    x = torch.tensor([2.0, 0.5])
    scores = cfsp.fine_scores(w_up, w_gate, w_down, x)
    hand = []
    for j in range(2):
        a = [abs(w_down[i, j].item()) * x[j].item() for i in range(2)]
        up = [abs(w_up[j, i].item()) for i in range(2)]
        gate = [abs(w_gate[j, i].item()) for i in range(2)]
        terms = [a[i] / sum(a) + up[i] / sum(up) + gate[i] / sum(gate) for i in range(2)]
        hand.append(sum(terms) / 2 * x[j].item())
    assert scores.tolist() == pytest.approx(hand)


def test_fine_scores_reduce_to_activation_norms():
    c, d = 12, 8
    x = torch.rand(c) + 0.1
    scores = cfsp.fine_scores(torch.randn(c, d), torch.randn(c, d), torch.randn(d, c), x)
    assert torch.allclose(scores, 3 / d * x.double())
    assert torch.equal(torch.argsort(scores), torch.argsort(x))


def test_wanda_sp_scores_are_standardised_and_global_counts_hit_the_target():
    torch.manual_seed(0)
    blocks = [cfsp.wanda_sp_scores(torch.randn(16, 512) * (i + 1), torch.rand(512)) for i in range(3)]
    assert all(abs(s.mean().item()) < 1e-9 and s.std().item() == pytest.approx(1.0) for s in blocks)
    blocks[1] = blocks[1] + 1.0  # block 1 scores higher after standardisation: it keeps more
    kept = cfsp.global_keep_counts(blocks, 0.4, tile=64)
    assert all(k % 64 == 0 for k in kept) and 3 * 512 - sum(kept) == round(0.4 * 3 * 512 / 64) * 64
    assert kept[1] == max(kept)


def test_magnitude_sp_scores_sum_channel_norms():
    w_up, w_gate, w_down = torch.randn(6, 4), torch.randn(6, 4), torch.randn(4, 6)
    expected = w_up.norm(dim=1) + w_gate.norm(dim=1) + w_down.norm(dim=0)
    assert torch.allclose(cfsp.magnitude_sp_scores(w_up, w_gate, w_down), expected.double())


def test_layer_plans_zero_the_removed_channels_and_tiles():
    keep = torch.ones(8, dtype=torch.bool)
    keep[4:] = False  # channels 4..7 fill the second tile of 4
    keep[1] = False
    names = {"gate": "mlp.gate.weight", "up": "mlp.up.weight", "down": "mlp.down.weight"}
    plans = cfsp.cfsp_layer_plans(keep, hidden=6, tile=4, names=names, method="wanda-sp")
    gate, down = plans["mlp.gate.weight"], plans["mlp.down.weight"]
    assert gate.shape == (8, 6) and down.shape == (6, 8)
    assert torch.equal(gate.mask, keep[:, None].expand(8, 6)) and torch.equal(down.mask, keep[None, :].expand(6, 8))
    assert gate.formats.tolist() == [[TileFormat.DENSE] * 2, [TileFormat.ZERO] * 2]
    assert down.formats.tolist() == [[TileFormat.DENSE, TileFormat.ZERO]] * 2
    assert gate.provenance == {"method": "wanda-sp", "channels_kept": 3}
    assert cfsp.top_channels(torch.tensor([1.0, 3.0, 3.0, 0.0]), 2).tolist() == [False, True, True, False]


# PATCH

@pytest.mark.parametrize(("sparsity", "dense"), [(0.45, 10), (0.35, 30), (0.25, 50), (0.5, 0), (0.0, 100)])
def test_dense_tile_count_rule(sparsity, dense):
    assert patch.n_dense_tiles(100, sparsity) == dense


@pytest.mark.parametrize("sparsity", [-0.1, 0.55])
def test_sparsity_outside_half_is_refused(sparsity):
    with pytest.raises(SparcError, match="sparsity"):
        patch.n_dense_tiles(100, sparsity)


def test_tile_scores_on_a_hand_mask():
    mask = torch.zeros(5, 6, dtype=torch.bool)
    mask[0:4, 0:4] = True  # the full top-left tile
    mask[0, 4] = True  # one of the 8 elements of the top-right edge tile (4 x 2)
    mask[4, :] = True  # the bottom row: edge tiles of 1 x 4 and 1 x 2
    expected = torch.tensor([[1.0, 1 / 8], [1.0, 1.0]], dtype=torch.float64)
    assert torch.equal(patch.tile_scores(mask, 4), expected)


def _prior(weight, sparsity, tile):
    scores = weight.abs()
    return patch.prior_layer_plan(weight, mask_2of4(scores), mask_unstructured_rows(scores, sparsity), sparsity, tile)


@pytest.mark.parametrize("sparsity", [0.45, 0.35, 0.25])
def test_prior_plan_density_is_the_target_within_rounding(sparsity):
    torch.manual_seed(0)
    plan = _prior(torch.randn(80, 160), sparsity, tile=16)  # 5 x 10 tiles
    dense = patch.n_dense_tiles(50, sparsity)
    assert int((plan.formats == TileFormat.DENSE).sum()) == dense == plan.provenance["dense_tiles"]
    assert plan.format_set <= {TileFormat.DENSE, TileFormat.NV24}
    assert 1 - plan.sparsity == pytest.approx(0.5 + dense / 100)  # dense tiles keep all, 2:4 tiles half
    assert abs(plan.sparsity - sparsity) <= 0.5 / 50 + 1e-9


def test_prior_picks_the_tiles_that_keep_most_and_breaks_ties_in_order():
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[4:, :4] = True  # tile (1, 0) keeps all
    weight = torch.ones(8, 8)
    plan = patch.prior_layer_plan(weight, mask_2of4(weight), mask, 0.25, tile=4)  # 2 dense of 4
    assert plan.formats.tolist() == [[TileFormat.DENSE, TileFormat.NV24], [TileFormat.DENSE, TileFormat.NV24]]


def test_sparsegpt_prior_protects_its_dense_tiles_and_updates_the_weights():
    torch.manual_seed(0)
    weight, x = torch.randn(32, 64), torch.randn(256, 64) @ (torch.eye(64) + 0.3 * torch.randn(64, 64))
    stats = SimpleNamespace(hessian=(x.T @ x).double(), tokens=256, norms=x.norm(dim=0))
    plan = patch.prior_layer(weight, stats, SimpleNamespace(prior="sparsegpt", sparsity=0.35, tile=16))
    dense = plan.tile_mask(TileFormat.DENSE)
    assert int((plan.formats == TileFormat.DENSE).sum()) == patch.n_dense_tiles(8, 0.35) == 2
    assert plan.mask[dense].all() and torch.all(plan.mask[~dense].reshape(-1, 4).sum(-1) == 2)
    assert plan.weight is not None and (plan.weight[~plan.mask] == 0).all()
    error = ((x @ (weight - plan.weight).T) ** 2).sum()
    assert error < ((x @ (weight - weight * plan.mask).T) ** 2).sum()  # the OBS update beats masking alone


def test_soft_mask_approaches_the_hard_mask():
    torch.manual_seed(0)
    weight = torch.randn(16, 32)
    plan = _prior(weight, 0.35, tile=8)
    gates = patch.TileGates.from_prior_plans({"w": plan}, {"w": mask_2of4(weight.abs())}, 0.35)
    soft = gates.soft_mask("w", tau=0.01, kappa=1e5, tau24=0.01, kappa24=1e5)
    hard = patch.final_layer_plans(gates, match_target=False)["w"]
    assert np.array_equal(hard.formats, plan.formats)  # +-3 std: the tiles start at the prior
    assert (hard.mask == plan.mask).float().mean() > 0.8  # patterns start near it: +3 std against noise of 1 std
    assert (soft - hard.mask.float()).abs().max() < 1e-3


def test_schedules_move_linearly():
    assert patch.schedules(0, 11, 0.35, joint=True) == (2.0, 25.0, 4.0, 100.0)
    assert patch.schedules(10, 11, 0.45, joint=False) == pytest.approx((0.05, 500.0, 0.05, 500.0))
    assert patch.schedules(0, 11, 0.45, joint=False).tau == 4.0
    assert patch.schedules(5, 11, 0.35, joint=True).kappa == pytest.approx(187.5)


def test_patch_loss_and_density_accounting():
    masks = {"a": torch.ones(2, 4), "b": torch.zeros(4, 4)}
    density = patch.soft_density(masks)
    assert density.item() == pytest.approx(8 / 24)
    loss = patch.patch_loss(torch.tensor(2.0), density, 0.5, torch.tensor(0.8), step=5, total=10, l1=3.0, l2=1.0)
    assert loss.item() == pytest.approx(2.0 + 3.0 * (0.5 - 8 / 24) - 0.5 * 0.8)


def test_global_correction_flips_the_least_confident_tiles():
    confidence = {"a": torch.tensor([[2.0, 0.1]]), "b": torch.tensor([[-0.5, 1.0]])}
    sizes = {n: torch.full((1, 2), 16.0) for n in confidence}
    half = {n: torch.full((1, 2), 8.0) for n in confidence}
    dense = patch.match_global_density(confidence, sizes, half, target_density=0.75)  # 2 of the 4 tiles dense
    assert dense["a"].tolist() == [[True, False]] and dense["b"].tolist() == [[False, True]]
    dense = patch.match_global_density(confidence, sizes, half, target_density=1.0)
    assert all(d.all() for d in dense.values())


@pytest.mark.parametrize("patterns", [True, False])
def test_refinement_trains_the_logits_only_and_meets_the_target(patterns):
    torch.manual_seed(0)
    sparsity, tile = 0.35, 8
    weights = {"a": torch.randn(32, 64), "b": torch.randn(64, 32)}
    plans = {n: _prior(w, sparsity, tile) for n, w in weights.items()}
    gates = patch.TileGates.from_prior_plans(plans, {n: mask_2of4(w.abs()) for n, w in weights.items()}, sparsity,
                                             patterns=patterns)
    before = [p.detach().clone() for p in gates.parameters()]
    originals = {n: w.clone() for n, w in weights.items()}
    x = torch.randn(64, 32)
    target = x @ weights["b"].T @ weights["a"].T

    def loss_fn(masked):
        return torch.nn.functional.mse_loss(x @ masked["b"].T @ masked["a"].T, target) / target.var()

    losses = patch.refine(gates, weights, loss_fn, steps=20, lr=1e-2, progress=False)
    assert len(losses) == 20 and all(math.isfinite(v) for v in losses)
    assert any(not torch.equal(p, b) for p, b in zip(gates.parameters(), before))
    assert all(w.grad is None and torch.equal(w, originals[n]) for n, w in weights.items())
    final = patch.final_layer_plans(gates)
    kept = sum(int(p.mask.sum()) for p in final.values())
    assert abs((1 - kept / (2 * 32 * 64)) - sparsity) <= 0.01
    for p in final.values():
        assert p.provenance["stage"] == "refined" and p.format_set <= {TileFormat.DENSE, TileFormat.NV24}
        nv24 = p.tile_mask(TileFormat.NV24)
        groups = (p.mask & nv24).reshape(p.shape[0], -1, 4).sum(-1)
        assert torch.all(groups[nv24.reshape(p.shape[0], -1, 4).all(-1)] == 2)
