"""Hessian-based planners: SparseGPT (2:4 and unstructured OBS pruning) and GQSA (block-pruned GPTQ int4)."""
from types import SimpleNamespace

import pytest
import torch

from sparc.errors import SparcError
from sparc.ir import TileFormat
from sparc.kernels import int4
from sparc.kernels.bsr_int4 import block_grid
from sparc.options import PlanSettings
from sparc.passes.collect_stats import InputStats
from sparc.planners.baselines import Magnitude, Wanda
from sparc.planners.gqsa import (GQSA, balanced_block_mask, block_scores, dequantize, element_mask, gqsa_quantize,
                                 output_error, refine_quant_params)
from sparc.planners.masks import mask_2of4
from sparc.planners.sparsegpt import DAMP, SparseGPT, sparsegpt_prune


def settings(method, pattern, sparsity, bits=16, group=128, refine_steps=0):
    """The fields a planner reads, without PlanSettings' registry check (these planners may not be registered)."""
    return SimpleNamespace(method=method, pattern=pattern, sparsity=sparsity, bits=bits, group=group, tile=128,
                           refine_steps=refine_steps, quant_group=group if bits == 4 else 0)


def stats_of(x: torch.Tensor) -> InputStats:
    x = x.double()
    return InputStats(x.square().sum(0), x.shape[0], x.T @ x)


def identity_stats(k: int, tokens: int = 10) -> InputStats:
    """Statistics whose H = 2/n X^T X is the identity."""
    return InputStats(torch.full((k,), tokens / 2, dtype=torch.float64), tokens,
                      torch.eye(k, dtype=torch.float64) * tokens / 2)


def correlated_inputs(k: int, tokens: int, seed: int):
    """A sampler of inputs x = z A whose features are correlated through a fixed random mixing A."""
    mixing = torch.randn(k, k, generator=torch.Generator().manual_seed(seed)) / k ** 0.5 + torch.eye(k)
    generator = torch.Generator().manual_seed(seed + 1)
    return lambda: torch.randn(tokens, k, generator=generator) @ mixing


def output_gap(x: torch.Tensor, weight: torch.Tensor, approx: torch.Tensor) -> float:
    return (x.double() @ (weight.double() - approx.double()).T).square().sum().item()


# Wanda and magnitude


def test_wanda_and_magnitude_masks_on_a_hand_layer():
    weight = torch.tensor([[4.0, -1.0, 2.0, 3.0, 1.0, -5.0, 0.5, 2.0]])
    norms = torch.tensor([0.1, 10.0, 1.0, 1.0, 3.0, 0.1, 4.0, 0.9])  # ||X_j||
    stats = InputStats(norms.double().square(), 8)
    # |W| * ||X||: 0.4 10 2 3 | 3 0.5 2 1.8 -> Wanda keeps inputs 1, 3 and 4, 6
    wanda = Wanda().plan_layer(weight, stats, settings("wanda", "2:4", 0.5))
    assert wanda.mask.tolist() == [[False, True, False, True, True, False, True, False]]
    magnitude = Magnitude().plan_layer(weight, stats, settings("magnitude", "2:4", 0.5))
    assert magnitude.mask.tolist() == [[True, False, False, True, False, True, False, True]]
    unstructured = Wanda().plan_layer(weight, stats, settings("wanda", "unstructured", 0.25))
    assert unstructured.mask.tolist() == [[False, True, True, True, True, False, True, True]]  # drops 0.4 and 0.5


# SparseGPT


def test_sparsegpt_with_identity_hessian_is_magnitude_2of4_without_updates():
    weight = torch.randn(24, 303)
    plan = SparseGPT().plan_layer(weight, identity_stats(303), settings("sparsegpt", "2:4", 0.5))
    assert torch.equal(plan.mask, mask_2of4(weight.abs()))
    assert torch.equal(plan.weight[plan.mask], weight[plan.mask])
    assert (plan.weight[~plan.mask] == 0).all()
    assert plan.format_set == {TileFormat.NV24} and plan.provenance["pattern"] == "2:4"


def test_sparsegpt_never_prunes_protected_weights_and_keeps_2of4_elsewhere():
    torch.manual_seed(0)
    weight, x = torch.randn(16, 256), correlated_inputs(256, 512, seed=3)()
    protected = torch.zeros(16, 256, dtype=torch.bool)
    protected[:8, 128:] = True
    updated, kept, _ = sparsegpt_prune(weight, stats_of(x).hessian * 2 / 512, "2:4", protected=protected)
    assert kept[protected].all()
    assert torch.all(kept[~protected].reshape(-1, 4).sum(-1) == 2)
    assert (updated[~kept] == 0).all()
    assert not torch.equal(updated[protected], weight[protected])  # protected weights still take the OBS update
    unprotected = sparsegpt_prune(weight, identity_stats(256).hessian * 2 / 10, "2:4", protected=protected)
    assert torch.equal(unprotected[1][~protected], mask_2of4(weight.abs())[~protected])


def test_sparsegpt_protecting_every_weight_changes_nothing():
    weight, x = torch.randn(8, 64), torch.randn(100, 64)
    updated, kept, loss = sparsegpt_prune(weight, stats_of(x).hessian, "2:4",
                                          protected=torch.ones(8, 64, dtype=torch.bool))
    assert kept.all() and loss == 0 and torch.allclose(updated, weight)


def test_sparsegpt_with_identity_hessian_prunes_lowest_magnitudes_of_each_128_block():
    weight, sparsity = torch.randn(24, 300), 0.4
    plan = SparseGPT().plan_layer(weight, identity_stats(300), settings("sparsegpt", "unstructured", sparsity))
    for start in range(0, 300, 128):
        block = weight[:, start:start + 128].abs()
        threshold = block.flatten().sort().values[int(round(sparsity * block.numel())) - 1]
        assert torch.equal(plan.mask[:, start:start + 128], block > threshold)
    assert torch.equal(plan.weight[plan.mask], weight[plan.mask])
    assert plan.format_set == {TileFormat.DENSE}


def test_sparsegpt_first_2of4_choice_follows_the_hand_computed_obs_scores():
    h = torch.tensor([4.0, 1.0, 1.0, 0.25, 1.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    weight = torch.tensor([[1.0, 1.5, 1.2, 1.9, 0.3, -0.2, 0.8, 0.5],
                           [-0.5, 0.3, -2.0, 0.1, 0.7, 0.1, -0.4, 0.9]])
    stats = InputStats(h.clone(), 2, torch.diag(h))  # tokens = 2, so H = 2/n X^T X = diag(h)
    plan = SparseGPT().plan_layer(weight, stats, settings("sparsegpt", "2:4", 0.5))
    damped = h + DAMP * h.mean()  # a diagonal H has d_j^2 = 1 / (h_j + damp)
    scores = weight[:, :4].double().square() * damped[:4]
    # row 0: scores 4.01, 2.28, 1.46, 0.95 keep inputs 0, 1 (magnitude would keep 1, 3); row 1 keeps 0, 2
    assert torch.equal(plan.mask[:, :4], torch.tensor([[True, True, False, False], [True, False, True, False]]))
    assert torch.equal(plan.mask[:, :4], mask_2of4(scores))
    assert not torch.equal(plan.mask[:, :4], mask_2of4(weight[:, :4].abs()))


@pytest.mark.parametrize("pattern", ["2:4", "unstructured"])
def test_sparsegpt_beats_wanda_and_magnitude_on_correlated_inputs(pattern):
    torch.manual_seed(1)
    weight = torch.randn(64, 256)
    sample = correlated_inputs(256, 1024, seed=2)
    calibration, fresh = sample(), sample()
    stats = stats_of(calibration)
    original = weight.clone()
    plan = SparseGPT().plan_layer(weight, stats, settings("sparsegpt", pattern, 0.5))
    assert torch.equal(weight, original)
    assert abs(plan.sparsity - 0.5) < 1e-9
    ours = output_gap(fresh, weight, plan.weight)
    for baseline in (Wanda(), Magnitude()):
        base = baseline.plan_layer(weight, stats, PlanSettings(method="wanda", pattern=pattern, sparsity=0.5))
        assert ours < 0.9 * output_gap(fresh, weight, weight * base.mask)
    calibration_error = output_gap(calibration, weight, plan.weight) / calibration.shape[0]
    assert plan.provenance["error"] == pytest.approx(calibration_error, rel=0.1)  # the OBS loss, damped


def test_sparsegpt_zeroes_the_columns_of_dead_inputs():
    x = torch.randn(256, 40)
    x[:, 7] = 0
    weight, _, _ = sparsegpt_prune(torch.randn(8, 40), stats_of(x).hessian * 2 / 256, "2:4")
    assert torch.isfinite(weight).all() and (weight[:, 7] == 0).all()


# GQSA


def requantize(dequantized: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor, group: int) -> torch.Tensor:
    """The codes int4 rounding gives the dequantized weights under the given scales and minimums."""
    k = dequantized.shape[1]
    step = torch.where(scales.float() > 0, scales.float(), torch.ones_like(scales.float()))
    s, m = step.repeat_interleave(group, 1)[:, :k], mins.float().repeat_interleave(group, 1)[:, :k]
    return ((dequantized - m) / s).round().clamp(0, 15).to(torch.uint8)


def test_gqsa_block_scores_and_balanced_drop_by_hand():
    weight = torch.tensor([[1.0, 2.0, 0.0, 1.0, 3.0, 0.0, 0.0, 1.0],
                           [0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 2.0, 0.0]])
    sq_norms = torch.tensor([1.0, 1.0, 2.0, 2.0, 0.5, 0.5, 1.0, 1.0], dtype=torch.float64)
    # row 0: 1 + 4 + 0 + 2 = 7 | 4.5 + 0 + 0 + 1 = 5.5;  row 1: 0 + 1 + 2 + 0 = 3 | 0 + 0 + 4 + 0 = 4
    assert block_scores(weight, sq_norms, group=4, block_n=1).tolist() == [[7.0, 5.5], [3.0, 4.0]]
    assert block_scores(weight, sq_norms, group=4).tolist() == [[10.0, 9.5]]
    scores = torch.tensor([[7.0, 5.5, 9.0], [3.0, 4.0, 1.0]], dtype=torch.float64)
    # 3 of 6 dropped: one per row, and the extra one where the second-lowest score is lower (row 1: 3 < 7)
    assert balanced_block_mask(scores, 0.5).tolist() == [[True, False, True], [False, True, False]]


def test_gqsa_plan_prunes_balanced_blocks_and_quantizes_on_its_own_grid():
    torch.manual_seed(3)
    weight, group, target = torch.randn(128, 300), 32, 0.37
    stats = stats_of(correlated_inputs(300, 1200, seed=4)())
    original = weight.clone()
    plan = GQSA().plan_layer(weight, stats, settings("gqsa", "groups", target, bits=4, group=group))
    assert torch.equal(weight, original)
    kept = block_grid(plan.mask, 16, group).any(-1).any(-1)
    assert torch.equal(element_mask(kept, (128, 300), group), plan.mask)  # whole 16 x group blocks
    dropped_per_row = (~kept).sum(1)
    assert dropped_per_row.max() - dropped_per_row.min() <= 1
    assert abs(plan.provenance["sparsity"] - target) <= 0.01
    assert (plan.weight[~plan.mask] == 0).all()
    assert plan.format_set == {TileFormat.INT4} and plan.group == group
    assert plan.provenance["block"] == [16, group] and plan.block_n == 16
    codes = requantize(plan.weight, plan.scales, plan.mins, group)
    assert torch.equal(plan.weight, dequantize(codes, plan.scales.float(), plan.mins.float(), group, 300) * plan.mask)


@pytest.mark.parametrize("group", [32, 128])
def test_gqsa_dequantized_weights_requantize_to_the_same_codes(group):
    torch.manual_seed(5)
    weight = torch.randn(48, 200)
    stats = stats_of(correlated_inputs(200, 800, seed=6)())
    mask = torch.rand(3, -(-200 // group)) > 0.4
    mask = mask.repeat_interleave(16, 0).repeat_interleave(group, 1)[:, :200]
    q, scales, mins, dequantized = gqsa_quantize(weight, stats.hessian, mask, group, torch.bfloat16)
    assert q.shape == (48, -(-200 // group) * group) and scales.shape == mins.shape == (48, -(-200 // group))
    assert torch.equal(dequantized, dequantize(q, scales.float(), mins.float(), group, 200) * mask)
    assert torch.equal(requantize(dequantized, scales, mins, group)[mask], q[:, :200][mask])
    assert (dequantized[~mask] == 0).all()


def test_gqsa_compensation_beats_round_to_nearest_and_refinement_does_not_hurt():
    torch.manual_seed(7)
    weight, group = torch.randn(64, 256), 64
    calibration = correlated_inputs(256, 1024, seed=8)()
    stats = stats_of(calibration)
    plan = GQSA().plan_layer(weight, stats, settings("gqsa", "groups", 0.5, bits=4, group=group))
    hessian = stats.hessian * 2 / stats.tokens
    q, scales, mins = int4.quantize(weight * plan.mask, group, torch.bfloat16)
    nearest = int4.dequantize(q, scales, mins, group) * plan.mask
    assert plan.provenance["error"] < 0.8 * output_error(weight, nearest, hessian)
    assert plan.provenance["error"] == pytest.approx(output_gap(calibration, weight, plan.weight) / 1024, rel=1e-6)
    q, scales, mins, dequantized = gqsa_quantize(weight, hessian, plan.mask, group)
    with torch.no_grad():  # as during planning
        refined_scales, refined_mins = refine_quant_params(weight, hessian, q, scales, mins, plan.mask, group, steps=5)
    refined = dequantize(q, refined_scales.float(), refined_mins.float(), group, 256) * plan.mask
    assert output_error(weight, refined, hessian) <= output_error(weight, dequantized, hessian)
    assert torch.equal(requantize(refined, refined_scales, refined_mins, group)[plan.mask], q[plan.mask])


def test_gqsa_needs_4_bits():
    with pytest.raises(SparcError, match="'bits'"):
        GQSA().plan_layer(torch.randn(16, 64), identity_stats(64), settings("gqsa", "groups", 0.5, bits=16))
