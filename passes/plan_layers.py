"""plan_layers: ask the chosen planner for a LayerPlan of every plannable linear and assemble the Plan.

Runs on: the Dynamo graph after find_linears, over the calibration batches (when the planner needs them).
Layers are planned in graph order during one lockstep run (collect_stats.run_lockstep): at each linear the
statistics of its input over all batches are gathered, the planner decides, and the linear then runs with
the weights the plan represents, so later layers are calibrated on the outputs of already-planned ones.
A weight is planned unless its name contains an `exclude` substring or the parameter also feeds something
other than a linear (a tied embedding, say): pruning it would change that too.
Writes: `LinearSite.stats` and `LinearSite.layer_plan`; returns the `Plan` (keyed by qualified name).
"""
from __future__ import annotations

import dataclasses

import torch
import torch.fx
from tqdm.auto import tqdm

from sparc.errors import SparcError
from sparc.ir import Plan, weight_signature
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


class _SequentialPlanner:
    def __init__(self, settings):
        self.settings = settings
        self.planner = PLANNERS[settings.method]()
        self.layers, self.signature = {}, {}
        self.progress = None

    def plan(self, node: torch.fx.Node, envs: list[dict] | None) -> None:
        site = node.meta["sparc"]
        weight = site.logical_weight.float().cpu()
        stats = None
        if envs is not None:
            stats = InputStats.empty(weight.shape[1], getattr(self.planner, "needs_hessian", False))
            for env in envs:
                stats.add(env[site.input], site.name)
        layer = self.planner.plan_layer(weight, stats, self.settings)
        layer.transposed = site.transposed
        self.layers[site.name] = layer
        self.signature[site.name] = weight_signature(site.weight)
        node.meta["sparc"] = dataclasses.replace(site, stats=stats, layer_plan=layer)
        if envs is not None:
            planned = unpack(pack_layer(site.name, layer, site.weight)).to(site.weight.dtype)
            for arg, value in planned_weight_args(node, site, planned).items():
                for env in envs:
                    env[arg] = value
        if self.progress is not None:
            self.progress.update()


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
    sequential = _SequentialPlanner(settings)
    with tqdm(total=len(targets), desc=f"sparc: planning ({settings.method})", unit="layer") as progress:
        sequential.progress = progress
        if calibration is None:
            for node in targets:
                sequential.plan(node, None)
        else:
            run_lockstep(gm, example_inputs, calibration, {node: sequential.plan for node in targets})
    return Plan(sequential.layers, sequential.signature, settings.method, settings.as_dict())
