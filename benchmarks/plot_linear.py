"""Speedup over cuBLAS bf16 against M, a panel per layout, from the markdown `benchmarks/linear.py --out` writes.

    python benchmarks/plot_linear.py linear.md --out linear.png

A panel per layout, a line per shape (dotted: the shapes without targets), a hollow marker where sparc rebuilt
the weight for cuBLAS (r), and each sparc format's target (`linear.TARGETS`) dashed.
"""
from __future__ import annotations

import argparse
import re

import linear

HEADING = re.compile(r"^#+ (\d+) x (\d+)\s*$")
CELL = re.compile(r"^[\d.]+ \(([\d.]+)x\)( r)?")
NAMES = {title: name for name, title in linear.LAYOUTS.items()}


def speedups(markdown: str) -> dict:
    """{(N, K): {layout: {M: (speedup vs cuBLAS, rebuilt)}}} from each shape's first table (time per layer);
    a cell without a time (the layout cannot run the shape) or whose output check failed (*) is left out."""
    shapes, shape, header = {}, None, None
    for line in markdown.splitlines():
        if heading := HEADING.match(line):
            shape, header = (int(heading.group(1)), int(heading.group(2))), None
        elif shape is not None and shape not in shapes and line.startswith("| M |"):
            header = [NAMES.get(title.strip(), title.strip()) for title in line.strip("|").split("|")[1:]]
        elif header is not None and re.match(r"^\| \d+ \|", line):
            m, *cells = (cell.strip() for cell in line.strip("|").split("|"))
            for name, cell in zip(header, cells):
                if (found := CELL.match(cell)) and not cell.endswith("*"):
                    rows = shapes.setdefault(shape, {}).setdefault(name, {})
                    rows[int(m)] = (float(found.group(1)), bool(found.group(2)))
        elif header is not None and shape in shapes:
            shape, header = None, None
    return shapes


def plot(shapes: dict, path: str, title: str = ""):
    """A panel per layout, a line per shape (the target shapes solid), the layout's target dashed."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt, ticker

    layouts = [name for name in linear.LAYOUTS if any(name in rows for rows in shapes.values())]
    columns = min(3, len(layouts))
    rows = -(-len(layouts) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.4 * columns, 3.4 * rows), sharex=True, sharey=True,
                             squeeze=False)
    for ax, name in zip(axes.flat, layouts):
        for i, (shape, points_of) in enumerate(shapes.items()):
            points = points_of.get(name, {})
            ms = sorted(points)
            style = "-" if shape in linear.TARGET_SHAPES else ":"
            ax.plot(ms, [points[m][0] for m in ms], style, color=f"C{i}", label=f"{shape[0]} x {shape[1]}")
            for m in ms:
                ax.plot(m, points[m][0], "o", color=f"C{i}", markerfacecolor="none" if points[m][1] else f"C{i}")
        if name in linear.TARGETS:
            ax.plot(linear.TARGET_MS, linear.TARGETS[name], "k--", linewidth=1.2, label="target")
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_title(linear.LAYOUTS[name], fontsize="medium")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xticks(linear.TARGET_MS)
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.grid(True, which="major", linewidth=0.3)
    for ax in axes.flat[len(layouts):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("M (x rows)")
    for ax in axes[:, 0]:
        ax.set_ylabel("speedup vs cuBLAS bf16")
    with_target = [ax for ax, name in zip(axes.flat, layouts) if name in linear.TARGETS]
    handles, labels = (with_target or list(axes.flat))[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize="small")
    fig.suptitle(f"{title}\n(hollow: sparc rebuilt the weight for cuBLAS; dotted: shapes without targets)")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("table", help="markdown written by benchmarks/linear.py --out")
    parser.add_argument("--out", required=True, help="image to write (png, svg, pdf)")
    parser.add_argument("--title", default="", help="the figure's title (device, run)")
    args = parser.parse_args()
    with open(args.table) as f:
        shapes = speedups(f.read())
    if not shapes:
        raise SystemExit(f"{args.table}: no time table of benchmarks/linear.py found")
    plot(shapes, args.out, args.title)


if __name__ == "__main__":
    main()
