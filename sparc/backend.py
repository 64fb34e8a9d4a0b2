"""The torch.compile backend: `torch.compile(model, backend="sparc", options={...})`.

Registered through the `torch_dynamo_backends` entry point (torch loads it by name, once); importing sparc
does not register it. With no options it changes no weight and hands the graph to Inductor.
"""
from __future__ import annotations

import logging

import torch

from sparc.passes.find_linears import find_linears
from sparc.passes.pack_weights import pack_weights
from sparc.passes.rewrite_linears import rewrite_linears

from .debug import dump_graph, layer_table
from .errors import SparcError
from .options import Options
from .pipeline import plan_graph, split_first

log = logging.getLogger("sparc")

_PLANS_BY_OPTIONS: dict[int, tuple[dict, object]] = {}  # id(options) -> (options, plan): planned once per compile


def check_inference(what: str) -> None:
    if torch.is_grad_enabled():
        raise SparcError(f"sparc is inference-only and {what} has planned layers, which have no backward: call the "
                         "compiled model under torch.no_grad() or torch.inference_mode()")


def plan_from_options(options: dict, opts: Options, gm, example_inputs):
    cached = _PLANS_BY_OPTIONS.get(id(options))
    if cached is not None:
        return cached[1]
    batches = split_first(opts.calibration)[1] if opts.calibration is not None else None
    plan = plan_graph(gm, example_inputs, opts.settings, batches)
    _PLANS_BY_OPTIONS[id(options)] = (options, plan)
    return plan


def sparc_backend(gm: torch.fx.GraphModule, example_inputs, options: dict | None = None):
    opts = Options.parse(options)
    plan = opts.plan
    if opts.settings is not None:
        check_inference("option 'method'")
        plan = plan_from_options(options, opts, gm, example_inputs)
    linears = find_linears(gm, example_inputs)
    if plan is not None and plan.layers:
        check_inference("the plan")
        pack_weights(linears, plan)
        count = rewrite_linears(gm, linears)
        log.info("sparc: %d of %d linears rewritten to sparc::linear", count, len(linears))
    if opts.dump:
        dump_graph(gm, linears, opts.dump)
    log.debug("sparc layers:\n%s", layer_table(linears))
    if opts.inner == "eager":
        return gm.forward
    from torch._inductor.compile_fx import compile_fx
    return compile_fx(gm, example_inputs)
