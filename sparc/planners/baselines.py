"""Baseline planners: dense (no pruning), magnitude and Wanda (|W_ij| * ||X_j||), 2:4 or unstructured.

No weight is updated; the plan is a mask and a tile format per layer: 2:4 layers are NV24 (NV24_INT4 with
bits=4), unstructured layers stay DENSE with zeros stored (INT4 with bits=4).
"""
import torch

from sparc.ir import LayerPlan, TileFormat, uniform_layer

from .masks import mask_2of4, mask_unstructured_rows


def layer_format(pattern: str, bits: int) -> TileFormat:
    if pattern == "2:4":
        return TileFormat.NV24_INT4 if bits == 4 else TileFormat.NV24
    return TileFormat.INT4 if bits == 4 else TileFormat.DENSE


class Dense:
    patterns = ("dense",)
    needs_calibration = False

    def plan_layer(self, weight: torch.Tensor, stats, settings) -> LayerPlan:
        mask = torch.ones(weight.shape, dtype=torch.bool)
        fmt = layer_format("dense", settings.bits)
        return uniform_layer(weight.shape, fmt, mask, settings.tile, group=settings.quant_group,
                             provenance={"method": "dense"})


class Magnitude:
    patterns = ("2:4", "unstructured")
    needs_calibration = False

    def scores(self, weight: torch.Tensor, stats) -> torch.Tensor:
        return weight.abs()

    def plan_layer(self, weight: torch.Tensor, stats, settings) -> LayerPlan:
        scores = self.scores(weight, stats)
        if settings.pattern == "2:4":
            mask = mask_2of4(scores)
        else:
            mask = mask_unstructured_rows(scores, settings.sparsity)
        fmt = layer_format(settings.pattern, settings.bits)
        kept = (weight * mask).square().sum() / weight.square().sum().clamp_min(1e-30)
        return uniform_layer(weight.shape, fmt, mask, settings.tile, group=settings.quant_group,
                             provenance={"method": settings.method, "pattern": settings.pattern,
                                         "kept_energy": round(kept.item(), 6)})


class Wanda(Magnitude):
    needs_calibration = True

    def scores(self, weight: torch.Tensor, stats) -> torch.Tensor:
        return weight.abs() * stats.norms[None, :]
