"""GQSA: group-structured pruning aligned with int4 groups, stored block-sparse (BSR_INT4), after SEEDS.md's
reconstruction (the paper's saliency, block shape and layouts are not public).

1. Blocks of BLOCK_N (16) rows x `group` inputs, the storage block of BSR_INT4. Block score
   sum over the block of W_ij^2 * ||X_j||^2; the lowest-scoring blocks are dropped, balanced per block row: every
   block row drops the same number of blocks, the few left by rounding go to the block rows whose next-lowest
   block scores lowest.
2. Dropped blocks are zeroed and their error compensated into the kept weights of the same rows, jointly per
   pruned set (optimal brain surgeon): W -= W_P [H^-1]_PP^-1 [H^-1]_P,: with H = 2/n X^T X, damped.
3. GPTQ sweep: asymmetric int4 per (row, group), w = q * s + m, q in [0, 15]; s and m are taken from the group's
   current (already compensated) weights when the sweep reaches the group, rounded to SCALE_DTYPE; each column's
   error (w - target) / d is compensated into the columns not yet visited, U = upper Cholesky of H^-1.
4. Optional refinement (refine_steps > 0): Adam on the scales and minimums of kept groups, q fixed, against the
   layer output error trace((W - Wq) H (W - Wq)^T); the result is kept only if it lowers that error.

Scales and minimums are rounded to bfloat16, whose values float16, bfloat16 and float32 all hold exactly, so the
dequantized weights q * s + m are the same whatever activation dtype the layer is packed in.
"""
from __future__ import annotations

import torch

from sparc.errors import SparcError
from sparc.ir import LayerPlan, TileFormat, uniform_layer

from .sparsegpt import BLOCK, damped_hessian, dead_inputs, hessian_inverse, scaled_hessian, upper_inverse_factor

BLOCK_N = 16
LEVELS = 15
SCALE_DTYPE = torch.bfloat16
REFINE_LR = 3e-3


def block_scores(weight: torch.Tensor, sq_norms: torch.Tensor, group: int, block_n: int = BLOCK_N) -> torch.Tensor:
    """(NB, KB) float64: sum over each (block_n x group) block of W_ij^2 * ||X_j||^2 (tail blocks are partial)."""
    n, k = weight.shape
    nb, kb = -(-n // block_n), -(-k // group)
    saliency = weight.double().square() * sq_norms.double()[None, :]
    padded = torch.nn.functional.pad(saliency, (0, kb * group - k, 0, nb * block_n - n))
    return padded.reshape(nb, block_n, kb, group).sum(dim=(1, 3))


def balanced_block_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Bool (NB, KB), True where kept: round(sparsity * NB * KB) blocks dropped, each block row dropping
    floor or ceil of the mean count."""
    nb, kb = scores.shape
    total = int(round(sparsity * nb * kb))
    base, extra = divmod(total, nb)
    order = scores.argsort(dim=1)
    drops = torch.full((nb,), base, dtype=torch.long)
    if extra:
        next_lowest = scores.gather(1, order[:, base:base + 1]).squeeze(1)
        drops[next_lowest.topk(extra, largest=False).indices] += 1
    ranks = order.argsort(dim=1)
    return ranks >= drops[:, None]


def element_mask(kept_blocks: torch.Tensor, shape, group: int, block_n: int = BLOCK_N) -> torch.Tensor:
    """Bool (N, K) from the (NB, KB) block mask."""
    full = kept_blocks.repeat_interleave(block_n, 0).repeat_interleave(group, 1)
    return full[: shape[0], : shape[1]].contiguous()


def compensate_pruned(work: torch.Tensor, hinv: torch.Tensor, mask: torch.Tensor) -> None:
    """Zero the masked-out weights of each row, compensating the rest jointly (rows sharing a mask share a solve)."""
    patterns, which = torch.unique(mask, dim=0, return_inverse=True)
    for index, pattern in enumerate(patterns):
        pruned = ~pattern
        if not pruned.any():
            continue
        rows = which == index
        sub = work[rows]
        factor = torch.linalg.cholesky(hinv[pruned][:, pruned])
        sub -= torch.cholesky_solve(sub[:, pruned].T, factor).T @ hinv[pruned]
        sub[:, pruned] = 0
        work[rows] = sub


def group_params(values: torch.Tensor, kept: torch.Tensor, dtype: torch.dtype):
    """Scale and minimum (N,) of one group per row from its kept values, rounded to `dtype`; zero for empty rows."""
    low = torch.where(kept, values, torch.inf).amin(dim=1)
    high = torch.where(kept, values, -torch.inf).amax(dim=1)
    any_kept = kept.any(dim=1)
    low, high = torch.where(any_kept, low, 0.0), torch.where(any_kept, high, 0.0)
    scales = ((high - low) / LEVELS).to(dtype).double()
    return scales, low.to(dtype).double()


def round_to_grid(values: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor) -> torch.Tensor:
    """Nearest q in [0, 15] (float) with q * s + m closest to each value; a zero scale maps everything to q = 0."""
    step = torch.where(scales > 0, scales, torch.ones_like(scales))
    return ((values - mins) / step).round().clamp(0, LEVELS)


def dequantize(q: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor, group: int, k: int) -> torch.Tensor:
    """(N, k): q * s + m of the first k inputs, computed in the dtype of `scales` (float32 like the int4 kernels)."""
    s = scales.repeat_interleave(group, 1)[:, :k]
    m = mins.repeat_interleave(group, 1)[:, :k]
    return q[:, :k].to(s.dtype) * s + m


def gptq_sweep(work: torch.Tensor, u: torch.Tensor, mask: torch.Tensor, group: int, dtype: torch.dtype):
    """Quantize `work` (N, K) float64 in place column by column; returns q (N, K) and scales, mins (N, KB)."""
    n, k = work.shape
    kb = -(-k // group)
    q = torch.zeros(n, k, dtype=torch.float64)
    scales = torch.zeros(n, kb, dtype=torch.float64)
    mins = torch.zeros(n, kb, dtype=torch.float64)
    for start in range(0, k, BLOCK):
        end = min(start + BLOCK, k)
        block, u_block = work[:, start:end].clone(), u[start:end, start:end]
        errors = torch.zeros_like(block)
        for i in range(end - start):
            column = start + i
            g = column // group
            if column % group == 0:
                stop = min(group, end - start - i)
                scales[:, g], mins[:, g] = group_params(block[:, i:i + stop], mask[:, column:column + stop], dtype)
            kept = mask[:, column]
            q[:, column] = torch.where(kept, round_to_grid(block[:, i], scales[:, g], mins[:, g]), 0.0)
            target = torch.where(kept, q[:, column] * scales[:, g] + mins[:, g], 0.0)
            errors[:, i] = (block[:, i] - target) / u_block[i, i]
            block[:, i:] -= errors[:, i:i + 1] * u_block[i, i:][None, :]
        work[:, start:end] = block
        work[:, end:] -= errors @ u[start:end, end:]
    return q, scales, mins


def pad_codes(q: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor, group: int) -> torch.Tensor:
    """q (N, Kp) uint8: the padding inputs of the tail group hold the code nearest to zero."""
    n, k = q.shape
    kp = scales.shape[1] * group
    tail = round_to_grid(torch.zeros(n, kp - k, dtype=torch.float64), scales[:, -1:], mins[:, -1:])
    return torch.cat([q, tail], dim=1).to(torch.uint8)


def gqsa_quantize(weight: torch.Tensor, hessian: torch.Tensor, mask: torch.Tensor, group: int,
                  dtype: torch.dtype = SCALE_DTYPE):
    """Prune `weight` (N, K) to `mask` and quantize the rest to int4 groups of `group`, compensating both with
    `hessian` (K, K, a multiple of X^T X). Returns q uint8 (N, Kp), scales and mins (N, Kp / group) in `dtype`,
    and the dequantized weights float32 (N, K), q * s + m where kept and 0 elsewhere."""
    inverse = hessian_inverse(damped_hessian(hessian))
    work = weight.double().clone()
    work[:, dead_inputs(hessian)] = 0
    compensate_pruned(work, inverse, mask)
    q, scales, mins = gptq_sweep(work, upper_inverse_factor(inverse), mask, group, dtype)
    dequantized = dequantize(q, scales.float(), mins.float(), group, weight.shape[1]) * mask
    return pad_codes(q, scales, mins, group), scales.to(dtype), mins.to(dtype), dequantized


def output_error(weight: torch.Tensor, approx: torch.Tensor, hessian: torch.Tensor) -> float:
    """trace((W - W') H (W - W')^T) / 2; with H = 2/n X^T X this is ||X W^T - X W'^T||^2 / n."""
    delta = weight.double() - approx.double()
    return ((delta @ hessian) * delta).sum().item() / 2


def refine_quant_params(weight, hessian, q, scales, mins, mask, group: int, steps: int):
    """Adam on the scales and minimums of kept groups (q fixed) against output_error; returns the better of the
    refined (rounded to the scales' dtype) and the given parameters."""
    k, dtype = weight.shape[1], scales.dtype
    kept_groups = (scales.float() > 0).double()
    target, h = weight.double(), hessian.double()
    s0, m0 = scales.double(), mins.double()
    ds = torch.zeros_like(s0, requires_grad=True)
    dm = torch.zeros_like(m0, requires_grad=True)
    optimizer = torch.optim.Adam([ds, dm], lr=REFINE_LR)

    def candidate(d_scale, d_min):
        s = s0 * (1 + d_scale * kept_groups)
        m = m0 + s0 * d_min * kept_groups
        return s, m

    def loss_of(s, m):
        approx = dequantize(q, s, m, group, k) * mask
        delta = target - approx
        return ((delta @ h) * delta).sum() / 2

    with torch.enable_grad():  # planning runs inside the calibration pass's no_grad
        for _ in range(steps):
            optimizer.zero_grad()
            loss_of(*candidate(ds, dm)).backward()
            optimizer.step()
    with torch.no_grad():
        s, m = candidate(ds, dm)
        s, m = torch.maximum(s, s0 / 2).to(dtype), m.to(dtype)  # a positive scale keeps every code recoverable
        if loss_of(s.double(), m.double()) < loss_of(s0, m0):
            return s, m
    return scales, mins


class GQSA:
    patterns = ("groups",)
    needs_calibration = True
    needs_hessian = True

    def plan_layer(self, weight: torch.Tensor, stats, settings) -> LayerPlan:
        if settings.bits != 4:
            raise SparcError(f"method 'gqsa' stores int4 groups: option 'bits' must be 4, got {settings.bits!r}")
        group = settings.group
        hessian = scaled_hessian(stats)
        kept_blocks = balanced_block_mask(block_scores(weight, stats.sq_norms, group), settings.sparsity)
        mask = element_mask(kept_blocks, weight.shape, group)
        q, scales, mins, dequantized = gqsa_quantize(weight, hessian, mask, group)
        if settings.refine_steps > 0:
            scales, mins = refine_quant_params(weight, hessian, q, scales, mins, mask, group, settings.refine_steps)
            dequantized = dequantize(q, scales.float(), mins.float(), group, weight.shape[1]) * mask
        achieved = 1.0 - kept_blocks.float().mean().item()
        return uniform_layer(weight.shape, TileFormat.INT4, mask, settings.tile, group=group, weight=dequantized,
                             block_n=BLOCK_N, scales=scales, mins=mins,  # LayerPlan quant fields
                             provenance={"method": "gqsa", "block": [BLOCK_N, group], "sparsity": round(achieved, 6),
                                         "error": output_error(weight, dequantized, hessian)})
