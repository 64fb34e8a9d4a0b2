"""One linear layer, every weight format side by side: cuBLAS bf16, cuSPARSELt 2:4, tinygemm int4 and sparc's.

    python benchmarks/linear.py [--shapes 4096x4096,14336x4096] [--m 1,16] [--layouts cublas,nv24,hybrid30]
                                [--L 8] [--replays 30] [--min-mb 200] [--out table.md]
    TRITON_INTERPRET=1 python benchmarks/linear.py --smoke      # CPU: tiny shapes, every sparc output checked

Method (as the anchors). Per shape (N x K): L distinct random bf16 weights, the same for every layout, and one
bf16 input x (M, K) per M, the same for every layout. Each layout packs the L weights: 2:4 masks by magnitude,
int4 asymmetric group 128, bsr_int4 block_n 16 with half the blocks dropped at random, hybrid tile 128 with a
random 30% of the tiles DENSE and the rest NV24 (or every tile DENSE). Where L packed weights total less than
--min-mb (default 4x the L2 cache), the layout packs more copies of them, at distinct addresses, until they
reach it: no replay finds its weights in L2. The matmuls run back to back in one CUDA graph, captured after a
warm-up on a side stream (Triton compiles on the first call); every replay is timed with CUDA events and the
median over replays divided by the number of matmuls is the time per layer. GB/s counts the bytes a layer must
move: its packed weight, x and the output, plus, where sparc's tuned choice rebuilds the weight for cuBLAS
(`kernels.rebuild`, marked r), the bf16 weight it writes out and reads back (4 bytes per weight). TFLOP/s
counts the dense 2 * M * N * K. Device ceilings come from the same run: a 1 GiB device-to-device copy (bytes
read + written / time) and a bf16 8192^3 matmul. Before timing, each layout's output for the first weight is
checked against x @ W.T, W the weight the layout stores (for sparc unpack(pack(W))): a miss marks the cell
with *. A layout that cannot run a shape says why in its cell. The last section puts each sparc format against
its speedup target (TARGETS) on the Llama-3-8B shapes, with the share of the binding ceiling each layer reaches
and the share its target would need.
sparc's launch configurations come from the package's per-GPU table (`kernels/autotune.py`); with
SPARC_AUTOTUNE=1 that check call tunes each new (kernel, layout, shape, M bucket) first and writes the table.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Callable

if "--smoke" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernels are defined

import torch
import torch.nn.functional as F
import triton


def import_sparc():
    try:
        from sparc import kernels
    except ImportError:  # not installed: map the repository's folders to the package names
        root = Path(__file__).resolve().parents[1]
        package = types.ModuleType("sparc")
        package.__path__ = [str(root / "sparc"), str(root)]
        sys.modules["sparc"] = package
        from sparc import kernels
    from sparc.ir import TileFormat
    from sparc.planners.masks import mask_2of4
    return kernels, TileFormat, mask_2of4


kernels, TileFormat, mask_2of4 = import_sparc()

SHAPES = [(4096, 4096), (1024, 4096), (14336, 4096), (4096, 14336), (5000, 3000)]
SMOKE_SHAPES = [(96, 80), (130, 64), (136, 256)]
MS = [1, 16, 64, 256, 2048]
GROUP, BLOCK_N, TILE, BF16 = 128, 16, 128, torch.bfloat16
LAYOUTS = {"cublas": "cuBLAS bf16", "cusparselt": "cuSPARSELt 2:4", "tinygemm": "tinygemm int4 g128",
           "nv24": "sparc nv24", "int4": "sparc int4 g128", "nv24_int4": "sparc nv24_int4 g128",
           "bsr_int4": "sparc bsr_int4 g128 50%", "hybrid30": "sparc hybrid 30% dense", "hybrid_dense":
           "sparc hybrid all dense"}
SPARC = ["nv24", "int4", "nv24_int4", "bsr_int4", "hybrid30", "hybrid_dense"]
TOLERANCE = 1e-2  # |out - x @ W.T| <= TOLERANCE * (|x| @ |W|.T), as the kernel tests
# speedup over cuBLAS bf16 that each sparc format aims for at TARGET_MS, on each of TARGET_SHAPES
TARGET_MS = (1, 16, 64, 256, 2048)
TARGET_SHAPES = ((4096, 4096), (14336, 4096), (4096, 14336))
TARGETS = {"int4": (3.2, 2.8, 1.8, 1.0, 0.9), "nv24": (1.6, 1.5, 1.3, 1.0, 1.0), "nv24_int4": (4.3, 3.5, 2.0, 1.0, 0.9),
           "bsr_int4": (6.0, 5.0, 3.0, 1.5, 1.6), "hybrid30": (1.35, 1.3, 1.2, 1.0, 1.0), "hybrid_dense": (0.95,) * 5}
# share of the dense products a format keeps: 2:4 halves them, half the BSR blocks are dropped, HYBRID 30% keeps
# its DENSE tiles whole and halves the rest
KEPT_PRODUCTS = {"int4": 1.0, "nv24": 0.5, "nv24_int4": 0.5, "bsr_int4": 0.5, "hybrid30": 0.65, "hybrid_dense": 1.0}


@dataclasses.dataclass
class Operand:
    """One packed weight: run(x) = x @ W.T, the bytes it stores, the format's ideal bytes, and W (for the check)."""
    run: Callable[[torch.Tensor], torch.Tensor]
    nbytes: int
    ideal: float
    weight: Callable[[], torch.Tensor]
    packed: object = None  # sparc's PackedWeight


def nbytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def ideal_int4(nk: float) -> float:
    return nk / 2 + 2 * 2 * nk / GROUP


def ideal_nv24(nk: float) -> float:
    return nk / 2 * 2 + nk / 8


def ideal_nv24_int4(nk: float) -> float:
    return nk / 4 + nk / 8 + 2 * 2 * (nk / 2) / GROUP


def edges(total: int, step: int) -> torch.Tensor:
    """Size of each block of `step` along a dimension of `total` (the last one may be short)."""
    return (total - step * torch.arange(-(-total // step))).clamp(max=step).double()


def random_grid(rows: int, cols: int, share: float, gen: torch.Generator) -> torch.Tensor:
    """Bool (rows, cols): exactly round(share * rows * cols) True, at random places."""
    chosen = torch.zeros(rows * cols, dtype=torch.bool)
    chosen[torch.randperm(rows * cols, generator=gen)[: round(share * rows * cols)]] = True
    return chosen.reshape(rows, cols)


def expand_grid(grid: torch.Tensor, block_n: int, block_k: int, shape, device) -> torch.Tensor:
    """Element mask (N, K) of a (block grid) bool mask."""
    full = grid.repeat_interleave(block_n, 0).repeat_interleave(block_k, 1)
    return full[: shape[0], : shape[1]].to(device)


def build_cublas(w, gen) -> Operand:
    return Operand(lambda x: F.linear(x, w), nbytes(w), 2 * w.numel(), lambda: w)


def build_cusparselt(w, gen) -> Operand:
    torch.sparse.SparseSemiStructuredTensor._FORCE_CUTLASS = False  # CUTLASS 2:4 refuses sm90
    masked = w * mask_2of4(w.abs())
    sparse = torch.sparse.to_sparse_semi_structured(masked)
    stored = nbytes(getattr(sparse, "packed", None), getattr(sparse, "meta", None))
    return Operand(lambda x: F.linear(x, sparse), stored, ideal_nv24(w.numel()), lambda: masked)


def build_tinygemm(w, gen) -> Operand:
    """torch >= 2.5 formats: uint8 (N, K/2) nibbles, even input in the high one; (K/g, N, 2) scales and zeros,
    w = (q - 8) * scale + zero."""
    n, k = w.shape
    if k % GROUP or n % 8:
        raise ValueError(f"needs K % {GROUP} == 0 and N % 8 == 0")
    q, scales, mins = kernels.int4.quantize(w.float(), GROUP, BF16)
    packed = torch.ops.aten._convert_weight_to_int4pack((q[:, 0::2] << 4 | q[:, 1::2]).contiguous(), 8)
    zeros = mins.float() + 8 * scales.float()
    scales_zeros = torch.stack([scales.float(), zeros], dim=-1).transpose(0, 1).contiguous().to(BF16)

    def weight():
        s, z = (scales_zeros[..., i].T.float()[..., None] for i in (0, 1))
        return ((q.float() - 8).reshape(n, k // GROUP, GROUP) * s + z).reshape(n, k)

    return Operand(lambda x: torch.ops.aten._weight_int4pack_mm(x, packed, GROUP, scales_zeros),
                   nbytes(packed, scales_zeros), ideal_int4(w.numel()), weight)


def sparc_operand(layout, w, mask, ideal, group=0, **options) -> Operand:
    try:
        packed = kernels.pack(layout, w, mask, BF16, group, **options)
    except Exception as e:  # pack on the CPU instead (slower) and say so
        print(f"    {layout}: pack on {w.device} {failure(e)}; packing on the CPU", flush=True)
        packed = kernels.pack(layout, w.cpu(), mask.cpu(), BF16, group, **options).to(w.device)
    tensors, dims = packed.tensors, packed.dims
    return Operand(lambda x: kernels.triton_matmul(x, layout, tensors, dims, None), packed.nbytes, ideal,
                   lambda: kernels.unpack(packed), packed)


def build_bsr_int4(w, gen) -> Operand:
    """Half the (16 x 128) blocks dropped at random. Ideal: the kept blocks' int4 values, scales and minimums
    (unpadded), a column index per kept block and the row pointers."""
    rows, widths = edges(w.shape[0], BLOCK_N), edges(w.shape[1], GROUP)
    kept = random_grid(len(rows), len(widths), 0.5, gen)
    payload = (kept * (rows[:, None] * widths[None, :] / 2 + 2 * 2 * rows[:, None])).sum().item()
    ideal = payload + int(kept.sum()) * (2 if len(widths) < 2**15 else 4) + 4 * (len(rows) + 1)
    return sparc_operand("bsr_int4", w, expand_grid(kept, BLOCK_N, GROUP, w.shape, w.device), ideal, GROUP,
                         block_n=BLOCK_N)


def build_hybrid(dense_share: float):
    def build(w, gen) -> Operand:
        """Tile 128, a random `dense_share` of the tiles DENSE, the others NV24 (2:4 by magnitude). Ideal: the
        sum of the tiles' ideals (the 9-byte-per-tile grid counts as overhead)."""
        rows, widths = edges(w.shape[0], TILE), edges(w.shape[1], TILE)
        dense = random_grid(len(rows), len(widths), dense_share, gen)
        formats = torch.where(dense, int(TileFormat.DENSE), int(TileFormat.NV24)).to(torch.uint8)
        area = rows[:, None] * widths[None, :]
        ideal = torch.where(dense, 2 * area, ideal_nv24(area)).sum().item()
        mask = expand_grid(dense, TILE, TILE, w.shape, w.device) | mask_2of4(w.abs())
        return sparc_operand("hybrid", w, mask, ideal, formats=formats, tile=TILE)
    return build


BUILDERS = {  # layout -> build(weight, generator) -> Operand
    "cublas": build_cublas, "cusparselt": build_cusparselt, "tinygemm": build_tinygemm,
    "nv24": lambda w, gen: sparc_operand("nv24", w, mask_2of4(w.abs()), ideal_nv24(w.numel())),
    "int4": lambda w, gen: sparc_operand("int4", w, torch.ones_like(w, dtype=torch.bool), ideal_int4(w.numel()),
                                         GROUP),
    "nv24_int4": lambda w, gen: sparc_operand("nv24_int4", w, mask_2of4(w.abs()), ideal_nv24_int4(w.numel()),
                                              GROUP),
    "bsr_int4": build_bsr_int4, "hybrid30": build_hybrid(0.3), "hybrid_dense": build_hybrid(1.0)}


def check(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> str | None:
    """None when out matches x @ weight.T within TOLERANCE, else the largest error."""
    x, weight = x.float(), weight.float()
    error = (out.float() - x @ weight.T).abs()
    bad = error > TOLERANCE * (x.abs() @ weight.abs().T) + 1e-6
    return f"max error {error.max().item():.3g}" if bad.any() or out.isnan().any() else None


def median_ms(fn, repeats: int, cuda: bool) -> float:
    """Median milliseconds of fn() over `repeats` runs after an untimed one: CUDA events, or the wall clock."""
    fn()
    times = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def time_per_layer(operands, x, replays: int, graphs: bool) -> float:
    """Microseconds per layer: the median replay of all the matmuls back to back, divided by their number."""
    def layers():
        for op in operands:
            op.run(x)

    if not graphs:  # CPU smoke run: plain wall-clock timing
        return median_ms(layers, replays, False) * 1e3 / len(operands)
    side = torch.cuda.Stream()  # warm-up and capture off the default stream, as the CUDA graph docs say
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            layers()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        layers()
    return median_ms(graph.replay, replays, True) * 1e3 / len(operands)


def ceilings() -> tuple[float, float] | str:
    """(copy GB/s, bf16 matmul TFLOP/s) of this device, or why they could not be measured."""
    try:
        a = torch.empty(2**29, dtype=BF16, device="cuda")  # 1 GiB
        b = torch.empty_like(a)
        copy = 2 * a.nbytes / median_ms(lambda: b.copy_(a), 10, True) / 1e6
        del a, b
        p, q = (torch.randn(8192, 8192, dtype=BF16, device="cuda") for _ in range(2))
        flops = 2 * 8192**3 / median_ms(lambda: p @ q, 10, True) / 1e9
    except Exception as e:
        return failure(e)
    return copy, flops


def describe_ceilings(ceiling) -> str:
    if isinstance(ceiling, str):
        return ceiling
    return f"copy {ceiling[0]:.0f} GB/s (bytes read + written), bf16 matmul {ceiling[1]:.0f} TFLOP/s (8192^3)"


def failure(e: BaseException) -> str:
    text = (f"{type(e).__name__}: {e}".strip().splitlines() or ["?"])[0]
    return "fails: " + text[:70].replace("|", "/")


def measure_shape(shape, args, device, graphs, log):
    """({(layout, M): (us, note) or 'fails: ...'}, {layout: (Operand of the first weight, matmuls per graph)
    or None})."""
    n, k = shape
    torch.manual_seed(n * 7919 + k)
    weights = [torch.randn(n, k, device=device).to(BF16) for _ in range(args.L)]
    xs = {m: torch.randn(m, k, device=device).to(BF16) for m in args.m}
    cells, stored = {}, {}
    for name in args.layouts:
        gen = torch.Generator().manual_seed(n * 31 + k)
        start = time.perf_counter()
        try:
            operands = [BUILDERS[name](weights[0], gen)]
            count = min(512, max(args.L, math.ceil(args.min_mb * 2**20 / max(1, operands[0].nbytes))))
            operands += [BUILDERS[name](weights[i % args.L], gen) for i in range(1, count)]
            reference = operands[0].weight().float()
        except Exception as e:
            log(f"  {name}: {failure(e)}")
            cells.update({(name, m): failure(e) for m in args.m})
            stored[name] = None
            continue
        stored[name] = (operands[0], count)
        log(f"  {name}: packed {count} weights ({args.L} distinct) in {time.perf_counter() - start:.1f} s")
        for m in args.m:
            try:
                note = check(operands[0].run(xs[m]), xs[m], reference)
                cells[name, m] = (time_per_layer(operands, xs[m], args.replays, graphs), note,
                                  rebuilds(operands[0], xs[m]))
            except Exception as e:
                cells[name, m] = failure(e)
        del operands, reference
        if graphs:
            torch.cuda.empty_cache()
    return cells, stored


def moved_bytes(operand: Operand, m: int, n: int, k: int, rebuilt: bool) -> int:
    """What a layer must move: its packed weight, x and the output (+ the rebuilt bf16 weight written and read)."""
    return operand.nbytes + 2 * m * k + 2 * m * n + (4 * n * k if rebuilt else 0)


def rebuilds(operand: Operand, x: torch.Tensor) -> bool:
    """Whether sparc's tuned choice for this product rebuilds the weight and calls cuBLAS (`kernels.rebuild`)."""
    packed = operand.packed
    return packed is not None and kernels.kernel_name(x, packed.layout, packed.tensors, packed.dims) == "rebuild"


def shape_section(shape, args, cells, stored) -> list[str]:
    n, k = shape
    head = ["| M | " + " | ".join(LAYOUTS[name] for name in args.layouts) + " |",
            "|---|" + "---|" * len(args.layouts)]
    times, rates, notes = [], [], []
    for m in args.m:
        base = cells.get(("cublas", m))
        time_row, rate_row = [], []
        for name in args.layouts:
            cell = cells[name, m]
            if isinstance(cell, str):
                time_row.append(cell)
                rate_row.append("-")
                continue
            us, note, rebuilt = cell
            speedup = f" ({base[0] / us:.2f}x)" if isinstance(base, tuple) else ""
            time_row.append(f"{us:.1f}{speedup}{' r' if rebuilt else ''}{'*' if note else ''}")
            moved = moved_bytes(stored[name][0], m, n, k, rebuilt)
            rate_row.append(f"{moved / us / 1e3:.0f} / {2 * m * n * k / us / 1e6:.1f}")
            if note:
                notes.append(f"* {name} M={m}: output check failed ({note})")
        times.append(f"| {m} | " + " | ".join(time_row) + " |")
        rates.append(f"| {m} | " + " | ".join(rate_row) + " |")
    size = ["| layout | packed bytes / layer | ideal bytes | bytes / weight | over ideal | bf16 bytes / packed | "
            "matmuls per graph |", "|---|---|---|---|---|---|---|"]
    for name in args.layouts:
        if stored[name] is not None:
            op, count = stored[name]
            size.append(f"| {LAYOUTS[name]} | {op.nbytes} | {op.ideal:.0f} | {op.nbytes / (n * k):.3f} | "
                        f"{100 * (op.nbytes / op.ideal - 1):+.2f}% | {2 * n * k / op.nbytes:.2f}x | {count} |")
    return [f"### {n} x {k}", "", "Time per layer in us (speedup vs cuBLAS bf16; r: sparc rebuilt the weight and "
            "called cuBLAS):", "", *head, *times, *notes, "",
            "GB/s moved (packed weight + x + output; r: + the rebuilt bf16 weight written and read) / "
            "dense-equivalent TFLOP/s:", "", *head, *rates, "",
            "Packed weight bytes vs the format's ideal:", "", *size, ""]


def floor_us(operand: Operand, name: str, m: int, n: int, k: int, ceiling) -> tuple[float, str]:
    """(the least time a layer can take at the device's ceilings, which one binds): its own bytes (no rebuild)
    at the copy rate, or the products it keeps at the dense bf16 matmul rate."""
    by_bytes = moved_bytes(operand, m, n, k, False) / ceiling[0] / 1e3
    by_flops = 2 * m * n * k * KEPT_PRODUCTS[name] / ceiling[1] / 1e6
    return (by_bytes, "copy") if by_bytes >= by_flops else (by_flops, "matmul")


def target_cell(results, shape, name: str, m: int, target: float, ceiling) -> tuple[str, bool | None]:
    """('speedup (share of the binding ceiling reached; share the target needs)', met), met None if not run."""
    if shape not in results:
        return "-", None
    cells, stored = results[shape]
    cell, base = cells.get((name, m)), cells.get(("cublas", m))
    if not isinstance(cell, tuple) or not isinstance(base, tuple) or stored.get(name) is None:
        return "-", None
    speedup, met = base[0] / cell[0], base[0] / cell[0] >= target
    text = f"**{speedup:.2f}x**" if met else f"{speedup:.2f}x"
    if isinstance(ceiling, tuple):
        floor, bound = floor_us(stored[name][0], name, m, *shape, ceiling)
        text += f" ({floor / cell[0]:.0%} of {bound}; needs {floor * target / base[0]:.0%})"
    return text, met


def targets_section(results, args, ceiling) -> list[str]:
    """Every format's speedup on TARGET_SHAPES against its target at each of TARGET_MS, with how close the
    layer runs to the ceiling that binds it and how close the target would have to."""
    if not any(shape in results for shape in TARGET_SHAPES):
        return []
    rows, met_all, counted = [], 0, 0
    for name, targets in TARGETS.items():
        for m, target in zip(TARGET_MS, targets):
            if name not in args.layouts or m not in args.m:
                continue
            texts, met = zip(*(target_cell(results, shape, name, m, target, ceiling) for shape in TARGET_SHAPES))
            rows.append(f"| {LAYOUTS[name]} | {m} | {target:g}x | " + " | ".join(texts) + " |")
            if None not in met:
                counted += 1
                met_all += all(met)
    head = ["## Against the targets", "",
            f"{met_all} of {counted} cells meet their target on all of "
            f"{', '.join(f'{n} x {k}' for n, k in TARGET_SHAPES)} (bold: met on that shape). In brackets: the "
            "share of the device ceiling the layer reaches, at whichever binds it (copy: its packed weight, x and "
            "output at the copy rate; matmul: the products its format keeps at the dense bf16 rate), and the "
            "share the target needs. Above 100%: the target asks for more than that ceiling.", "",
            "| format | M | target | " + " | ".join(f"{n} x {k}" for n, k in TARGET_SHAPES) + " |",
            "|---|---|---|---|---|---|"]
    return head + rows + [""]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default=",".join(f"{n}x{k}" for n, k in SHAPES), help="NxK,NxK,...")
    parser.add_argument("--m", default=",".join(map(str, MS)), help="batch rows M, comma separated")
    parser.add_argument("--layouts", default=",".join(LAYOUTS), help=f"subset of {','.join(LAYOUTS)}")
    parser.add_argument("--L", type=int, default=8, help="distinct weight matrices per measurement")
    parser.add_argument("--replays", type=int, default=30, help="timed CUDA-graph replays (median)")
    parser.add_argument("--min-mb", type=float, help="least weight MiB per graph (default: 4x the L2 cache)")
    parser.add_argument("--out", help="write the markdown tables here (rewritten after every shape)")
    parser.add_argument("--smoke", action="store_true", help="CPU check: tiny shapes, M 1 and 3, L 2")
    args = parser.parse_args()
    args.shapes = [tuple(int(v) for v in s.lower().split("x")) for s in args.shapes.split(",")]
    args.m = [int(v) for v in args.m.split(",")]
    args.layouts = args.layouts.split(",")
    if unknown := set(args.layouts) - set(LAYOUTS):
        parser.error(f"unknown layouts {sorted(unknown)}; known: {','.join(LAYOUTS)}")
    if args.smoke:
        args.shapes, args.m, args.L, args.replays = SMOKE_SHAPES, [1, 3], 2, 2
        args.min_mb = args.min_mb or 0
    return args


def main():
    args = parse_args()
    graphs = not args.smoke
    if graphs and not torch.cuda.is_available():
        raise SystemExit("needs a CUDA device (on the CPU: TRITON_INTERPRET=1 ... --smoke)")
    device, began = ("cuda" if graphs else "cpu"), time.perf_counter()
    if args.min_mb is None:
        args.min_mb = 4 * getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 50 * 2**20) / 2**20

    def log(text):
        print(f"[{time.perf_counter() - began:6.1f} s] {text}", flush=True)

    if graphs:
        major, minor = torch.cuda.get_device_capability()
        where = f"{torch.cuda.get_device_name()} (sm_{major}{minor}), CUDA {torch.version.cuda}"
    else:
        where = f"CPU, TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET')}"
    ceiling = ceilings() if graphs else "not measured on the CPU"
    lines = ["## Linear layer benchmark (`benchmarks/linear.py`)", "",
             f"Device: {where}, torch {torch.__version__}, triton {triton.__version__}.  ",
             f"Ceilings, same run: {describe_ceilings(ceiling)}.  ",
             f"L = {args.L} distinct weights per measurement, copied until they take >= {args.min_mb:.0f} MiB; "
             f"{'one CUDA graph, ' if graphs else ''}median of {args.replays} replays, time per layer; "
             "bf16 activations, random weights, group 128.", ""]
    log(lines[2] + " " + lines[3])
    failed, results = [], {}
    for shape in args.shapes:
        log(f"shape {shape[0]} x {shape[1]}")
        cells, stored = measure_shape(shape, args, device, graphs, log)
        results[shape] = cells, stored
        section = shape_section(shape, args, cells, stored)
        lines += section
        print("\n".join(section), flush=True)
        if args.out:
            Path(args.out).write_text("\n".join(lines) + "\n")
        failed += [f"{shape} {name} M={m}: {cell if isinstance(cell, str) else cell[1]}"
                   for (name, m), cell in cells.items() if name in SPARC and (isinstance(cell, str) or cell[1])]
    section = targets_section(results, args, ceiling)
    lines += section
    print("\n".join(section), flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    log("done")
    if args.smoke and failed:
        raise SystemExit("sparc layouts failed or missed the reference:\n" + "\n".join(failed))


if __name__ == "__main__":
    main()
