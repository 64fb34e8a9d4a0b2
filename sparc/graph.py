"""What sparc reads off a Dynamo FX graph: where each placeholder came from, and how to feed it new inputs.

Dynamo hands the backend the real parameters as placeholders; each placeholder's `meta["grapharg"]` (private)
names its source, e.g. `L['self']._modules['mlp']._parameters['weight']` or `L['args'][0].size()[1]`.
This module is the one place that reads it.
"""
from __future__ import annotations

import re

import torch
import torch.fx

from .errors import SparcError

_SOURCE_TOKEN = re.compile(r"\._(?:modules|parameters|buffers)\['([^']+)'\]|\.(\w+)|\[(\d+)\]|\['([^']+)'\]")


def source_name(node: torch.fx.Node) -> str | None:
    if "source_name" not in node.meta:
        grapharg = node.meta.get("grapharg")
        return None if grapharg is None else grapharg.source.name
    return node.meta["source_name"]


def keep_source_names(gm: torch.fx.GraphModule) -> None:
    """Copy each placeholder's source name into its meta: Dynamo drops `grapharg` once the backend returns."""
    for node in placeholders(gm):
        node.meta["source_name"] = source_name(node)


# a forward wrapped as (*args, **kwargs) (transformers' decorators): the module is its first positional argument
_WRAPPED_MODULE = re.compile(r"L\['args'\]\[0\](?=\._(?:modules|parameters|buffers)\[)")


def module_root(source: str) -> str | None:
    """The part of `source` that names the traced module, or None for sources outside it."""
    for root in ("L['self']", "L['fn']", "L['mod']"):
        if source.startswith(root):
            return root
    return "L['args'][0]" if _WRAPPED_MODULE.match(source) else None


def qualified_name(source: str) -> str | None:
    """`L['self']._modules['mlp']._parameters['weight']` -> `mlp.weight`; None for sources outside the module."""
    root = module_root(source)
    if root is None:
        return None
    return ".".join(next(g for g in m.groups() if g is not None) for m in _SOURCE_TOKEN.finditer(source[len(root):]))


def placeholders(gm: torch.fx.GraphModule) -> list[torch.fx.Node]:
    return [n for n in gm.graph.nodes if n.op == "placeholder"]


def is_user_input(source: str | None) -> bool:
    return source is not None and qualified_name(source) is None and source.startswith("L[")


def frame_locals(item, user_sources: list[str], module_first: bool = False) -> dict:
    """The frame locals a calibration item stands for: a tensor is the first positional argument,
    a dict the keyword arguments, a tuple the positional arguments (after the module where the traced frame is
    a wrapper that takes it as its first argument)."""
    before = (None,) if module_first else ()
    if isinstance(item, dict):
        return {"args": before, "kwargs": item, **item}
    args = tuple(item) if isinstance(item, (tuple, list)) else (item,)
    named = sorted({re.match(r"L\['([^']+)'\]", s).group(1) for s in user_sources} - {"args", "kwargs"})
    return {"args": before + args, "kwargs": {}, **dict(zip(named, args))}


def graph_inputs(gm: torch.fx.GraphModule, example_inputs: list, item) -> list:
    """Values for every placeholder of `gm` when the model is called with calibration `item`: parameters and
    buffers keep their example values, user inputs (and sizes derived from them) come from `item`."""
    nodes = placeholders(gm)
    sources = [source_name(n) for n in nodes]
    user = [s for s in sources if is_user_input(s)]
    module_first = any(s is not None and module_root(s) == "L['args'][0]" for s in sources)
    local_values = frame_locals(item, user, module_first)
    values = []
    for node, source, example in zip(nodes, sources, example_inputs):
        if not is_user_input(source):
            values.append(example)
            continue
        try:
            value = eval(source, {"L": local_values})  # the source is an expression over the frame locals
        except (KeyError, IndexError, TypeError, AttributeError):
            raise SparcError(f"calibration batch has no value for graph input {source}: pass batches shaped like "
                             "the model call (a tensor, a tuple of positional arguments or a dict of keyword "
                             "arguments)") from None
        if isinstance(example, torch.Tensor) and isinstance(value, torch.Tensor) and value.shape != example.shape:
            raise SparcError(f"calibration input {source} has shape {tuple(value.shape)} but the graph was traced "
                             f"for {tuple(example.shape)}: calibration batches must all have the traced shape (the "
                             "first batch for sparc.plan, the first call for backend options)")
        values.append(value)
    return values
