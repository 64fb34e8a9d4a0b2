"""How fast can one kernel stream a layer's int4 weight bytes at M = 1? The floor the decode kernels chase.

    python benchmarks/stream_floor.py [--out floor.md]

Per shape (N x K), the bytes of an int4 g128 weight, (N, K / 8) int32 words (the scales not counted), copied
until the copies take >= 200 MiB, are read by a kernel that does one add per word: program p sums rows
p * BLOCK_N .. + BLOCK_N over K in (BLOCK_N x BW) word blocks, with and without loading block i + 1 before
adding block i. The best of a few configs is reported, timed in one CUDA graph over the copies
(`kernels.autotune.graph_bench`, median of 30 replays, time per layer), next to an empty kernel's time per
launch in the same graph setup.
"""
from __future__ import annotations

import argparse
import itertools
import math

import torch
import triton
import triton.language as tl

from sparc.kernels.autotune import graph_bench

SHAPES = ((4096, 4096), (14336, 4096), (4096, 14336))


@triton.jit
def empty_kernel(out_ptr):
    if tl.program_id(0) == 0:
        tl.store(out_ptr, 1.0)


@triton.jit
def stream_rows_kernel(words_ptr, out_ptr, row_words, BLOCK_N: tl.constexpr, BW: tl.constexpr,
                       PREFETCH: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    ptrs = words_ptr + rows.to(tl.int64)[:, None] * row_words + tl.arange(0, BW)[None, :]
    acc = tl.zeros((BLOCK_N, BW), tl.float32)
    if PREFETCH:
        block = tl.load(ptrs)
        for step in range(1, row_words // BW):
            following = tl.load(ptrs + step * BW)
            acc += block.to(tl.float32, bitcast=True)
            block = following
        acc += block.to(tl.float32, bitcast=True)
    else:
        for step in range(0, row_words // BW):
            acc += tl.load(ptrs + step * BW).to(tl.float32, bitcast=True)
    tl.store(out_ptr + rows, tl.sum(acc, axis=1))


def per_call_us(calls, replays: int = 30) -> float:
    """Microseconds per call of `calls` run back to back in one CUDA graph (median of `replays`)."""
    return graph_bench(lambda: [call() for call in calls], replays) * 1e3 / len(calls)


def shape_row(n: int, k: int, out: torch.Tensor) -> str:
    row_words = k // 8
    count = math.ceil(200 * 2**20 / (n * row_words * 4))
    copies = [torch.randint(-2**31, 2**31 - 1, (n, row_words), dtype=torch.int32, device="cuda")
              for _ in range(count)]
    best = (math.inf, None)
    for block_n, bw, warps, prefetch in itertools.product((8, 16, 32), (64, 128, 256), (4, 8), (False, True)):
        if row_words % bw or n % block_n or block_n * bw > 8192:
            continue
        us = per_call_us([lambda w=w: stream_rows_kernel[(n // block_n,)](w, out, row_words, BLOCK_N=block_n, BW=bw,
                                                                          PREFETCH=prefetch, num_warps=warps)
                          for w in copies])
        best = min(best, (us, (block_n, bw, warps, prefetch)))
    us, (block_n, bw, warps, prefetch) = best
    mb = n * row_words * 4 / 1e6
    return (f"| {n} x {k} | {mb:.1f} | {us:.2f} | {mb / us:.2f} | {block_n} x {bw} words, {warps} warps"
            f"{', prefetch' if prefetch else ''} |")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = torch.empty(1 << 16, device="cuda")
    empty = per_call_us([lambda: empty_kernel[(132,)](out) for _ in range(32)])
    lines = [f"Device: {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}. "
             f"Empty kernel: {empty:.2f} us per launch.", "",
             "| shape | int4 words MB | us per layer | TB/s | best config |", "|---|---|---|---|---|"]
    lines += [shape_row(n, k, out) for n, k in SHAPES]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
