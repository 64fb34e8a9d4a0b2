"""rewrite_linears: replace each packed linear with a `sparc::linear` call on its packed tensors.

Runs on: the Dynamo graph after pack_weights.
The packed tensors become buffers of the GraphModule read by get_attr nodes. AOT autograd lifts every buffer
of a Dynamo graph into a static input and looks up its Dynamo source, so each buffer is given a constant
source under its own name (static inputs are also what CUDA graphs leave in place). The original weight
placeholder is left without users.
Reads: `LinearSite.packed`; keeps `node.meta["sparc"]` on the new node.
"""
from __future__ import annotations

import re

import torch
import torch.fx
from torch._dynamo.source import ConstantSource

import sparc.codegen.ops  # noqa: F401  (registers sparc::linear)


def add_weight_buffer(gm: torch.fx.GraphModule, name: str, tensor: torch.Tensor) -> torch.fx.Node:
    gm.register_buffer(name, tensor)
    if hasattr(gm, "_param_name_to_source"):
        gm._param_name_to_source[name] = ConstantSource(name)
    return gm.graph.get_attr(name)


def rewrite_linears(gm: torch.fx.GraphModule, linears: list[torch.fx.Node]) -> int:
    rewritten = 0
    for node in linears:
        site = node.meta["sparc"]
        if site.packed is None:
            continue
        prefix = "sparc_" + re.sub(r"\W", "_", site.name)
        with gm.graph.inserting_before(node):
            inputs = [add_weight_buffer(gm, f"{prefix}_{i}", t) for i, t in enumerate(site.packed.tensors)]
            call = gm.graph.call_function(torch.ops.sparc.linear.default,
                                          (site.input, inputs, site.bias, site.packed.layout, site.packed.dims))
        call.meta.update(node.meta)
        node.replace_all_uses_with(call)
        gm.graph.erase_node(node)
        rewritten += 1
    gm.graph.lint()
    gm.recompile()
    return rewritten
