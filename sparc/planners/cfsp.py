"""CFSP: coarse + fine activation-guided structured pruning of FFN channels (SEEDS.md, CFSP section).

A channel j of a block's FFN is row j of gate_proj and up_proj and column j of down_proj; sparsity p is the
fraction of FFN channels removed over all blocks. Attention is untouched.

- Coarse, per block l: I_l = sum over tokens of arccos(cos(h_in, h_out)) / pi (`coarse_importance`).
- Budget: z_l = (I_l - mean I) / 1e4 * (131072 / tokens), s_l = sigmoid(z_l), keep_l = s_l / mean(s) * (1 - p),
  deviations of s shrunk when max(s) / mean(s) * (1 - p) >= 1 (`keep_ratios`, `allocate_budget`).
- Fine, per channel: S_j = mean_i[A_ij / sum_i A_ij + |W_up,ji| / sum_i |W_up,ji| + |W_gate,ji| / sum_i |W_gate,ji|]
  * ||X_j||, A = |W_down| * ||X_j||, X the input of down_proj (`fine_scores`).
- Baselines: Wanda-SP (standardised column means of |W_down| * ||X||, one global threshold) and magnitude-SP.

The plans keep every weight DENSE with the removed rows / columns zero in the mask; a tile is ZERO only when all
its channels are removed, which needs the removed channels to fill whole tiles (rare: the top-k channels of a
block are scattered, so most tiles keep some channel).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from sparc.errors import SparcError
from sparc.ir import LayerPlan, TileFormat

from .context import block_of

PAPER_TOKENS = 131072  # 128 x 1024 calibration tokens, which the constant 1e4 of the budget rule assumes
SHRINK_MARGIN = 1.05


def coarse_importance(h_in: torch.Tensor, h_out: torch.Tensor) -> float:
    """Sum over tokens of the angle between a block's input and output hidden states, in units of pi."""
    h_in = h_in.detach().reshape(-1, h_in.shape[-1]).double()
    h_out = h_out.detach().reshape(-1, h_out.shape[-1]).double()
    cos = torch.nn.functional.cosine_similarity(h_in, h_out, dim=-1).clamp(-1.0, 1.0)
    return (torch.arccos(cos) / math.pi).sum().item()


class CoarseImportance:
    """Accumulates the coarse importance of one block over streamed calibration batches."""

    def __init__(self):
        self.value = 0.0
        self.tokens = 0

    def add(self, h_in: torch.Tensor, h_out: torch.Tensor) -> None:
        self.value += coarse_importance(h_in, h_out)
        self.tokens += h_in.numel() // h_in.shape[-1]


def shrink_factor(s: torch.Tensor, p: float) -> float:
    """f = mean * (1 / (1 - p) - 1) / (max - mean) / 1.05: after s <- mean + (s - mean) * f, max(s) / mean(s) *
    (1 - p) = (1 - p) + p / 1.05 < 1."""
    mean, top = s.mean().item(), s.max().item()
    return mean * (1.0 / (1.0 - p) - 1.0) / (top - mean) / SHRINK_MARGIN


def keep_ratios(importances: list[float], p: float, tokens: int) -> torch.Tensor:
    """keep_l per block, float64 (L,), mean exactly 1 - p.

    The importances are sums over `tokens` tokens; the paper's z = (I - mean I) / 1e4 was tuned on 131072 tokens, so
    z = (I - mean I) / 1e4 * (131072 / tokens), i.e. the same z for the same per-token angles at any token count."""
    if not 0 <= p < 1:
        raise SparcError(f"option 'sparsity' must be in [0, 1) for CFSP, got {p}")
    if tokens <= 0:
        raise SparcError(f"CFSP needs calibration tokens to weigh blocks, got {tokens}")
    importance = torch.tensor(importances, dtype=torch.float64)
    s = torch.sigmoid((importance - importance.mean()) / 1e4 * (PAPER_TOKENS / tokens))
    mean, top = s.mean(), s.max()
    if top / mean * (1 - p) >= 1 and top > mean:
        s = mean + (s - mean) * shrink_factor(s, p)
    return s / s.mean() * (1 - p)


def apportion_channels(ideal: list[float], total_kept: int, channels: int, tile: int) -> list[int]:
    """Per-block kept counts near `ideal`, in multiples of the tile within [tile, channels], summing to total_kept.

    Starts from round(ideal / tile) * tile, then moves one tile at a time: while the sum is short, the block furthest
    below its ideal gains a tile; while over, the block furthest above loses one (ties: the lower block index); only
    moves that bring the sum closer are taken. The total is exact whenever total_kept is reachable (channels a
    multiple of the tile and total_kept >= L * tile); otherwise it is as close as such moves get. With channels not
    a multiple of the tile, a block may also keep all `channels`."""
    floor, cap = min(tile, channels), channels
    kept = [min(max(round(x / tile) * tile, floor), cap) for x in ideal]
    while True:
        gap = total_kept - sum(kept)
        steps = [min(k + tile, cap) - k if gap > 0 else k - max(k - tile, floor) for k in kept]
        movable = [b for b, step in enumerate(steps) if 0 < step < 2 * abs(gap)]
        if not movable:
            return kept
        b = max(movable, key=lambda i: ((ideal[i] - kept[i]) if gap > 0 else (kept[i] - ideal[i]), -i))
        kept[b] += steps[b] if gap > 0 else -steps[b]


def removed_target(p: float, channels: int, blocks: int, tile: int) -> int:
    """Channels removed over all blocks: round(p * channels * L / tile) * tile."""
    return round(p * channels * blocks / tile) * tile


def allocate_budget(importances: list[float], p: float, tokens: int, channels: int, tile: int) -> list[int]:
    """Channels kept per block: near channels * keep_l in multiples of the tile, removing removed_target in all."""
    keep = keep_ratios(importances, p, tokens)
    ideal = (keep * channels).tolist()
    return apportion_channels(ideal, channels * len(ideal) - removed_target(p, channels, len(ideal), tile), channels,
                              tile)


def _normalised_over_rows(magnitude: torch.Tensor) -> torch.Tensor:
    """|M_ij| / sum_i |M_ij| for M (rows i, channels j); an all-zero column stays zero."""
    return magnitude / magnitude.sum(0, keepdim=True).clamp_min(torch.finfo(magnitude.dtype).tiny)


def fine_scores(w_up: torch.Tensor, w_gate: torch.Tensor | None, w_down: torch.Tensor,
                x_norms: torch.Tensor) -> torch.Tensor:
    """S_j (C,) float64. w_up, w_gate (C, D), w_down (D, C), x_norms (C,) = ||X_j|| of down_proj's input.

    Each term is normalised over the hidden index i, so each sums to 1 over i and S_j = 3 / D * ||X_j||
    (2 / D without a gate, for a non-gated FFN): the formula as SEEDS.md writes it ranks channels by ||X_j||."""
    x_norms = x_norms.double()
    a = w_down.detach().double().abs() * x_norms[None, :]
    terms = _normalised_over_rows(a) + _normalised_over_rows(w_up.detach().double().abs().T)
    if w_gate is not None:
        terms = terms + _normalised_over_rows(w_gate.detach().double().abs().T)
    return terms.mean(0) * x_norms


def wanda_sp_scores(w_down: torch.Tensor, x_norms: torch.Tensor) -> torch.Tensor:
    """Wanda-SP: column means of |W_down| * ||X_j||, standardised within the block (zero mean, unit std)."""
    score = (w_down.detach().double().abs() * x_norms.double()[None, :]).mean(0)
    return (score - score.mean()) / score.std().clamp_min(1e-30)


def magnitude_sp_scores(w_up: torch.Tensor, w_gate: torch.Tensor | None, w_down: torch.Tensor) -> torch.Tensor:
    """Magnitude-SP: ||W_up[j, :]||_2 + ||W_gate[j, :]||_2 + ||W_down[:, j]||_2, the L2 norm of every weight
    channel j touches (no activations); use with `global_keep_counts` or a uniform `allocate_budget`."""
    score = w_up.detach().double().norm(dim=1) + w_down.detach().double().norm(dim=0)
    if w_gate is not None:
        score = score + w_gate.detach().double().norm(dim=1)
    return score


def global_keep_counts(scores_per_block: list[torch.Tensor], p: float, tile: int) -> list[int]:
    """One threshold across blocks: the channels whose scores rank in the global top (1 - p) are kept; each block's
    count is then brought to multiples of the tile (`apportion_channels`), removing removed_target in all.
    All blocks must have the same channel count."""
    channels = scores_per_block[0].numel()
    if any(s.numel() != channels for s in scores_per_block):
        raise SparcError("CFSP blocks differ in FFN width: give blocks of one width to global_keep_counts")
    blocks = len(scores_per_block)
    removed = removed_target(p, channels, blocks, tile)
    every = torch.cat([s.double().flatten() for s in scores_per_block])
    order = torch.argsort(every, descending=True, stable=True)
    kept = torch.zeros_like(every, dtype=torch.bool)
    kept[order[: every.numel() - removed]] = True
    ideal = [float(n) for n in kept.reshape(blocks, channels).sum(1).tolist()]
    return apportion_channels(ideal, channels * blocks - removed, channels, tile)


def top_channels(scores: torch.Tensor, kept: int) -> torch.Tensor:
    """Bool (C,): the `kept` highest scores; ties go to the lower channel index."""
    keep = torch.zeros(scores.numel(), dtype=torch.bool)
    keep[torch.argsort(scores.double(), descending=True, stable=True)[:kept]] = True
    return keep


def channel_masks(keep: torch.Tensor, hidden: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Masks (gate (C, D), up (C, D), down (D, C)) in logical (out, in) layout for kept channels `keep` (C,)."""
    rows = keep[:, None].expand(keep.numel(), hidden).clone()
    return rows, rows.clone(), keep[None, :].expand(hidden, keep.numel()).clone()


def _formats_from_mask(mask: torch.Tensor, tile: int) -> np.ndarray:
    """DENSE tiles, ZERO where a tile keeps no element."""
    n, k = mask.shape
    padded = torch.nn.functional.pad(mask, (0, -k % tile, 0, -n % tile))
    any_kept = padded.reshape(padded.shape[0] // tile, tile, padded.shape[1] // tile, tile).any(3).any(1)
    return np.where(any_kept.numpy(), int(TileFormat.DENSE), int(TileFormat.ZERO)).astype(np.uint8)


def cfsp_layer_plans(keep: torch.Tensor, hidden: int, tile: int, names: dict[str, str], method: str = "cfsp",
                     transposed: dict[str, bool] | None = None) -> dict[str, LayerPlan]:
    """LayerPlans for one block's FFN. names maps the roles "up", "down" and optionally "gate" to parameter names;
    transposed maps names stored (in, out) to True (GPT-2's Conv1D). method: "cfsp", "wanda-sp" or "magnitude-sp"."""
    gate, up, down = channel_masks(keep, hidden)
    masks = {"gate": gate, "up": up, "down": down}
    transposed = transposed or {}
    provenance = {"method": method, "channels_kept": int(keep.sum())}
    return {name: LayerPlan(tuple(masks[role].shape), tile, _formats_from_mask(masks[role], tile), masks[role],
                            transposed=transposed.get(name, False), provenance=dict(provenance))
            for role, name in names.items()}


def ffn_roles(context) -> list[dict[str, object]]:
    """Per decoder block with an FFN: {"gate"?: node, "up": node, "down": node}. The FFN is the module named
    mlp / ffn / feed_forward (or of a class named *MLP*); down is its last linear in graph order, up (and
    gate, by name) the ones whose output width is down's input width."""
    found = []
    for nodes in context.blocks().values():
        ffn = [n for n in nodes if _in_ffn(n)]
        if len(ffn) < 2:
            continue
        down = ffn[-1]
        width = down.meta["sparc"].logical_weight.shape[1]
        roles = {"down": down}
        for node in ffn[:-1]:
            if node.meta["sparc"].logical_weight.shape[0] == width:
                roles["gate" if "gate" in node.meta["sparc"].name else "up"] = node
        if "up" in roles:
            found.append(roles)
    return found


def _in_ffn(node) -> bool:
    stack = (node.meta.get("nn_module_stack") or {}).values()
    return any(path.rsplit(".", 1)[-1] in ("mlp", "ffn", "feed_forward") or "MLP" in cls.__name__
               for path, cls in stack)


def _weights(roles) -> dict[str, torch.Tensor]:
    return {role: node.meta["sparc"].logical_weight.float().cpu() for role, node in roles.items()}


def _plans(roles, keep: torch.Tensor, tile: int, method: str) -> dict[str, LayerPlan]:
    hidden = roles["down"].meta["sparc"].logical_weight.shape[0]
    names = {role: node.meta["sparc"].name for role, node in roles.items()}
    transposed = {node.meta["sparc"].name: node.meta["sparc"].transposed for node in roles.values()}
    return cfsp_layer_plans(keep, hidden, tile, names, method, transposed)


class Cfsp:
    """method="cfsp": coarse block budgets from the angular distance of block inputs and outputs, fine channel
    scores within each block; sparsity = fraction of FFN channels removed."""

    patterns = ("channels",)
    needs_calibration = True

    def plan_model(self, context) -> dict[str, LayerPlan]:
        importance: dict[str, CoarseImportance] = {}
        stats = context.input_stats(block_hook=lambda block, h_in, h_out:
                                    importance.setdefault(block, CoarseImportance()).add(h_in, h_out))
        blocks = ffn_roles(context)
        values = [importance[block_of(roles["down"])].value for roles in blocks]
        tokens = importance[block_of(blocks[0]["down"])].tokens
        channels = blocks[0]["down"].meta["sparc"].logical_weight.shape[1]
        kept = allocate_budget(values, context.settings.sparsity, tokens, channels, context.settings.tile)
        plans = {}
        for roles, count in zip(blocks, kept):
            w = _weights(roles)
            scores = fine_scores(w["up"], w.get("gate"), w["down"], stats[roles["down"].meta["sparc"].name].norms)
            plans.update(_plans(roles, top_channels(scores, count), context.settings.tile, "cfsp"))
        return plans


class WandaSP:
    """method="wanda-sp": standardised |W_down| * ||X|| channel scores, one global threshold."""

    patterns = ("channels",)
    needs_calibration = True
    label = "wanda-sp"

    def scores(self, weights, stats) -> torch.Tensor:
        return wanda_sp_scores(weights["down"], stats.norms)

    def plan_model(self, context) -> dict[str, LayerPlan]:
        stats = context.input_stats() if self.needs_calibration else {}
        blocks = ffn_roles(context)
        scores = [self.scores(_weights(roles), stats.get(roles["down"].meta["sparc"].name)) for roles in blocks]
        kept = global_keep_counts(scores, context.settings.sparsity, context.settings.tile)
        plans = {}
        for roles, block_scores, count in zip(blocks, scores, kept):
            plans.update(_plans(roles, top_channels(block_scores, count), context.settings.tile, self.label))
        return plans


class MagnitudeSP(WandaSP):
    """method="magnitude-sp": channel weight norms of up, gate and down, one global threshold."""

    needs_calibration = False
    label = "magnitude-sp"

    def scores(self, weights, stats) -> torch.Tensor:
        return magnitude_sp_scores(weights["up"], weights.get("gate"), weights["down"])
