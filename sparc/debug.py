"""Human-readable views of plans and rewritten graphs: per-layer tables and graph dumps."""
from __future__ import annotations

from pathlib import Path

import torch.fx

from .ir import Plan

HEADER = ("layer", "shape (N x K)", "method", "sparsity", "format", "packed bytes")


def render_table(rows: list[tuple], header=HEADER) -> str:
    rows = [tuple(str(c) for c in header)] + [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plan_rows(plan: Plan) -> list[tuple]:
    return [(name, f"{layer.shape[0]} x {layer.shape[1]}", layer.provenance.get("method", plan.method),
             f"{layer.sparsity:.1%}", layer.describe(), "") for name, layer in plan.layers.items()]


def plan_table(plan: Plan) -> str:
    return render_table(plan_rows(plan))


def site_rows(linears: list[torch.fx.Node]) -> list[tuple]:
    rows = []
    for node in linears:
        site = node.meta["sparc"]
        n, k = site.logical_weight.shape
        if site.packed is None:
            rows.append((site.name, f"{n} x {k}", "-", "0.0%", "dense (not planned)",
                         site.weight.numel() * site.weight.element_size()))
            continue
        layer = site.layer_plan
        rows.append((site.name, f"{n} x {k}", layer.provenance.get("method", "?"), f"{layer.sparsity:.1%}",
                     site.packed.layout + (f" g{site.packed.group}" if site.packed.group else ""), site.packed.nbytes))
    return rows


def layer_table(linears: list[torch.fx.Node]) -> str:
    return render_table(site_rows(linears))


def dump_graph(gm: torch.fx.GraphModule, linears: list[torch.fx.Node], folder: str) -> Path:
    """Write the rewritten graph's code and the per-layer table to `folder`; returns the graph file."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    index = len(list(out.glob("graph_*.py")))
    path = out / f"graph_{index}.py"
    path.write_text(gm.code)
    (out / f"layers_{index}.txt").write_text(layer_table(linears) + "\n")
    return path
