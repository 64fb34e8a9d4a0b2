"""collect_stats: run the graph over all calibration batches, node by node, and accumulate input statistics.

Runs on: the Dynamo graph after find_linears.
The graph runs in lockstep over the batches: each node runs for every batch before the next node does, so a
planner can decide a linear from the statistics of all batches at that point and change its weight before
the rest of the graph runs: later layers then see the already-pruned earlier ones (as Wanda's and
SparseGPT's reference code do). Values die after their last use and the run stops after the last node
anyone asked about, so memory stays bounded by the live activations of all batches.
`InputStats` accumulates, never storing activations: ||X_j||^2 per input feature and, when asked, X^T X; it
raises on NaN/Inf activations, naming the layer. Used by plan_layers (per-layer planners, which write
`LinearSite.stats`) and by PlanContext.input_stats (model-level planners).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch
import torch.fx
from tqdm.auto import tqdm

from sparc.errors import SparcError
from sparc.graph import graph_inputs


@dataclasses.dataclass
class InputStats:
    sq_norms: torch.Tensor  # float64 (in_features,): sum over tokens of x_j^2
    tokens: int = 0
    hessian: torch.Tensor | None = None  # float64 (in_features, in_features): sum over tokens of x x^T, if asked

    @classmethod
    def empty(cls, in_features: int, with_hessian: bool) -> InputStats:
        hessian = torch.zeros(in_features, in_features, dtype=torch.float64) if with_hessian else None
        return cls(torch.zeros(in_features, dtype=torch.float64), 0, hessian)

    @property
    def norms(self) -> torch.Tensor:
        return self.sq_norms.sqrt().float()

    def add(self, x: torch.Tensor, layer: str) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float()
        if not torch.isfinite(x).all():
            raise SparcError(f"calibration activations entering layer '{layer}' contain NaN or Inf: check the "
                             "calibration batches and the weights before it")
        self.sq_norms += x.double().square().sum(0).cpu()
        if self.hessian is not None:
            self.hessian += (x.T @ x).double().cpu()
        self.tokens += x.shape[0]


NodeHook = Callable[[torch.fx.Node, list[dict]], None]


def last_uses(gm: torch.fx.GraphModule) -> dict[torch.fx.Node, list[torch.fx.Node]]:
    """{node: values whose last use is that node}."""
    seen, dying = set(), {}
    for node in reversed(gm.graph.nodes):
        for value in node.all_input_nodes:
            if value not in seen:
                seen.add(value)
                dying.setdefault(node, []).append(value)
    return dying


def run_lockstep(gm: torch.fx.GraphModule, example_inputs, calibration, before: dict[torch.fx.Node, NodeHook],
                 after: dict[torch.fx.Node, NodeHook] | None = None, desc: str = "sparc: calibrating") -> None:
    """Run `gm` over every calibration batch at once, node by node; `before[node](node, envs)` runs before
    `node`, `after[node](node, envs)` once it ran, with the environments (node -> value) of all batches.
    Stops after the last hooked node."""
    after = after or {}
    batches = [graph_inputs(gm, example_inputs, item) for item in calibration]
    if not batches:
        raise SparcError("option 'calibration' is empty: give at least one batch of model inputs")
    interpreters = [torch.fx.Interpreter(gm, garbage_collect_values=False) for _ in batches]
    for interpreter, args in zip(interpreters, batches):
        interpreter.args_iter = iter(args)
    dying, remaining = last_uses(gm), len(set(before) | set(after))
    with torch.no_grad():
        for node in tqdm(list(gm.graph.nodes), desc=desc, unit="node", leave=False):
            envs = [interpreter.env for interpreter in interpreters]
            if node in before:
                before[node](node, envs)
            if node.op == "output":
                break
            for interpreter in interpreters:
                interpreter.env[node] = interpreter.run_node(node)
            if node in after:
                after[node](node, envs)
            remaining -= node in before or node in after
            for env in envs:
                for value in dying.get(node, ()):
                    del env[value]
            if remaining == 0:
                break
