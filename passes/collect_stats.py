"""collect_stats: run the graph over the calibration inputs and accumulate per-linear input statistics.

Runs on: the Dynamo graph after find_linears.
Accumulates, never storing activations: the squared norm of each input feature over all tokens (||X_j||^2,
for Wanda-style scores) and the token count. Raises on NaN/Inf activations, naming the layer.
Writes: `LinearSite.stats` (an `InputStats`).
"""
from __future__ import annotations

import dataclasses

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

    @property
    def norms(self) -> torch.Tensor:
        return self.sq_norms.sqrt().float()

    def add(self, x: torch.Tensor, layer: str) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).double()
        if not torch.isfinite(x).all():
            raise SparcError(f"calibration activations entering layer '{layer}' contain NaN or Inf: check the "
                             "calibration batches and the weights before it")
        self.sq_norms += x.square().sum(0).cpu()
        if self.hessian is not None:
            self.hessian += (x.T @ x).cpu()
        self.tokens += x.shape[0]


class _StatsInterpreter(torch.fx.Interpreter):
    def __init__(self, gm, stats: dict[torch.fx.Node, InputStats]):
        super().__init__(gm)
        self.stats = stats

    def run_node(self, node):
        if node in self.stats:
            self.stats[node].add(self.env[node.meta["sparc"].input], node.meta["sparc"].name)
        return super().run_node(node)


def collect_stats(gm: torch.fx.GraphModule, example_inputs, linears: list[torch.fx.Node], calibration) -> None:
    stats = {node: InputStats(torch.zeros(node.meta["sparc"].logical_weight.shape[1], dtype=torch.float64))
             for node in linears}
    interpreter = _StatsInterpreter(gm, stats)
    batches = 0
    with torch.no_grad():
        for item in tqdm(calibration, desc="sparc: calibrating", unit="batch"):
            interpreter.run(*graph_inputs(gm, example_inputs, item))
            batches += 1
    if batches == 0:
        raise SparcError("option 'calibration' is empty: give at least one batch of model inputs")
    for node in linears:
        node.meta["sparc"] = dataclasses.replace(node.meta["sparc"], stats=stats[node])
