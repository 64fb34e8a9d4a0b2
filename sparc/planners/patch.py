"""PATCH: hybrid dense / 2:4 tiles (SEEDS.md, PATCH section).

Every tile of a weight is dense or 2:4: mask = T + (1 - T) * M24, T the tile indicator broadcast over the tile.
A layer with a fraction f of dense tiles has sparsity 0.5 * (1 - f), so sparsity is continuous in [0, 0.5].

- One-shot prior (`prior_layer`), planned layer by layer in graph order, each layer calibrated on the already
  planned ones: the N_dense = round(2 * N_tiles * (density - 0.5)) tiles that keep most weights under an unstructured
  mask at the target sparsity are dense, the rest take a one-shot 2:4 mask. With prior="sparsegpt" (the default) both
  masks are SparseGPT's and the 2:4 sweep runs with the dense tiles protected, so every weight takes the OBS update
  (`sparsegpt_hybrid`); with prior="wanda" the masks are Wanda's and the weights stay as they are.
- Learnable refinement (`TileGates`, `refine`): one logit p per tile, gate = gumbel_softmax([0, p] * kappa, tau)[1];
  optionally 6 logits per group of 4 over the legal 2:4 patterns, M24 = gumbel_softmax(logits * kappa24, tau24)
  @ patterns. Weights frozen; loss = LM loss + l1 * |D - D*| - l2 * (1 - step / T) * sum ||M * W||_F / sum ||W||_F,
  D the element-weighted soft density over all layers (one global target, so per-layer densities differ).
- Final decision (`final_layer_plans`): tile dense iff p > 0, pattern = argmax, then `match_global_density` flips the
  least confident tiles until the overall density is as close to the target as whole tiles allow. With the SparseGPT
  prior the refinement starts from the prior's updated weights, and the final tiles take the OBS update once more.
"""
from __future__ import annotations

import itertools
import math
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sparc.errors import SparcError
from sparc.ir import LayerPlan, TileFormat

from .baselines import Wanda
from .masks import mask_2of4, mask_unstructured_rows
from .sparsegpt import scaled_hessian, sparsegpt_prune

PATTERNS_24 = torch.tensor([[1.0 if i in kept else 0.0 for i in range(4)]
                            for kept in itertools.combinations(range(4), 2)])  # (6, 4): the legal 2:4 patterns
INIT_STD = 0.014
PRIOR_STDS = 3.0


def _check_sparsity(sparsity: float) -> None:
    if not 0 <= sparsity <= 0.5:
        raise SparcError(f"option 'sparsity' must be in [0, 0.5] for PATCH (dense or 2:4 tiles), got {sparsity}")


def n_dense_tiles(n_tiles: int, sparsity: float) -> int:
    """round(2 * n_tiles * (density - 0.5)), density = 1 - sparsity."""
    _check_sparsity(sparsity)
    return round(2 * n_tiles * ((1.0 - sparsity) - 0.5))


def _tile_sums(values: torch.Tensor, tile: int) -> torch.Tensor:
    """(gN, gK) sums of `values` (N, K) over each tile; edge tiles sum their real elements only."""
    n, k = values.shape
    padded = F.pad(values, (0, -k % tile, 0, -n % tile))
    return padded.reshape(padded.shape[0] // tile, tile, padded.shape[1] // tile, tile).sum((1, 3))


def _tile_sizes(shape: tuple[int, int], tile: int) -> torch.Tensor:
    return _tile_sums(torch.ones(shape, dtype=torch.float64), tile)


def tile_scores(unstructured_mask: torch.Tensor, tile: int) -> torch.Tensor:
    """Kept fraction of each tile (gN, gK), float64; an edge tile's fraction is over its real elements."""
    return _tile_sums(unstructured_mask.double(), tile) / _tile_sizes(tuple(unstructured_mask.shape), tile)


def _expand_tiles(grid: torch.Tensor, tile: int, shape: tuple[int, int]) -> torch.Tensor:
    return grid.repeat_interleave(tile, 0).repeat_interleave(tile, 1)[: shape[0], : shape[1]]


def _top_tiles(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Bool grid of the `count` highest scores; ties go to the earlier tile in row-major order."""
    order = torch.argsort(scores.flatten(), descending=True, stable=True)
    chosen = torch.zeros(scores.numel(), dtype=torch.bool)
    chosen[order[:count]] = True
    return chosen.reshape(scores.shape)


def hybrid_plan(dense_tiles: torch.Tensor, mask_24: torch.Tensor, tile: int, provenance: dict) -> LayerPlan:
    """LayerPlan with DENSE tiles where `dense_tiles` (gN, gK) is True, NV24 tiles with `mask_24` elsewhere."""
    shape = tuple(mask_24.shape)
    mask = _expand_tiles(dense_tiles, tile, shape) | mask_24.bool()
    formats = np.where(dense_tiles.numpy(), int(TileFormat.DENSE), int(TileFormat.NV24)).astype(np.uint8)
    return LayerPlan(shape, tile, formats, mask, provenance=provenance)


def prior_layer_plan(weight: torch.Tensor, mask_24: torch.Tensor, mask_unstructured: torch.Tensor, sparsity: float,
                     tile: int) -> LayerPlan:
    """The one-shot PATCH plan of one layer from its 2:4 and unstructured one-shot masks (both (N, K) bool, from
    Wanda or SparseGPT at the target sparsity); `weight` only fixes the shape, it is not updated."""
    if tuple(mask_24.shape) != tuple(weight.shape) or tuple(mask_unstructured.shape) != tuple(weight.shape):
        raise SparcError(f"PATCH prior masks {tuple(mask_24.shape)}, {tuple(mask_unstructured.shape)} differ from the "
                         f"weight shape {tuple(weight.shape)}")
    scores = tile_scores(mask_unstructured, tile)
    dense = _top_tiles(scores, n_dense_tiles(scores.numel(), sparsity))
    return hybrid_plan(dense, mask_24, tile, {"method": "patch", "stage": "prior", "dense_tiles": int(dense.sum())})


def _groups_of_4(mask: torch.Tensor) -> torch.Tensor:
    """(N, ceil(K / 4), 4) float view of an (N, K) mask, the tail group padded with zeros."""
    return F.pad(mask.float(), (0, -mask.shape[1] % 4)).reshape(mask.shape[0], -1, 4)


def _initial_tile_logits(dense_tiles: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """N(0, std) + 3 std for prior-dense tiles, - 3 std for prior-2:4 tiles."""
    prior = torch.where(dense_tiles.bool(), PRIOR_STDS, -PRIOR_STDS) * INIT_STD
    return torch.randn(dense_tiles.shape, generator=generator) * INIT_STD + prior


def _initial_pattern_logits(mask_24: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(N, ceil(K / 4), 6): N(0, std) + (overlap - 1) * 3 std, overlap = weights a pattern shares with the prior."""
    overlap = _groups_of_4(mask_24) @ PATTERNS_24.T
    return torch.randn(overlap.shape, generator=generator) * INIT_STD + (overlap - 1) * PRIOR_STDS * INIT_STD


class TileGates(torch.nn.Module):
    """The learnable PATCH decisions of several layers: a logit per tile and, with `patterns`, 6 logits per group of
    4 inputs. Initialised N(0, 0.014) plus the prior: +-3 std for tiles, (overlap - 1) * 3 std for patterns."""

    def __init__(self, dense_tiles: dict[str, torch.Tensor], masks_24: dict[str, torch.Tensor], tile: int,
                 sparsity: float, patterns: bool = True, seed: int = 0):
        super().__init__()
        _check_sparsity(sparsity)
        self.names, self.tile, self.sparsity, self.joint = list(dense_tiles), tile, sparsity, patterns
        self.shapes = {name: tuple(masks_24[name].shape) for name in self.names}
        self.prior_24 = {name: masks_24[name].bool() for name in self.names}
        generator = torch.Generator().manual_seed(seed)
        self.tile_logits = torch.nn.ParameterList(_initial_tile_logits(dense_tiles[n], generator) for n in self.names)
        self.pattern_logits = torch.nn.ParameterList(
            _initial_pattern_logits(masks_24[n], generator) for n in self.names) if patterns else None
        self.index = {name: i for i, name in enumerate(self.names)}

    @classmethod
    def from_prior_plans(cls, plans: dict[str, LayerPlan], masks_24: dict[str, torch.Tensor], sparsity: float,
                         patterns: bool = True, seed: int = 0) -> TileGates:
        tiles = {plan.tile for plan in plans.values()}
        if len(tiles) != 1:
            raise SparcError(f"PATCH prior plans use several tile sizes {sorted(tiles)}: plan with one tile")
        dense = {name: torch.from_numpy(plan.formats == TileFormat.DENSE) for name, plan in plans.items()}
        return cls(dense, masks_24, tiles.pop(), sparsity, patterns, seed)

    def tile_gate(self, name: str, tau: float, kappa: float) -> torch.Tensor:
        p = self.tile_logits[self.index[name]]
        gate = F.gumbel_softmax(torch.stack([torch.zeros_like(p), p * kappa], -1), tau=tau, dim=-1)[..., 1]
        return _expand_tiles(gate, self.tile, self.shapes[name])

    def pattern_mask(self, name: str, tau24: float, kappa24: float) -> torch.Tensor:
        if self.pattern_logits is None:
            return self.prior_24[name].to(self.tile_logits[self.index[name]].device).float()
        logits = self.pattern_logits[self.index[name]]
        soft = F.gumbel_softmax(logits * kappa24, tau=tau24, dim=-1) @ PATTERNS_24.to(logits.device)
        return soft.reshape(soft.shape[0], -1)[:, : self.shapes[name][1]]

    def soft_mask(self, name: str, tau: float, kappa: float, tau24: float, kappa24: float) -> torch.Tensor:
        """(N, K) float: T + (1 - T) * M24 with Gumbel-softmax samples of the tile gates and the 2:4 patterns."""
        gate = self.tile_gate(name, tau, kappa)
        return gate + (1 - gate) * self.pattern_mask(name, tau24, kappa24)

    def hard_mask_24(self, name: str) -> torch.Tensor:
        """(N, K) bool on the CPU: the argmax pattern of every group (the prior 2:4 mask without pattern logits)."""
        if self.pattern_logits is None:
            return self.prior_24[name]
        hard = PATTERNS_24[self.pattern_logits[self.index[name]].detach().argmax(-1).cpu()].bool()
        return hard.reshape(hard.shape[0], -1)[:, : self.shapes[name][1]]

    def confidence(self, name: str) -> torch.Tensor:
        """(gN, gK) tile logits: dense iff > 0, the distance from 0 is how sure the decision is."""
        return self.tile_logits[self.index[name]].detach().cpu()


class Temperatures(NamedTuple):
    tau: float
    kappa: float
    tau24: float
    kappa24: float


def _linear(start: float, end: float, fraction: float) -> float:
    return start + (end - start) * fraction


def schedules(step: int, total: int, sparsity: float, joint: bool) -> Temperatures:
    """Linear from step 0 to step total - 1: tiles tau 2 -> 0.05 (4 -> 0.05 from 45% sparsity), kappa 25 -> 350
    (joint) or 100 -> 500 (tile-only). The pattern schedule is not in SEEDS.md; it follows MaskLLM's 2:4 Gumbel
    schedule, tau24 4 -> 0.05 and kappa24 100 -> 500."""
    fraction = min(step / max(total - 1, 1), 1.0)
    tau_start = 4.0 if sparsity >= 0.45 - 1e-9 else 2.0
    kappa_start, kappa_end = (25.0, 350.0) if joint else (100.0, 500.0)
    return Temperatures(_linear(tau_start, 0.05, fraction), _linear(kappa_start, kappa_end, fraction),
                        _linear(4.0, 0.05, fraction), _linear(100.0, 500.0, fraction))


def soft_density(masks: dict[str, torch.Tensor]) -> torch.Tensor:
    """Element-weighted density over all layers: sum of the masks over the number of their elements."""
    return sum(mask.sum() for mask in masks.values()) / sum(mask.numel() for mask in masks.values())


def masked_norm_ratio(masked: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]) -> torch.Tensor:
    """sum ||M * W||_F / sum ||W||_F over all layers."""
    return (sum(masked[n].float().norm() for n in masked)
            / sum(weights[n].detach().float().norm() for n in masked).clamp_min(1e-30))


def patch_loss(lm_loss: torch.Tensor, soft_density: torch.Tensor, target_density: float,
               masked_norm_ratio: torch.Tensor, step: int, total: int, l1: float, l2: float) -> torch.Tensor:
    """LM loss + l1 * |D - D*| - l2 * (1 - step / T) * ratio."""
    return lm_loss + l1 * (soft_density - target_density).abs() - l2 * (1 - step / total) * masked_norm_ratio


def _cosine_with_warmup(steps: int, warmup: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(steps - warmup, 1)))
    return factor


def refine(gates: TileGates, weights: dict[str, torch.Tensor],
           loss_fn: Callable[[dict[str, torch.Tensor]], torch.Tensor], steps: int, lr: float = 1e-3, l1: float = 5.0,
           l2: float = 0.5, warmup: int = 5, progress: bool = True) -> list[float]:
    """Train the gates' logits for `steps` steps; returns the total loss of every step.

    loss_fn gets {name: W * soft mask} (weights detached, the mask carrying the gradient) and returns the LM loss.
    AdamW without weight decay (decay would pull every decision toward undecided), cosine learning rate after
    `warmup` linear warm-up steps. The joint (pattern logits) or tile-only schedule follows `gates.joint`. Gates and
    weights must be on one device."""
    if steps <= 0:
        raise SparcError(f"option 'refine_steps' must be positive to refine a PATCH plan, got {steps}")
    frozen = {name: weights[name].detach() for name in gates.names}
    optimizer = torch.optim.AdamW(gates.parameters(), lr=lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine_with_warmup(steps, warmup))
    target, losses = 1.0 - gates.sparsity, []
    bar = tqdm(range(steps), desc="sparc: PATCH refinement", unit="step", disable=not progress)
    for step in bar:
        temps = schedules(step, steps, gates.sparsity, gates.joint)
        masks = {name: gates.soft_mask(name, *temps) for name in gates.names}
        masked = {name: frozen[name] * masks[name].to(frozen[name].dtype) for name in gates.names}
        density = soft_density(masks)
        loss = patch_loss(loss_fn(masked), density, target, masked_norm_ratio(masked, frozen), step, steps, l1, l2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}", density=f"{density.item():.3f}")
    return losses


def match_global_density(confidence: dict[str, torch.Tensor], dense_kept: dict[str, torch.Tensor],
                         sparse_kept: dict[str, torch.Tensor], target_density: float) -> dict[str, torch.Tensor]:
    """Dense-tile grids whose element-weighted overall density is as near `target_density` as single tiles allow.

    confidence (gN, gK) per layer: a tile is dense iff > 0 (logits, or prior scores minus a threshold); dense_kept /
    sparse_kept: elements a tile keeps when dense / when 2:4. Too dense: dense tiles are made 2:4 from the least
    confident up; too sparse: 2:4 tiles are made dense from the most confident down; a flip is taken only if it
    brings the density closer. The result is within half of one tile's (dense_kept - sparse_kept) of the target:
    for 128 x 128 tiles in a model of 10^8 weights, far below 1% (a tiny model with few tiles may miss 1%)."""
    names = list(confidence)
    conf = torch.cat([confidence[n].double().flatten() for n in names])
    gain = torch.cat([(dense_kept[n] - sparse_kept[n]).double().flatten() for n in names])
    dense = conf > 0
    kept = torch.where(dense, torch.cat([dense_kept[n].double().flatten() for n in names]),
                       torch.cat([sparse_kept[n].double().flatten() for n in names])).sum().item()
    target = target_density * sum(dense_kept[n].double().sum().item() for n in names)
    too_dense = kept > target
    candidates = torch.nonzero(dense if too_dense else ~dense).flatten()
    order = torch.argsort(conf[candidates], descending=not too_dense, stable=True)
    gains = gain.tolist()
    for i in candidates[order].tolist():
        flipped = kept - gains[i] if too_dense else kept + gains[i]
        if abs(flipped - target) < abs(kept - target):
            dense[i], kept = not too_dense, flipped
    sizes = [confidence[n].numel() for n in names]
    return {n: part.reshape(confidence[n].shape) for n, part in zip(names, torch.split(dense, sizes))}


def final_layer_plans(gates: TileGates, match_target: bool = True) -> dict[str, LayerPlan]:
    """Hard plans: tile dense iff its logit > 0, pattern = argmax; with match_target, corrected by
    `match_global_density` to the gates' target sparsity."""
    masks_24 = {name: gates.hard_mask_24(name) for name in gates.names}
    confidence = {name: gates.confidence(name) for name in gates.names}
    if match_target:
        dense_kept = {name: _tile_sizes(gates.shapes[name], gates.tile) for name in gates.names}
        sparse_kept = {name: _tile_sums(masks_24[name].double(), gates.tile) for name in gates.names}
        dense = match_global_density(confidence, dense_kept, sparse_kept, 1.0 - gates.sparsity)
    else:
        dense = {name: confidence[name] > 0 for name in gates.names}
    return {name: hybrid_plan(dense[name], masks_24[name], gates.tile,
                              {"method": "patch", "stage": "refined", "dense_tiles": int(dense[name].sum())})
            for name in gates.names}


def wanda_masks(weight: torch.Tensor, stats, sparsity: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(2:4 mask, per-row unstructured mask at `sparsity`) from the Wanda scores |W_ij| * ||X_j||."""
    scores = Wanda().scores(weight, stats)
    return mask_2of4(scores), mask_unstructured_rows(scores, sparsity)


def sparsegpt_hybrid(weight: torch.Tensor, hessian: torch.Tensor, dense_tiles: torch.Tensor, tile: int,
                     provenance: dict) -> LayerPlan:
    """SparseGPT 2:4 outside `dense_tiles`: every weight of the layer, dense tiles included, takes the OBS update."""
    protected = _expand_tiles(dense_tiles, tile, tuple(weight.shape))
    updated, kept, loss = sparsegpt_prune(weight, hessian, "2:4", protected=protected)
    plan = hybrid_plan(dense_tiles, kept, tile, {**provenance, "error": loss})
    plan.weight = updated
    return plan


def prior_layer(weight: torch.Tensor, stats, settings) -> LayerPlan:
    """The one-shot plan of one layer: dense tiles where the unstructured mask keeps most, 2:4 elsewhere."""
    if settings.prior == "wanda":
        mask_24, unstructured = wanda_masks(weight, stats, settings.sparsity)
        return prior_layer_plan(weight, mask_24, unstructured, settings.sparsity, settings.tile)
    hessian = scaled_hessian(stats)
    unstructured = sparsegpt_prune(weight, hessian, "unstructured", settings.sparsity)[1]
    scores = tile_scores(unstructured, settings.tile)
    dense = _top_tiles(scores, n_dense_tiles(scores.numel(), settings.sparsity))
    return sparsegpt_hybrid(weight, hessian, dense, settings.tile,
                            {"method": "patch", "stage": "prior", "dense_tiles": int(dense.sum())})


def refinement_start(plan: LayerPlan, weight: torch.Tensor, stats, sparsity: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(frozen weights, 2:4 mask of every tile) the refinement starts from: the prior's weights where it keeps
    them, the original ones where it prunes (what a tile turned dense gets back); the prior's 2:4 pattern in its
    2:4 tiles and the Wanda pattern in its dense tiles (what a tile turned 2:4 keeps)."""
    dense = _expand_tiles(torch.from_numpy(plan.formats == TileFormat.DENSE), plan.tile, tuple(weight.shape))
    frozen = weight if plan.weight is None else torch.where(plan.mask, plan.weight, weight)
    return frozen, torch.where(dense, wanda_masks(weight, stats, sparsity)[0], plan.mask)


class Patch:
    """method="patch": the one-shot prior (planned layer by layer, each layer calibrated on the already planned
    ones), then (refine_steps > 0) the learnable tile refinement on the LM loss of the calibration batches. CPU-sized
    runs refine the tile logits only (the 2:4 patterns stay the prior's). With the SparseGPT prior, the refined tiles
    get SparseGPT's weight update once more, layer by layer, as the prior did."""

    patterns = ("hybrid",)
    needs_calibration = True

    def plan_model(self, context) -> dict[str, LayerPlan]:
        settings = context.settings
        with_hessian = settings.prior == "sparsegpt"
        plans = context.plan_in_order(lambda name, weight, layer_stats: prior_layer(weight, layer_stats, settings),
                                      with_hessian, "sparc: PATCH prior")
        if settings.refine_steps == 0:
            return plans
        weights, stats = context.weights(), context.planned_stats()
        start = {name: refinement_start(plans[name], weights[name], stats[name], settings.sparsity) for name in plans}
        frozen = {name: pair[0] for name, pair in start.items()}
        gates = TileGates.from_prior_plans(plans, {name: pair[1] for name, pair in start.items()}, settings.sparsity,
                                           patterns=False)
        batches = itertools.cycle(context.calibration)
        with torch.enable_grad():
            refine(gates, frozen, lambda masked: context.lm_loss(masked, next(batches)), settings.refine_steps,
                   lr=settings.refine_lr)
        refined = final_layer_plans(gates)
        if not with_hessian:
            return refined

        def update_weights(name: str, weight: torch.Tensor, layer_stats) -> LayerPlan:
            dense = torch.from_numpy(refined[name].formats == TileFormat.DENSE)
            return sparsegpt_hybrid(weight, scaled_hessian(layer_stats), dense, settings.tile,
                                    {**refined[name].provenance, "weight_update": "sparsegpt"})

        return context.plan_in_order(update_weights, True, "sparc: PATCH weight update")
