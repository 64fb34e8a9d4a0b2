"""Large M (prefill): rebuild the weight in the activation dtype, then one cuBLAS product.

A tile-kernel config with `rebuild=True` (`CONFIG`) runs this instead of the tile kernel: the default from
M = REBUILD_MIN_M rows on, and a candidate the tuner weighs against the tile configs. There the product is
compute-bound, and cuBLAS runs the tensor cores closer to their peak than the tile kernels, which rebuild every
weight block again for each BLOCK_M rows of x. Here each weight block is rebuilt once, by the same `*_block`
pieces the tile kernels use, and written to an (N, K) workspace in the activation dtype, which then goes to
`torch.nn.functional.linear`. The rebuild moves the packed bytes plus 2 bytes per weight (bf16); the workspace
lives for one product (one layer's dense weight at a time).

`rebuild_tiles_kernel`: program (pid_n, pid_k) rebuilds the (BLOCK_N x BLOCK_K) block of a pure tile format or a
hybrid grid, as `hybrid.tile_grid_kernel` does per K step. `rebuild_bsr_kernel`: program (r, c) writes
block (r, c) of the BSR grid, zeros where the block was dropped. Grids depend only on N and K, never
on data.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .hybrid import Config, format_blocks, kernel_arguments, locate_tile
from .int4 import int4_block
from .tiling import interpreted_bf16, round_to_bf16

REBUILD_MIN_M = 256
LAYOUTS = ("dense", "nv24", "int4", "nv24_int4", "bsr_int4", "hybrid")
# the rebuild kernels' weight blocks and warps: the fastest rebuild followed by cuBLAS on the H100 (RESULTS.md)
BLOCKS = Config(block_m=1, block_n=32, block_k=256, num_warps=8)
LAYOUT_BLOCKS = {"int4": Config(block_m=1, block_n=64, block_k=128, num_warps=4),
                 "hybrid": Config(block_m=1, block_n=32, block_k=128, num_warps=4)}  # blocks stay inside a tile
BSR_WARPS = 2  # a BSR block (16 x 128 on the H100's Llama shapes) a program
CONFIG = Config(block_m=0, block_n=0, block_k=0, rebuild=True)


def supports(layout: str) -> bool:
    return layout in LAYOUTS


@triton.jit
def store_block(out_ptr, w, offs_n, offs_k, N, K, ROUND_BF16: tl.constexpr):
    if ROUND_BF16:
        w = round_to_bf16(w.to(tl.float32))
    ptrs = out_ptr + offs_n.to(tl.int64)[:, None] * K + offs_k[None, :]
    tl.store(ptrs, w.to(out_ptr.dtype.element_ty), mask=(offs_n < N)[:, None] & (offs_k < K)[None, :])


@triton.jit
def rebuild_tiles_kernel(out_ptr, formats_ptr, offsets_ptr, dense_ptr, nv24_values_ptr, nv24_meta_ptr, int4_q_ptr,
                         int4_scales_ptr, int4_mins_ptr, nq_q_ptr, nq_scales_ptr, nq_mins_ptr, nq_meta_ptr,
                         N, K, grid_cols, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, IS_GRID: tl.constexpr,
                         FORMAT: tl.constexpr, TILE: tl.constexpr, INT4_GROUP: tl.constexpr,
                         NV24_INT4_GROUP: tl.constexpr, HAS_DENSE: tl.constexpr, HAS_NV24: tl.constexpr,
                         HAS_INT4: tl.constexpr, HAS_NV24_INT4: tl.constexpr, UPCAST: tl.constexpr,
                         ROUND_BF16: tl.constexpr, ALIGNED: tl.constexpr):
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    k0 = tl.program_id(1) * BLOCK_K
    if IS_GRID:
        code, base, rows, row_ok, width, k_local = locate_tile(formats_ptr, offsets_ptr, grid_cols, offs_n,
                                                               tl.program_id(0) * BLOCK_N, k0, N, K, TILE)
        if ALIGNED:
            base, width = tl.multiple_of(base, 8), tl.multiple_of(width, 8)
    else:
        code, base, rows, row_ok, width, k_local = FORMAT, 0, offs_n, offs_n < N, K, k0
    w = format_blocks(code, base, rows, row_ok, width, k_local, dense_ptr, nv24_values_ptr, nv24_meta_ptr,
                      int4_q_ptr, int4_scales_ptr, int4_mins_ptr, nq_q_ptr, nq_scales_ptr, nq_mins_ptr, nq_meta_ptr,
                      BLOCK_N, BLOCK_K, INT4_GROUP, NV24_INT4_GROUP, HAS_DENSE, HAS_NV24, HAS_INT4, HAS_NV24_INT4,
                      UPCAST)
    store_block(out_ptr, w, offs_n, k0 + tl.arange(0, BLOCK_K), N, K, ROUND_BF16)


@triton.jit
def rebuild_bsr_kernel(out_ptr, row_ptr, col_ptr, q_ptr, scales_ptr, mins_ptr, N, K, BLOCK_N: tl.constexpr,
                       GROUP: tl.constexpr, ROW_BLOCKS: tl.constexpr, ROUND_BF16: tl.constexpr):
    """Program (r, c) writes block (r, c): rebuilt where it was kept, else zero. It finds it among the block
    row's column indices, read at once (at most ROW_BLOCKS of them)."""
    block_row, column = tl.program_id(0), tl.program_id(1)
    rows = tl.arange(0, BLOCK_N)
    first = tl.load(row_ptr + block_row)
    last = tl.load(row_ptr + block_row + 1)
    at = tl.arange(0, ROW_BLOCKS)
    kept_columns = tl.load(col_ptr + first + at, mask=first + at < last, other=-1).to(tl.int32)
    found = tl.max(tl.where(kept_columns == column, at, -1), axis=0)
    block = first + tl.maximum(found, 0)
    w = int4_block(q_ptr, scales_ptr, mins_ptr, block.to(tl.int64) * (BLOCK_N * GROUP), rows,
                   (rows < BLOCK_N) & (found >= 0), GROUP, 0, BLOCK_N, GROUP, GROUP)
    store_block(out_ptr, w, block_row * BLOCK_N + rows, column * GROUP + tl.arange(0, GROUP), N, K, ROUND_BF16)


def rebuild(layout: str, tensors, dims, dtype: torch.dtype, device) -> torch.Tensor:
    """The (N, K) weight in `dtype`, exactly as the tile kernels rebuild it for their products."""
    n, k = dims[0], dims[1]
    round_bf16 = interpreted_bf16(torch.empty(0, dtype=dtype, device=device))
    if layout == "bsr_int4":
        group, block_n = dims[2], dims[3]
        out = torch.empty(n, k, dtype=dtype, device=device)
        blocks = triton.cdiv(k, group)
        rebuild_bsr_kernel[(triton.cdiv(n, block_n), blocks)](out, *tensors, n, k, BLOCK_N=block_n, GROUP=group,
                                                              ROW_BLOCKS=triton.next_power_of_2(blocks),
                                                              ROUND_BF16=round_bf16, num_warps=BSR_WARPS)
        return out
    out = torch.empty(n, k, dtype=dtype, device=device)
    blocks = LAYOUT_BLOCKS.get(layout, BLOCKS)
    pointers, grid_cols, block_n, block_k, constexprs = kernel_arguments(layout, tensors, dims, blocks)
    grid = (triton.cdiv(n, block_n), triton.cdiv(k, block_k))
    rebuild_tiles_kernel[grid](out, *pointers, n, k, grid_cols, BLOCK_N=block_n, BLOCK_K=block_k,
                               UPCAST=device.type != "cuda", ROUND_BF16=round_bf16, num_warps=blocks.num_warps,
                               **constexprs)
    return out


def matmul(x2d: torch.Tensor, layout: str, tensors, dims, bias, out=None):
    """x2d (M, K) @ W.T + bias through cuBLAS on the rebuilt weight (a dense layout is used as stored)."""
    if layout == "dense" and tensors[0].dtype == x2d.dtype:
        weight = tensors[0]
    else:
        weight = rebuild(layout, tensors, dims, x2d.dtype, x2d.device)
    if out is None:
        return torch.nn.functional.linear(x2d, weight, bias)
    if bias is None:
        return torch.mm(x2d, weight.t(), out=out)
    return torch.addmm(bias, x2d, weight.t(), out=out)
