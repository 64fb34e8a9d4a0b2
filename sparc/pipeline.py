"""The pass pipeline, shared by `sparc.plan` and the backend."""
from __future__ import annotations

import itertools
import logging

import torch
import torch.fx

from sparc.passes.find_linears import find_linears
from sparc.passes.plan_layers import plan_layers

from .errors import SparcError
from .graph import keep_source_names
from .ir import Plan
from .options import PlanSettings

log = logging.getLogger("sparc")


def plan_graph(gm: torch.fx.GraphModule, example_inputs, settings: PlanSettings, calibration) -> Plan:
    """find_linears -> plan_layers (statistics gathered as it goes) on a graph that accepts the calibration."""
    linears = find_linears(gm, example_inputs)
    plan = plan_layers(gm, example_inputs, linears, settings, calibration)
    skipped = sorted({node.meta["sparc"].name for node in linears} - set(plan.layers))
    if skipped:
        log.warning("sparc: method '%s' leaves these linears dense (option 'exclude', a weight shared with a "
                    "non-linear op such as a tied embedding, or outside what the method prunes): %s",
                    settings.method, ", ".join(skipped))
    return plan


def capture_graph(model: torch.nn.Module, item) -> tuple[torch.fx.GraphModule, list]:
    """Trace `model` called on one calibration item into a single static Dynamo graph."""
    graphs = []

    def grab(gm, example_inputs):
        keep_source_names(gm)
        graphs.append((gm, list(example_inputs)))
        return gm.forward

    compiled = torch.compile(model, backend=grab, fullgraph=True, dynamic=False)
    try:
        with torch.no_grad():
            call_model(compiled, item)
    except torch._dynamo.exc.Unsupported as error:
        raise SparcError(f"sparc.plan needs the model to trace into one graph; Dynamo stopped at: "
                         f"{str(error).splitlines()[0]}") from None
    finally:
        # Each capture adds a cache entry to the model's forward code: without this, the 9th plan of one model
        # hits Dynamo's recompile limit. Other compiled instances of the class recompile once on their next call.
        torch._dynamo.eval_frame.remove_from_cache(model)
    return graphs[-1]


def call_model(model, item):
    if isinstance(item, dict):
        return model(**item)
    if isinstance(item, (tuple, list)):
        return model(*item)
    return model(item)


def split_first(calibration):
    """(first item, iterable of all items); raises on empty or missing calibration."""
    if calibration is None:
        raise SparcError("option 'calibration' is missing: give an iterable of model inputs")
    items = iter(calibration)
    try:
        first = next(items)
    except StopIteration:
        raise SparcError("option 'calibration' is empty: give at least one batch of model inputs") from None
    return first, itertools.chain([first], items)
