"""HYBRID (PATCH): a grid of square tiles over the weight, each DENSE, NV24, INT4, NV24_INT4 or ZERO.

Layout, dims = [N, K, group, tile] with tile 64 or 128 and a (TN, TK) = (ceil(N / tile), ceil(K / tile)) grid:
    formats  uint8 (TN, TK)  the TileFormat of each tile
    offsets  int64 (TN, TK)  where the tile starts in its format's buffers, counted in (padded) weights
    dense                    flat buffers, one per stored tensor of each format, in the activation dtype
    nv24 values, meta        or uint8 as in that format's own layout; a buffer that stores one element per
    int4 q, scales, mins     d weights (NV24 values: d = 2, meta: d = 8, INT4 scales: d = group, ...) holds
    nv24_int4 q, scales,     a tile at offset / d. Formats without tiles keep empty buffers.
        mins, meta
Each stored tile is its own (rows x width) matrix in its format's layout, contiguous: rows = tile except in the
last tile row, width = tile except in the last tile column, padded along K as that format pads (8, the group,
twice the group); N is never padded. Inside a tile an INT4 group is min(group, tile) inputs and an NV24_INT4
group min(group, tile / 2) kept values. ZERO tiles store nothing, whatever the mask says.

Kernel guide. `tile_grid_kernel` runs every tile-grid format; the pure layouts (dense, nv24, int4, nv24_int4,
zero) are the special case of one tile covering the whole weight, with the format fixed at compile time. The
program grid, split-K and epilogue are those of `tiling`: program (pid_mn, pid_k) owns a (BLOCK_M x BLOCK_N)
output tile (rows of one tile row for a grid: BLOCK_N divides the tile), programs ordered in groups of GROUP_M
row blocks for L2 reuse, and walks its slice of the K blocks (BLOCK_K: the config's, at least one quantization
group, at most the tile for a grid). Per K block it loads the tile's format code and offset (two scalars), the
x block, and for the (BLOCK_N x BLOCK_K) weight block the bytes of the tile's own format (see
each format's `*_block`; `format_blocks` masks the loads of the other formats present, so the loop has no
data-dependent branch), expands them to a register tile and accumulates x @ w.T (or, SWAP, w @ x.T with the
weight block as the tensor cores' register operand). ZERO tiles move no weight bytes. The formats present are
tl.constexpr flags, so a kernel for DENSE + NV24 tiles holds no int4 code; on the GPU x, and DENSE or NV24
blocks of a single-format kernel, go to tl.dot in their stored dtype. A `Config` (tuned per GPU, see
`tuning`) sets the tiles, warps, stages, swap and grouping; with fp32 activations `fit_shared` shrinks it to
the shared memory.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
import triton
import triton.language as tl

from sparc.errors import SparcError
from sparc.ir import TileFormat

from . import dense, int4, nv24, nv24_int4
from .dense import dense_block
from .int4 import int4_block
from .nv24 import nv24_block
from .nv24_int4 import nv24_int4_block
from .tiling import accumulate, block_m_for, choose_tiling, launch, load_x_tile, store_result, tile_position

TILES = (64, 128)
STORED = (TileFormat.DENSE, TileFormat.NV24, TileFormat.INT4, TileFormat.NV24_INT4)  # buffer order
BUFFER_COUNTS = {TileFormat.DENSE: 1, TileFormat.NV24: 2, TileFormat.INT4: 3, TileFormat.NV24_INT4: 4}
MODULES = {TileFormat.DENSE: dense, TileFormat.NV24: nv24, TileFormat.INT4: int4, TileFormat.NV24_INT4: nv24_int4}
PURE_LAYOUTS = {"dense": TileFormat.DENSE, "nv24": TileFormat.NV24, "int4": TileFormat.INT4,
                "nv24_int4": TileFormat.NV24_INT4, "zero": TileFormat.ZERO}

CODE_DENSE = tl.constexpr(int(TileFormat.DENSE))
CODE_NV24 = tl.constexpr(int(TileFormat.NV24))
CODE_INT4 = tl.constexpr(int(TileFormat.INT4))
CODE_NV24_INT4 = tl.constexpr(int(TileFormat.NV24_INT4))
CODE_ZERO = tl.constexpr(int(TileFormat.ZERO))


def tile_group(fmt: TileFormat, group: int, tile: int) -> int:
    """The quantization group used inside a tile of `fmt`."""
    if fmt == TileFormat.INT4:
        return min(group, tile)
    if fmt == TileFormat.NV24_INT4:
        return min(group, tile // 2)
    return group


def weights_per_element(fmt: TileFormat, group: int) -> tuple[int, ...]:
    """For each stored tensor of `fmt`: how many weights one of its elements covers (its largest is the
    format's padding unit along K)."""
    return {TileFormat.DENSE: (1,), TileFormat.NV24: (2, 8), TileFormat.INT4: (2, group, group),
            TileFormat.NV24_INT4: (4, 2 * group, 2 * group, 8)}[fmt]


def stored_dtypes(fmt: TileFormat, dtype: torch.dtype) -> tuple[torch.dtype, ...]:
    return {TileFormat.DENSE: (dtype,), TileFormat.NV24: (dtype, torch.uint8),
            TileFormat.INT4: (torch.uint8, dtype, dtype),
            TileFormat.NV24_INT4: (torch.uint8, dtype, dtype, torch.uint8)}[fmt]


def padded_width(width: int, unit: int) -> int:
    return -(-width // unit) * unit


def tile_classes(selected: torch.Tensor, shape, tile: int):
    """(rows, width, region) for each tile size among the selected tiles: interior, last row, last column,
    corner. `region` is a (TN, TK) bool grid of the selected tiles of that size."""
    n, k = shape
    tn, tk = selected.shape
    last_row = (torch.arange(tn, device=selected.device) == tn - 1)[:, None]
    last_col = (torch.arange(tk, device=selected.device) == tk - 1)[None, :]
    for in_last_row in (False, True):
        for in_last_col in (False, True):
            region = selected & (last_row == in_last_row) & (last_col == in_last_col)
            if region.any():
                yield (n - (tn - 1) * tile if in_last_row else tile, k - (tk - 1) * tile if in_last_col else tile,
                       region)


def tile_view(t: torch.Tensor, grid, tile: int) -> torch.Tensor:
    """(TN, TK, tile, tile) view of `t` zero-padded to whole tiles."""
    tn, tk = grid
    padded = torch.nn.functional.pad(t, (0, tk * tile - t.shape[1], 0, tn * tile - t.shape[0]))
    return padded.reshape(tn, tile, tk, tile).transpose(1, 2)


def check_grid(formats, shape, tile: int) -> torch.Tensor:
    if tile not in TILES:
        raise SparcError(f"hybrid tile must be one of {TILES}, got {tile}")
    grid = torch.as_tensor(formats).to(torch.uint8)
    expected = (-(-shape[0] // tile), -(-shape[1] // tile))
    if tuple(grid.shape) != expected:
        raise SparcError(f"tile grid {tuple(grid.shape)} does not cover shape {tuple(shape)} with tile {tile}")
    return grid


def pack(weight: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype, group: int, formats, tile: int = 128):
    """Pack `weight * mask` with the tile formats `formats` (uint8 (TN, TK) of TileFormat codes)."""
    grid = check_grid(formats, weight.shape, tile).to(weight.device)
    weights, masks = tile_view(weight, grid.shape, tile), tile_view(mask, grid.shape, tile)
    offsets = torch.zeros(grid.shape, dtype=torch.int64, device=weight.device)
    buffers = []
    for fmt in STORED:
        g = tile_group(fmt, group, tile)
        pieces = [[torch.empty(0, dtype=d, device=weight.device)] for d in stored_dtypes(fmt, dtype)]
        position = 0
        for rows, width, region in tile_classes(grid == fmt, weight.shape, tile):
            count = int(region.sum())
            chosen = [t[region][:, :rows, :width].reshape(count * rows, width) for t in (weights, masks)]
            for piece, tensor in zip(pieces, MODULES[fmt].pack(*chosen, dtype, g)):
                piece.append(tensor.reshape(-1))
            size = rows * padded_width(width, max(weights_per_element(fmt, g)))
            offsets[region] = position + size * torch.arange(count, device=weight.device)
            position += count * size
        buffers += [torch.cat(piece) for piece in pieces]
    return (grid, offsets, *buffers)


def split_buffers(buffers):
    """The flat buffers of each stored format, in STORED order."""
    starts = np.cumsum([0, *(BUFFER_COUNTS[fmt] for fmt in STORED)])
    return [buffers[a:b] for a, b in zip(starts[:-1], starts[1:])]


def unpack(tensors, shape, group, tile):
    grid, offsets = tensors[0], tensors[1]
    tiles = torch.zeros(grid.shape[0] * tile, grid.shape[1] * tile, device=grid.device)
    view = tiles.view(grid.shape[0], tile, grid.shape[1], tile).transpose(1, 2)
    for fmt, buffers in zip(STORED, split_buffers(tensors[2:])):
        g = tile_group(fmt, group, tile)
        per_element = weights_per_element(fmt, g)
        for rows, width, region in tile_classes(grid == fmt, shape, tile):
            padded = padded_width(width, max(per_element))
            starts = offsets[region][:, None]
            tile_elements = torch.arange(rows * padded, device=grid.device)
            stored = [buffer[starts // d + tile_elements[: rows * padded // d]].reshape(-1, padded // d)
                      for buffer, d in zip(buffers, per_element)]
            values = MODULES[fmt].unpack(stored, (stored[0].shape[0], width), g).float()
            ti, tk = region.nonzero(as_tuple=True)
            view[ti, tk, :rows, :width] = values.reshape(-1, rows, width)
    return tiles[: shape[0], : shape[1]].to(tensors[2].dtype)


@triton.jit
def locate_tile(formats_ptr, offsets_ptr, grid_cols, offs_n, n0, k0, N, K, TILE: tl.constexpr):
    """For the block at (n0, k0): its tile's format code and stored offset (two scalar loads), the block's rows
    inside the tile and which of them exist, the tile's width and k0 inside the tile."""
    tile_row, tile_col = n0 // TILE, k0 // TILE
    code = tl.load(formats_ptr + tile_row * grid_cols + tile_col).to(tl.int32)
    base = tl.load(offsets_ptr + tile_row * grid_cols + tile_col)
    rows = offs_n - tile_row * TILE
    row_ok = rows < tl.minimum(N - tile_row * TILE, TILE)
    width = tl.minimum(K - tile_col * TILE, TILE)
    return code, base, rows, row_ok, width, k0 - tile_col * TILE


@triton.jit
def format_blocks(code, base, rows, row_ok, width, k0, dense_ptr, nv24_values_ptr, nv24_meta_ptr, int4_q_ptr,
                  int4_scales_ptr, int4_mins_ptr, nq_q_ptr, nq_scales_ptr, nq_mins_ptr, nq_meta_ptr,
                  BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, INT4_GROUP: tl.constexpr,
                  NV24_INT4_GROUP: tl.constexpr, HAS_DENSE: tl.constexpr, HAS_NV24: tl.constexpr,
                  HAS_INT4: tl.constexpr, HAS_NV24_INT4: tl.constexpr, UPCAST: tl.constexpr):
    """The (BLOCK_N x BLOCK_K) weight block of a tile of format `code`: every present format's block is built
    with its loads masked off unless the tile is of that format (zeros, no bytes moved), and they are summed.
    No branch depends on data, so the loop pipelines its loads. With one format present (and not under the
    interpreter), DENSE and NV24 blocks stay in the stored dtype."""
    mixed: tl.constexpr = (HAS_DENSE + HAS_NV24 + HAS_INT4 + HAS_NV24_INT4) > 1
    as_stored: tl.constexpr = not (UPCAST or mixed)
    w = tl.zeros((BLOCK_N, BLOCK_K), tl.float32)
    if HAS_DENSE:
        w = dense_block(dense_ptr, base, rows, row_ok & (code == CODE_DENSE), width, k0, BLOCK_K, not as_stored)
    if HAS_NV24:
        w_nv24 = nv24_block(nv24_values_ptr, nv24_meta_ptr, base, rows, row_ok & (code == CODE_NV24), width, k0,
                            BLOCK_N, BLOCK_K, not as_stored)
        if HAS_DENSE:
            w += w_nv24
        else:
            w = w_nv24
    if HAS_INT4:
        w_int4 = int4_block(int4_q_ptr, int4_scales_ptr, int4_mins_ptr, base, rows, row_ok & (code == CODE_INT4),
                            width, k0, BLOCK_N, BLOCK_K, INT4_GROUP)
        if HAS_DENSE or HAS_NV24:
            w += w_int4
        else:
            w = w_int4
    if HAS_NV24_INT4:
        w_nq = nv24_int4_block(nq_q_ptr, nq_scales_ptr, nq_mins_ptr, nq_meta_ptr, base, rows,
                               row_ok & (code == CODE_NV24_INT4), width, k0, BLOCK_N, BLOCK_K, NV24_INT4_GROUP)
        if HAS_DENSE or HAS_NV24 or HAS_INT4:
            w += w_nq
        else:
            w = w_nq
    return w


@triton.jit
def tile_grid_kernel(x_ptr, out_ptr, bias_ptr, formats_ptr, offsets_ptr, dense_ptr, nv24_values_ptr, nv24_meta_ptr,
                     int4_q_ptr, int4_scales_ptr, int4_mins_ptr, nq_q_ptr, nq_scales_ptr, nq_mins_ptr, nq_meta_ptr,
                     M, N, K, stride_xm, stride_xk, grid_cols,
                     HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     SPLIT_K: tl.constexpr, USE_DOT: tl.constexpr, DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
                     ROUND_BF16: tl.constexpr, IS_GRID: tl.constexpr, FORMAT: tl.constexpr, TILE: tl.constexpr,
                     INT4_GROUP: tl.constexpr, NV24_INT4_GROUP: tl.constexpr, HAS_DENSE: tl.constexpr,
                     HAS_NV24: tl.constexpr, HAS_INT4: tl.constexpr, HAS_NV24_INT4: tl.constexpr,
                     UPCAST: tl.constexpr, SWAP: tl.constexpr, GROUP_M: tl.constexpr, ALIGNED: tl.constexpr):
    pid_m, pid_n = tile_position(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    pid_k = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    steps = tl.cdiv(K, BLOCK_K)
    per_split = tl.cdiv(steps, SPLIT_K)
    if SWAP:
        acc = tl.zeros((BLOCK_N, BLOCK_M), tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for step in range(pid_k * per_split, tl.minimum(pid_k * per_split + per_split, steps)):
        k0 = step * BLOCK_K
        if IS_GRID:
            code, base, rows, row_ok, width, k_local = locate_tile(formats_ptr, offsets_ptr, grid_cols, offs_n,
                                                                   pid_n * BLOCK_N, k0, N, K, TILE)
            if ALIGNED:  # K % 8 == 0: every tile offset and width is a multiple of 8 weights (16-byte loads)
                base, width = tl.multiple_of(base, 8), tl.multiple_of(width, 8)
        else:
            code, base, rows, row_ok, width, k_local = FORMAT, 0, offs_n, offs_n < N, K, k0
        w = format_blocks(code, base, rows, row_ok, width, k_local, dense_ptr, nv24_values_ptr, nv24_meta_ptr,
                          int4_q_ptr, int4_scales_ptr, int4_mins_ptr, nq_q_ptr, nq_scales_ptr, nq_mins_ptr,
                          nq_meta_ptr, BLOCK_N, BLOCK_K, INT4_GROUP, NV24_INT4_GROUP, HAS_DENSE, HAS_NV24, HAS_INT4,
                          HAS_NV24_INT4, UPCAST)
        x = load_x_tile(x_ptr, offs_m, k0 + tl.arange(0, BLOCK_K), M, K, stride_xm, stride_xk, UPCAST)
        acc = accumulate(acc, x, w, USE_DOT, DOT_DTYPE, PRECISION, ROUND_BF16, SWAP)
    if SWAP:
        acc = tl.trans(acc)
    store_result(acc, out_ptr, bias_ptr, offs_m, offs_n, M, N, pid_k, HAS_BIAS, SPLIT_K, ROUND_BF16)


@dataclasses.dataclass(frozen=True)
class Config:
    """Launch configuration of `tile_grid_kernel` (and of `bsr_int4_kernel`, which takes block_n and block_k
    from its layout): block sizes, split-K (0: chosen from the SM count), the swapped product and the L2
    grouping of row blocks. `rebuild`: instead of any kernel, the weight is rebuilt once and multiplied by
    cuBLAS (`rebuild.CONFIG`, which `tuning.runner` runs; the other fields are then unused)."""
    block_m: int
    block_n: int
    block_k: int
    split_k: int = 1
    num_warps: int = 4
    num_stages: int = 3
    swap: bool = False
    group_m: int = 8
    rebuild: bool = False


def default_config(m: int) -> Config:
    """Before tuning: small M splits K to fill the GPU, large M takes 128-row tiles."""
    block_m = block_m_for(m)
    if m <= 64:
        return Config(block_m, 64, 128, 0, 4, 3)
    return Config(min(128, block_m * 2), 128, 64, 1, 8, 2)


def kernel_arguments(layout: str, tensors, dims, config: Config):
    """(pointers, grid_cols, block_n, block_k, constexprs) of `tile_grid_kernel` for a pure or hybrid layout; a
    hybrid block never leaves its tile (block_n and block_k at most the tile, both powers of two)."""
    group = dims[2]
    if layout == "hybrid":
        tile = dims[3]
        present = [any(t.numel() for t in buffers) for buffers in split_buffers(tensors[2:])]
        flags = dict(IS_GRID=True, FORMAT=-1, TILE=tile, INT4_GROUP=tile_group(TileFormat.INT4, group, tile),
                     NV24_INT4_GROUP=tile_group(TileFormat.NV24_INT4, group, tile),
                     ALIGNED=dims[1] % 8 == 0)
        pointers = tuple(t if t.numel() else None for t in tensors)  # formats without tiles pass no pointer
        spans = [16, flags["INT4_GROUP"] if present[2] else 16, 2 * flags["NV24_INT4_GROUP"] if present[3] else 16]
        block_k = min(tile, max(config.block_k, *spans))  # whole quantization groups, never past a tile
        return pointers, tensors[0].shape[1], min(config.block_n, tile), block_k, {**flags, **format_flags(present)}
    fmt = PURE_LAYOUTS[layout]
    slots = [list(tensors) if f == fmt else [None] * BUFFER_COUNTS[f] for f in STORED]
    pointers = (None, None, *(pointer for slot in slots for pointer in slot))
    flags = dict(IS_GRID=False, FORMAT=int(fmt), TILE=0, INT4_GROUP=group, NV24_INT4_GROUP=group, ALIGNED=False)
    span = {TileFormat.INT4: group, TileFormat.NV24_INT4: 2 * group}.get(fmt, 8)  # whole groups per block
    return (pointers, 0, config.block_n, max(config.block_k, span),
            {**flags, **format_flags([f == fmt for f in STORED])})


def format_flags(present) -> dict:
    """HAS_* constexprs from one bool per stored format (STORED order)."""
    return dict(zip(("HAS_DENSE", "HAS_NV24", "HAS_INT4", "HAS_NV24_INT4"), present))


FP32_STAGED_BYTES = 64 * 1024  # fp32 x tiles a config may stage: the H100 has 227 KB a block, weight tiles included


def fit_shared(config: Config, block_m: int, block_k: int, x2d: torch.Tensor) -> tuple[int, int]:
    """(block_m, num_stages) of `config`. The table is tuned with 16-bit activations; with fp32 ones the staged
    x tiles (num_stages * block_m * block_k * 4 bytes, the K block raised to whole quantization groups) are
    shrunk, stages first, then rows, until they fit FP32_STAGED_BYTES."""
    stages = config.num_stages
    if x2d.element_size() < 4:
        return block_m, stages
    while stages * block_m * block_k * 4 > FP32_STAGED_BYTES and (stages > 1 or block_m > 16):
        if stages > 1:
            stages -= 1
        else:
            block_m //= 2
    return block_m, stages


def launch_options(x2d: torch.Tensor, block_m: int, config: Config, num_stages: int) -> dict:
    """The product and launch constexprs shared by the tile kernels; the CPU interpreter gets fp32 and no swap."""
    native = x2d.is_cuda
    options = dict(UPCAST=not native, SWAP=native and config.swap and block_m >= 16, GROUP_M=config.group_m)
    if native:
        options.update(num_warps=config.num_warps, num_stages=num_stages)
    return options


def matmul(x2d: torch.Tensor, layout: str, tensors, dims, bias, config: Config | None = None, split_k=None,
           out=None, partials=None):
    """x2d (M, K) @ W.T + bias for a pure tile format or a hybrid tile grid, through `tile_grid_kernel`."""
    n, k = dims[0], dims[1]
    config = config or default_config(x2d.shape[0])
    pointers, grid_cols, block_n, block_k, constexprs = kernel_arguments(layout, tensors, dims, config)
    if split_k is None and config.split_k:
        split_k = config.split_k
    block_m, stages = fit_shared(config, config.block_m, block_k, x2d)
    if not x2d.is_cuda:
        block_m = block_m_for(x2d.shape[0])
    tiling = choose_tiling(x2d, n, triton.cdiv(k, block_k), block_n, block_k, split_k, block_m)
    constexprs.update(launch_options(x2d, tiling.block_m, config, stages))
    return launch(tile_grid_kernel, x2d, n, k, bias, tiling, pointers, (grid_cols,), constexprs, out, partials)
