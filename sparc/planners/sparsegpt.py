"""SparseGPT: one-shot pruning with optimal-brain-surgeon weight updates, 2:4 or unstructured (SEEDS.md, baselines).

Per layer, from the calibration inputs X (n tokens) of the already-pruned model:
    H = 2/n X^T X, inputs never seen (H_jj = 0) get H_jj = 1 and a zero weight column,
    H += 0.01 * mean(diag H) * I, U = upper Cholesky factor of H^-1 (d_j = U_jj).
Columns are swept left to right in blocks of 128, the updates of a block reaching later blocks lazily. A weight
w is pruned by its score w^2 / d^2: 2:4 chooses, at each column i with i % 4 == 0, the 2 lowest scores of columns
i..i+3 of each row; unstructured prunes, when a block starts, the lowest scores of the whole block (all rows x the
block's columns) at the target sparsity, as the reference code does. Each column's error err = (w - q) / d is then
compensated into the columns not yet visited, W[:, i:] -= err * U[i, i:]. The OBS loss sum (w - q)^2 / (2 d^2)
estimates ||X (W - W')^T||^2 / n.

With bits=4 this planner only prunes: the packer rounds the kept weights to the int4 grid (round to nearest).
"""
from __future__ import annotations

import torch

from sparc.ir import LayerPlan, uniform_layer

from .baselines import layer_format

BLOCK = 128
DAMP = 0.01


def scaled_hessian(stats) -> torch.Tensor:
    """H = 2/n X^T X (float64) from the accumulated sum of x x^T."""
    return stats.hessian.double() * (2.0 / stats.tokens)


def dead_inputs(hessian: torch.Tensor) -> torch.Tensor:
    """Bool (K,): inputs whose calibration activations were all zero."""
    return torch.diagonal(hessian) == 0


def damped_hessian(hessian: torch.Tensor) -> torch.Tensor:
    """A copy of H with dead inputs set to H_jj = 1 and 1% of the mean diagonal added to the diagonal."""
    damped = hessian.double().clone()
    diagonal = torch.diagonal(damped)
    diagonal[dead_inputs(hessian)] = 1.0
    diagonal += DAMP * diagonal.mean()
    return damped


def hessian_inverse(damped: torch.Tensor) -> torch.Tensor:
    """H^-1 through the Cholesky factor of the damped H."""
    identity = torch.eye(damped.shape[0], dtype=damped.dtype)
    return torch.cholesky_solve(identity, torch.linalg.cholesky(damped))


def upper_inverse_factor(inverse: torch.Tensor) -> torch.Tensor:
    """Upper Cholesky factor U of H^-1 (H^-1 = U^T U); U_jj^2 = [(H[j:, j:])^-1]_00, the OBS denominator."""
    return torch.linalg.cholesky(inverse, upper=True)


def obs_scores(weights: torch.Tensor, diagonal: torch.Tensor) -> torch.Tensor:
    """The SparseGPT saliency w^2 / d^2 of each weight of a column range whose U diagonal is `diagonal`."""
    return weights.square() / diagonal.square()


def block_unstructured_mask(weights: torch.Tensor, diagonal: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Bool, True where pruned: the round(sparsity * size) lowest scores of the whole block."""
    scores = obs_scores(weights, diagonal).reshape(-1)
    pruned = torch.zeros_like(scores, dtype=torch.bool)
    count = int(round(sparsity * scores.numel()))
    if count:
        pruned[scores.topk(count, largest=False).indices] = True
    return pruned.reshape(weights.shape)


def quad_pruned(weights: torch.Tensor, diagonal: torch.Tensor) -> torch.Tensor:
    """Bool (N, width), True where pruned: the width - 2 lowest scores of each row (none for a tail of <= 2)."""
    width = weights.shape[1]
    pruned = torch.zeros_like(weights, dtype=torch.bool)
    if width > 2:
        pruned.scatter_(1, obs_scores(weights, diagonal).topk(width - 2, dim=1, largest=False).indices, True)
    return pruned


def prune_block(block: torch.Tensor, u_block: torch.Tensor, pattern: str, sparsity: float,
                protected: torch.Tensor | None = None):
    """Sweep one block of columns in place: returns (pruned mask, errors err_i per column, OBS losses per column).
    `protected` (bool, like `block`) marks weights never pruned (their columns are still updated)."""
    diagonal = torch.diagonal(u_block)
    count = block.shape[1]
    if pattern == "2:4":
        pruned = torch.zeros_like(block, dtype=torch.bool)
    else:
        pruned = block_unstructured_mask(block, diagonal, sparsity)
    if protected is not None:
        pruned &= ~protected
    errors = torch.zeros_like(block)
    losses = torch.zeros_like(block)
    for i in range(count):
        if pattern == "2:4" and i % 4 == 0:
            pruned[:, i:i + 4] = quad_pruned(block[:, i:i + 4], diagonal[i:i + 4])
            if protected is not None:
                pruned[:, i:i + 4] &= ~protected[:, i:i + 4]
        column = block[:, i]
        target = torch.where(pruned[:, i], torch.zeros_like(column), column)
        error = (column - target) / diagonal[i]
        losses[:, i] = error.square() / 2
        block[:, i:] -= error[:, None] * u_block[i, i:][None, :]
        block[:, i] = target
        errors[:, i] = error
    return pruned, errors, losses


def sparsegpt_prune(weight: torch.Tensor, hessian: torch.Tensor, pattern: str, sparsity: float = 0.5,
                    protected: torch.Tensor | None = None):
    """SparseGPT on one layer: (updated weight float32 (N, K), kept mask bool (N, K), OBS loss sum).

    weight (N, K); hessian (K, K) = 2/n X^T X (undamped, any multiple of X^T X works up to the loss scale);
    protected: bool (N, K), weights kept whatever their score (PATCH's dense tiles), updated like the others."""
    work = weight.double().clone()
    work[:, dead_inputs(hessian)] = 0
    u = upper_inverse_factor(hessian_inverse(damped_hessian(hessian)))
    pruned = torch.zeros_like(work, dtype=torch.bool)
    loss = 0.0
    for start in range(0, work.shape[1], BLOCK):
        end = min(start + BLOCK, work.shape[1])
        block = work[:, start:end].clone()
        guard = None if protected is None else protected[:, start:end]
        pruned[:, start:end], errors, losses = prune_block(block, u[start:end, start:end], pattern, sparsity, guard)
        work[:, start:end] = block
        work[:, end:] -= errors @ u[start:end, end:]
        loss += losses.sum().item()
    return work.float(), ~pruned, loss


class SparseGPT:
    patterns = ("2:4", "unstructured")
    needs_calibration = True
    needs_hessian = True

    def plan_layer(self, weight: torch.Tensor, stats, settings) -> LayerPlan:
        updated, mask, loss = sparsegpt_prune(weight, scaled_hessian(stats), settings.pattern, settings.sparsity)
        fmt = layer_format(settings.pattern, settings.bits)
        return uniform_layer(weight.shape, fmt, mask, settings.tile, group=settings.quant_group, weight=updated,
                             provenance={"method": "sparsegpt", "pattern": settings.pattern, "error": loss})
