"""plan_layers: ask the chosen planner for a LayerPlan of every plannable linear and assemble the Plan.

Runs on: the Dynamo graph after find_linears, over the calibration batches (when the planner needs them).
Layers are planned in graph order during one lockstep run (collect_stats.run_lockstep): at each linear the
statistics of its input over all batches are gathered, the planner decides, and the linear then runs with
the weights the plan represents, so later layers are calibrated on the outputs of already-planned ones.
A weight is planned unless its name contains an `exclude` substring or the parameter also feeds something
other than a linear (a tied embedding, say): pruning it would change that too.
`plan_in_order` is that loop for any per-layer function; model-level planners reach it through
`PlanContext.plan_in_order` (PATCH plans its prior and its final weights with it).
Writes: `LinearSite.stats` (without the Hessian) and `LinearSite.layer_plan`; returns the `Plan` (keyed by
qualified name).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch
import torch.fx
from tqdm.auto import tqdm

from sparc.errors import SparcError
from sparc.ir import LayerPlan, Plan, weight_signature
from sparc.kernels import unpack
from sparc.planners import PLANNERS

from .collect_stats import InputStats, run_lockstep
from .find_linears import TRANSPOSE_OPS
from .pack_weights import pack_layer


def shared_with_other_ops(linears: list[torch.fx.Node]) -> set[str]:
    """Names of weights that some node other than a linear (or a transpose feeding one) also reads."""
    linear_set = set(linears)

    def feeds_linears_only(user: torch.fx.Node) -> bool:
        return user in linear_set or (user.target in TRANSPOSE_OPS and set(user.users) <= linear_set)

    return {node.meta["sparc"].name for node in linears
            if node.meta["sparc"].weight_node is not None
            and not all(feeds_linears_only(user) for user in node.meta["sparc"].weight_node.users)}


def plannable(linears: list[torch.fx.Node], settings) -> list[torch.fx.Node]:
    shared, seen, chosen = shared_with_other_ops(linears), set(), []
    for node in linears:
        name = node.meta["sparc"].name
        if name in shared or name in seen or any(part in name for part in settings.exclude):
            continue
        seen.add(name)
        chosen.append(node)
    return chosen


def check_finite(name: str, weight: torch.Tensor) -> None:
    if not torch.isfinite(weight).all():
        raise SparcError(f"weight of layer '{name}' contains NaN or Inf: fix the checkpoint before planning")


def planned_weight_args(node: torch.fx.Node, site, planned: torch.Tensor) -> dict[torch.fx.Node, torch.Tensor]:
    """The linear's weight argument(s) with the planned (N, K) weight in the layout the node reads."""
    values = {}
    for arg in node.args:
        if arg is site.weight_node:
            values[arg] = planned.t() if site.transposed else planned
        elif isinstance(arg, torch.fx.Node) and arg.target in TRANSPOSE_OPS and arg.args[0] is site.weight_node:
            values[arg] = planned.t()
    return values


LayerPlanner = Callable[[str, torch.Tensor, "InputStats | None"], LayerPlan]  # (name, (N, K) weight, stats)


class _SequentialPlanner:
    def __init__(self, plan_layer: LayerPlanner, needs_hessian: bool):
        self.plan_layer, self.needs_hessian = plan_layer, needs_hessian
        self.layers: dict[str, LayerPlan] = {}
        self.progress = None
        self.stats_by_input: dict[torch.fx.Node, InputStats] = {}

    def input_stats(self, site, envs: list[dict]) -> InputStats:
        """Statistics of the linear's input over all batches, shared by linears reading the same value (q, k, v)."""
        if site.input not in self.stats_by_input:
            stats = InputStats.empty(site.logical_weight.shape[1], self.needs_hessian)
            for env in envs:
                stats.add(env[site.input], site.name)
            self.stats_by_input = {site.input: stats}
        return self.stats_by_input[site.input]

    def plan(self, node: torch.fx.Node, envs: list[dict] | None) -> None:
        site = node.meta["sparc"]
        weight = site.logical_weight.float().cpu()
        stats = self.input_stats(site, envs) if envs is not None else None
        layer = self.plan_layer(site.name, weight, stats)
        layer.transposed = site.transposed
        self.layers[site.name] = layer
        kept_stats = None if stats is None else dataclasses.replace(stats, hessian=None)  # K x K each: not kept
        node.meta["sparc"] = dataclasses.replace(site, stats=kept_stats, layer_plan=layer)
        if envs is not None:
            planned = unpack(pack_layer(site.name, layer, site.weight)).to(site.weight.dtype)
            for arg, value in planned_weight_args(node, site, planned).items():
                for env in envs:
                    env[arg] = value
        if self.progress is not None:
            self.progress.update()


def plan_in_order(gm, example_inputs, targets: list[torch.fx.Node], plan_layer: LayerPlanner, calibration,
                  needs_hessian: bool = False, desc: str = "sparc: planning") -> dict[str, LayerPlan]:
    """Plan `targets` one by one in graph order; with calibration, each layer's statistics come from the model
    whose earlier layers already hold their planned weights. Returns {name: LayerPlan}."""
    sequential = _SequentialPlanner(plan_layer, needs_hessian)
    with tqdm(total=len(targets), desc=desc, unit="layer") as progress:
        sequential.progress = progress
        if calibration is None:
            for node in targets:
                sequential.plan(node, None)
        else:
            run_lockstep(gm, example_inputs, calibration, {node: sequential.plan for node in targets})
    return sequential.layers


def plan_model(gm, example_inputs, targets: list[torch.fx.Node], settings, calibration) -> Plan:
    """Model-level planners decide all their layers at once from a PlanContext."""
    from sparc.planners.context import PlanContext

    planner = PLANNERS[settings.method]()
    context = PlanContext(gm, example_inputs, targets, settings, list(calibration or []))
    layers = planner.plan_model(context)
    sites = {node.meta["sparc"].name: node for node in targets}
    for name, layer in layers.items():
        node = sites[name]
        layer.transposed = node.meta["sparc"].transposed
        node.meta["sparc"] = dataclasses.replace(node.meta["sparc"], layer_plan=layer)
    signature = {name: weight_signature(sites[name].meta["sparc"].weight) for name in layers}
    return Plan(layers, signature, settings.method, settings.as_dict())


def plan_layers(gm: torch.fx.GraphModule, example_inputs, linears: list[torch.fx.Node], settings,
                calibration) -> Plan:
    targets = plannable(linears, settings)
    for node in targets:
        check_finite(node.meta["sparc"].name, node.meta["sparc"].logical_weight)
    if hasattr(PLANNERS[settings.method], "plan_model"):
        return plan_model(gm, example_inputs, targets, settings, calibration)
    planner = PLANNERS[settings.method]()
    layers = plan_in_order(gm, example_inputs, targets,
                           lambda name, weight, stats: planner.plan_layer(weight, stats, settings), calibration,
                           getattr(planner, "needs_hessian", False), f"sparc: planning ({settings.method})")
    signature = {node.meta["sparc"].name: weight_signature(node.meta["sparc"].weight) for node in targets}
    return Plan(layers, signature, settings.method, settings.as_dict())
