"""find_linears: mark every linear layer of a Dynamo FX graph.

Runs on: the Dynamo graph (torch-level ops) or an aten-level graph.
Finds: `torch._C._nn.linear` / `F.linear` / `aten.linear` (weight out x in), `nn.Linear` call_module nodes,
and `addmm` / `mm` whose right operand is a parameter stored in x out (GPT-2's Conv1D) or its transpose.
Writes: `node.meta["sparc"] = LinearSite(...)` naming the weight by its qualified parameter name.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.fx
import torch.nn.functional as F

from sparc.graph import placeholders, qualified_name, source_name

LINEAR_OPS = {torch._C._nn.linear, F.linear, torch.ops.aten.linear.default}
ADDMM_OPS = {torch.addmm, torch.ops.aten.addmm.default}
MM_OPS = {torch.mm, torch.matmul, torch.ops.aten.mm.default}
TRANSPOSE_OPS = {torch.t, torch.ops.aten.t.default}


@dataclasses.dataclass(frozen=True)
class LinearSite:
    name: str  # qualified name of the weight parameter
    weight: torch.Tensor  # the parameter itself, in its stored layout
    weight_node: torch.fx.Node | None  # the node that reads it (None for nn.Linear call_module nodes)
    transposed: bool  # stored (in_features, out_features)
    input: torch.fx.Node
    bias: torch.fx.Node | None
    stats: object = None
    layer_plan: object = None
    packed: object = None

    @property
    def logical_weight(self) -> torch.Tensor:
        """(out_features, in_features)."""
        return self.weight.detach().t() if self.transposed else self.weight.detach()


def parameters_by_node(gm: torch.fx.GraphModule, example_inputs) -> dict[torch.fx.Node, tuple]:
    """{node: (qualified name, parameter, node)} for every node that reads a parameter."""
    found = {}
    for node, value in zip(placeholders(gm), example_inputs):
        name = qualified_name(source_name(node) or "")
        if isinstance(value, torch.nn.Parameter) and name:
            found[node] = (name, value, node)
    for node in gm.graph.find_nodes(op="get_attr"):
        value = getattr(gm, node.target, None) if "." not in node.target else gm.get_parameter(node.target)
        if isinstance(value, torch.nn.Parameter):
            found[node] = (node.target, value, node)
    return found


def _site_for(node: torch.fx.Node, params, gm) -> LinearSite | None:
    if node.op == "call_module" and isinstance(gm.get_submodule(node.target), torch.nn.Linear):
        module = gm.get_submodule(node.target)
        return LinearSite(f"{node.target}.weight", module.weight, None, False, node.args[0], None)
    if node.op != "call_function":
        return None
    args = list(node.args)
    if node.target in LINEAR_OPS:
        bias = args[2] if len(args) > 2 else node.kwargs.get("bias")
        return LinearSite(*params[args[1]], False, args[0], bias) if args[1] in params else None
    if node.target in ADDMM_OPS and len(args) == 3 and not node.kwargs:
        bias, x, weight = args
    elif node.target in MM_OPS and len(args) == 2:
        bias, x, weight = None, *args
    else:
        return None
    if weight in params and params[weight][1].dim() == 2:
        return LinearSite(*params[weight], True, x, bias)
    if isinstance(weight, torch.fx.Node) and weight.target in TRANSPOSE_OPS and weight.args[0] in params:
        return LinearSite(*params[weight.args[0]], False, x, bias)
    return None


def find_linears(gm: torch.fx.GraphModule, example_inputs) -> list[torch.fx.Node]:
    params = parameters_by_node(gm, example_inputs)
    linears = []
    for node in gm.graph.nodes:
        site = _site_for(node, params, gm)
        if site is not None:
            node.meta["sparc"] = site
            linears.append(node)
    return linears
