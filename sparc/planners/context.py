"""What model-level planners (PATCH, CFSP and its baselines) may ask of the graph they plan.

Per-layer planners see one weight and its input statistics; model-level planners see a `PlanContext`: the
planned linears, their weights, input statistics of all of them in one calibration run, the decoder blocks
and their hidden states, and the language-model loss of the graph with some weights replaced.
"""
from __future__ import annotations

import dataclasses
import re

import torch
import torch.fx

from sparc.errors import SparcError
from sparc.graph import graph_inputs, placeholders
from sparc.passes.collect_stats import InputStats, run_lockstep


def module_paths(node: torch.fx.Node) -> list[str]:
    """The modules a node ran inside, outermost first, as qualified names."""
    stack = node.meta.get("nn_module_stack") or {}
    return [re.sub(r"^L\['(self|fn|mod)'\]\.?", "", path) for path, _ in stack.values()]


def block_of(node: torch.fx.Node) -> str | None:
    """The innermost enclosing module that is an item of a module list (a decoder block), e.g. model.layers.3."""
    blocks = [path for path in module_paths(node) if re.search(r"\.\d+$", path)]
    return blocks[-1] if blocks else None


@dataclasses.dataclass
class PlanContext:
    gm: torch.fx.GraphModule
    example_inputs: list
    linears: list[torch.fx.Node]  # the linears to plan, in graph order
    settings: object
    calibration: list

    @property
    def names(self) -> list[str]:
        return [node.meta["sparc"].name for node in self.linears]

    def weights(self) -> dict[str, torch.Tensor]:
        """{name: logical (N, K) float32 weight}."""
        return {node.meta["sparc"].name: node.meta["sparc"].logical_weight.float().cpu() for node in self.linears}

    def blocks(self) -> dict[str, list[torch.fx.Node]]:
        """{decoder block: its planned linears}, in graph order."""
        found: dict[str, list[torch.fx.Node]] = {}
        for node in self.linears:
            found.setdefault(block_of(node) or "", []).append(node)
        return found

    def block_boundaries(self) -> list[tuple[str, torch.fx.Node, torch.fx.Node]]:
        """(block, node whose value enters it, node whose value leaves it) for every decoder block, in order:
        a block's output is its last node read from outside it; its input is the previous block's output
        (the first block: what its first node reads first)."""
        members: dict[str, list[torch.fx.Node]] = {}
        for node in self.gm.graph.nodes:
            block = block_of(node)
            if block is not None and node.op in ("call_function", "call_method", "call_module"):
                members.setdefault(block, []).append(node)
        boundaries, previous = [], None
        for block, nodes in members.items():
            inside = set(nodes)
            leaving = [n for n in nodes if any(user not in inside for user in n.users)]
            if not leaving:
                raise SparcError(f"cannot find the output of decoder block '{block}' in the graph")
            entering = previous if previous is not None else nodes[0].all_input_nodes[0]
            boundaries.append((block, entering, leaving[-1]))
            previous = leaving[-1]
        return boundaries

    def input_stats(self, with_hessian: bool = False, block_hook=None) -> dict[str, InputStats]:
        """Input statistics of every planned linear over the calibration, weights unchanged; `block_hook(block,
        h_in, h_out)` is called per block and batch with its (tokens, hidden) input and output states."""
        stats = {}

        def accumulate(node, envs):
            site = node.meta["sparc"]
            stats[site.name] = InputStats.empty(site.logical_weight.shape[1], with_hessian)
            for env in envs:
                stats[site.name].add(env[site.input], site.name)

        after = self._block_observers(block_hook) if block_hook is not None else {}
        run_lockstep(self.gm, self.example_inputs, self.calibration, {node: accumulate for node in self.linears},
                     after)
        return stats

    def plan_in_order(self, plan_layer, needs_hessian: bool = False, desc: str = "sparc: planning") -> dict:
        """{name: LayerPlan} from `plan_layer(name, weight, stats)`, called layer by layer in graph order, each
        layer's statistics taken with the earlier layers holding their planned weights (see plan_layers)."""
        from sparc.passes.plan_layers import plan_in_order

        return plan_in_order(self.gm, self.example_inputs, self.linears, plan_layer, self.calibration or None,
                             needs_hessian, desc)

    def planned_stats(self) -> dict[str, InputStats]:
        """{name: input statistics (no Hessian)} each linear was last planned with by `plan_in_order`."""
        return {node.meta["sparc"].name: node.meta["sparc"].stats for node in self.linears}

    def _block_observers(self, block_hook) -> dict:
        """After-hooks that keep each block's input (it dies inside the block) and report it with the output."""
        kept: dict[str, list[torch.Tensor]] = {}
        actions: dict[torch.fx.Node, list] = {}

        def keep(block, node, envs):
            kept[block] = [env[node].reshape(-1, env[node].shape[-1]) for env in envs]

        def report(block, node, envs):
            for h_in, env in zip(kept.pop(block), envs):
                block_hook(block, h_in, env[node].reshape(-1, env[node].shape[-1]))

        for block, entering, leaving in self.block_boundaries():
            actions.setdefault(entering, []).append(lambda node, envs, block=block: keep(block, node, envs))
            actions.setdefault(leaving, []).append(lambda node, envs, block=block: report(block, node, envs))

        def run_all(node, envs):
            for action in actions[node]:
                action(node, envs)

        return {node: run_all for node in actions}

    def lm_loss(self, weights: dict[str, torch.Tensor], item) -> torch.Tensor:
        """Next-token cross-entropy of the graph on calibration `item`, with the planned linears' weights replaced
        by `weights` ({name: logical (N, K)}); gradients flow into `weights` only."""
        args = [a.detach() if isinstance(a, torch.Tensor) else a for a in graph_inputs(self.gm, self.example_inputs, item)]
        position = {node: i for i, node in enumerate(placeholders(self.gm))}
        for node in self.linears:
            site = node.meta["sparc"]
            if site.weight_node not in position:
                raise SparcError(f"layer '{site.name}' does not read its weight from a graph input: cannot refine it")
            value = weights[site.name].to(site.weight.dtype)
            args[position[site.weight_node]] = value.t() if site.transposed else value
        ids = item["input_ids"] if isinstance(item, dict) else item[0] if isinstance(item, (tuple, list)) else item
        outputs = self.gm(*args)
        logits = [o for o in outputs if isinstance(o, torch.Tensor) and o.dim() == 3 and o.shape[:2] == ids.shape]
        if not logits:
            raise SparcError("the model's outputs hold no (batch, sequence, vocabulary) logits: PATCH refinement "
                             "needs a causal language model")
        return torch.nn.functional.cross_entropy(logits[-1][:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
