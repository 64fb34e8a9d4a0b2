"""plan_layers: ask the chosen planner for a LayerPlan of every plannable linear and assemble the Plan.

Runs on: the Dynamo graph after find_linears (and collect_stats for planners that need statistics).
A weight is planned unless its name contains an `exclude` substring or the parameter also feeds something
other than a linear (a tied embedding, say): pruning it would change that too.
Writes: `LinearSite.layer_plan`; returns the `Plan` (keyed by qualified parameter name).
"""
from __future__ import annotations

import dataclasses

import torch
import torch.fx
from tqdm.auto import tqdm

from sparc.errors import SparcError
from sparc.ir import Plan, weight_signature
from sparc.planners import PLANNERS

from .find_linears import TRANSPOSE_OPS


def shared_with_other_ops(linears: list[torch.fx.Node]) -> set[str]:
    """Names of weights that some node other than a linear (or a transpose feeding one) also reads."""
    linear_set = set(linears)

    def feeds_linears_only(user: torch.fx.Node) -> bool:
        return user in linear_set or (user.target in TRANSPOSE_OPS and set(user.users) <= linear_set)

    return {node.meta["sparc"].name for node in linears
            if node.meta["sparc"].weight_node is not None
            and not all(feeds_linears_only(user) for user in node.meta["sparc"].weight_node.users)}


def check_finite(name: str, weight: torch.Tensor) -> None:
    if not torch.isfinite(weight).all():
        raise SparcError(f"weight of layer '{name}' contains NaN or Inf: fix the checkpoint before planning")


def plan_layers(linears: list[torch.fx.Node], settings) -> Plan:
    planner = PLANNERS[settings.method]()
    excluded = shared_with_other_ops(linears)
    layers, signature = {}, {}
    for node in tqdm(linears, desc=f"sparc: planning ({settings.method})", unit="layer"):
        site = node.meta["sparc"]
        if site.name in excluded or any(part in site.name for part in settings.exclude) or site.name in layers:
            continue
        weight = site.logical_weight.float().cpu()
        check_finite(site.name, weight)
        layer = planner.plan_layer(weight, site.stats, settings)
        layer.transposed = site.transposed
        layers[site.name] = layer
        signature[site.name] = weight_signature(site.weight)
        node.meta["sparc"] = dataclasses.replace(site, layer_plan=layer)
    return Plan(layers, signature, settings.method, settings.as_dict())
