"""pack_weights: check the plan against the graph's weights and pack each planned weight once.

Runs on: the Dynamo graph after find_linears, with a Plan (made by plan_layers or loaded).
Checks: every planned weight that the graph reads has the shape, dtype and content the plan was made for
(PlanMismatch otherwise). Packs in the parameter's dtype and device; the result is cached on the Plan, so
recompilations for new shapes reuse it.
Writes: `LinearSite.packed` (a `PackedWeight`) and `LinearSite.layer_plan`.
"""
from __future__ import annotations

import dataclasses
import logging

import torch
import torch.fx

from sparc.errors import PlanMismatch, SparcError
from sparc.ir import LayerPlan, Plan, TileFormat
from sparc.kernels import PackedWeight, pack

log = logging.getLogger("sparc")

LAYOUTS = {TileFormat.DENSE: "dense", TileFormat.NV24: "nv24", TileFormat.INT4: "int4",
           TileFormat.NV24_INT4: "nv24_int4", TileFormat.ZERO: "zero"}


def layout_of(name: str, layer: LayerPlan) -> str:
    """One tile format: its layout (INT4 with whole blocks dropped: bsr_int4); several: hybrid."""
    formats = layer.format_set
    if len(formats) > 1:
        return "hybrid"
    layout = LAYOUTS[formats.pop()]
    if layer.block_n:
        if layout != "int4":
            raise SparcError(f"layer '{name}' is block-sparse (block_n={layer.block_n}) but its tiles are {layout}: "
                             "block-sparse storage is for INT4 layers")
        return "bsr_int4"
    return layout


def pack_layer(name: str, layer: LayerPlan, stored_weight: torch.Tensor) -> PackedWeight:
    """Pack one planned weight (given in its stored layout) in its own dtype, on its own device."""
    logical = stored_weight.detach().t() if layer.transposed else stored_weight.detach()
    weight = layer.weight if layer.weight is not None else logical
    layout = layout_of(name, layer)
    options = {"formats": layer.formats, "tile": layer.tile} if layout == "hybrid" else {}
    if layer.block_n:
        options["block_n"] = layer.block_n
    if layer.scales is not None:
        options.update(scales=layer.scales, mins=layer.mins)
    packed = pack(layout, weight.float().cpu(), layer.mask, stored_weight.dtype, layer.group, **options)
    return packed.to(stored_weight.device)


def pack_weights(linears: list[torch.fx.Node], plan: Plan) -> None:
    in_graph = {node.meta["sparc"].name: node.meta["sparc"].weight for node in linears}
    planned = [name for name in plan.layers if name in in_graph]
    if plan.layers and not planned:
        raise PlanMismatch(f"plan names parameter '{next(iter(plan.layers))}', which this model does not have: "
                           "the plan was made for another model")
    plan.check({name: in_graph[name] for name in planned}, names=planned)
    for node in linears:
        site = node.meta["sparc"]
        if site.name not in plan.layers:
            continue
        key = (site.name, str(site.weight.device), site.weight.dtype)
        if key not in plan.packed_cache:
            plan.packed_cache[key] = pack_layer(site.name, plan.layers[site.name], site.weight)
        node.meta["sparc"] = dataclasses.replace(site, layer_plan=plan.layers[site.name],
                                                 packed=plan.packed_cache[key])
