"""Public functions: sparc.plan and sparc.reference."""
from __future__ import annotations

import copy

import torch

from sparc.kernels import unpack
from sparc.passes.pack_weights import pack_layer

from .ir import Plan
from .options import PlanSettings
from .planners import PLANNERS
from .pipeline import capture_graph, plan_graph, split_first


def plan(model: torch.nn.Module, calibration, method: str = "wanda", sparsity: float | None = None,
         pattern: str | None = None, **settings) -> Plan:
    """Plan every linear of `model`. `calibration` is an iterable of model inputs (tensors, tuples of
    positional arguments, or dicts of keyword arguments), all of one shape; planners that need no
    statistics use only its first item, to trace the model. Settings: see PlanSettings."""
    settings = PlanSettings(method=method, sparsity=sparsity, pattern=pattern, **settings)
    first, batches = split_first(calibration)
    gm, example_inputs = capture_graph(model, first)
    return plan_graph(gm, example_inputs, settings, batches if PLANNERS[settings.method].needs_calibration else None)


def reference(model: torch.nn.Module, plan: Plan) -> torch.nn.Module:
    """An eager copy of `model` whose planned weights are exactly what the plan's packed layouts represent."""
    ref = copy.deepcopy(model)
    params = dict(ref.named_parameters(remove_duplicate=False))
    plan.check(params)
    with torch.no_grad():
        for name, layer in plan.layers.items():
            weight = unpack(pack_layer(name, layer, params[name])).to(params[name].dtype)
            params[name].copy_(weight.t() if layer.transposed else weight)
    return ref
