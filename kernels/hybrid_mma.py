"""HYBRID grids of DENSE, NV24 and ZERO 128 x 128 tiles (PATCH's layout) at small M (2 to 128 rows of x, and one
row where DENSE and NV24 tiles mix or x is fp16) on the GPU: NV24 tiles on the sparse tensor cores exactly as
`nv24_mma` runs a chunk, DENSE tiles on mma.sync m16n8k16 in the same register layout LD, into one accumulator.

A program owns BLOCK_N rows of one tile row (BLOCK_N divides 128) and walks its slice of the tile columns; a tile
column is one 128-input chunk. Where K % 128 != 0 the last column's tiles are narrower, stored with their own row
length: the loop stops before that column, and `edge_tile` runs its tile with zero-filled loads. Per tile it reads
the tile's format code and offset (two ahead), puts the x chunk into shared memory in each present format's step
order, and loads the DENSE pairs or the NV24 values and metadata with the other format's loads masked off (no bytes
move for them; ZERO tiles move none at all), one tile ahead. Only the tile's own product runs: the branch on its
code is the same for the whole program, and the loads ahead are issued before it. Running both products on every
tile, the absent one on zeros, took up to 45% longer at M = 64 and up to 10% at M = 16 (RESULTS.md). The formats
present in the grid are constexprs, so an all-DENSE grid holds no sparse code and an all-NV24 grid no dense code.
Where the tuner found it faster (up to 16 x rows), thread 0 also asks L2 for the program's rows of the tile two
columns ahead, one bulk prefetch a span (`l2_prefetch`).

A DENSE tile row is 64 int32 pairs. Inside it pair P = 16 j + 4 c + 2 t + b is pair c + 4 b of mma step 2 j + t (8
steps of 16 inputs): thread c of a quad loads pairs 16 j + 4 c .. 16 j + 4 c + 3 (j = 0 .. 3) of rows g and g + 8,
which are its A registers for every step, so that each 16-byte load of a quad reads 64 contiguous bytes (whole
sectors: 64 contiguous bytes a thread took 11 to 28% longer at M = 64, RESULTS.md). x's pairs 16 j + 4 c + 2 t + i
are its B registers i of step 2 j + t: `x_to_dense_steps` puts each thread's 4 B registers of steps 2 j and 2 j + 1
side by side in plane j, read with one 16-byte load an m-tile before the two steps, as `nv24_mma` reads its steps.
Warps split the x rows as there.
"""
from __future__ import annotations

import dataclasses
import itertools

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

from sparc.ir import TileFormat

from . import hybrid_wgmma, rebuild, sparse_wgmma
from .int4_mma import bits, split_for, store_transposed, x_rows_for
from .nv24_mma import (DTYPES, NO_INPUTS, STREAM, accumulate_steps, as_words, byte_addresses, operand,
                       operand_layouts, step_layout, steps_of, word_addresses, words_from_bytes, x_addresses, x_layout,
                       x_loads, x_to_steps)
from .gluon_decode import x_as_pairs
from .l2_prefetch import ask_l2_span
from .pdl import release_dependents, wait_for_inputs
from .tiling import Tiling, launch

MAX_M = 64  # x rows a program
# past MAX_M rows programs split x's rows; at 128 rows up to 1.5x faster than the rebuild and cuBLAS, at 256
# slower (RESULTS.md)
MOST_M = 128
TILE = 128
CODE_DENSE = gl.constexpr(int(TileFormat.DENSE))
CODE_NV24 = gl.constexpr(int(TileFormat.NV24))
CODE_ZERO = gl.constexpr(int(TileFormat.ZERO))


@dataclasses.dataclass(frozen=True)
class Config:
    """Weight rows per program (a multiple of 16 * the warps along N dividing 128), split-K slices over the tile
    columns (0: as many as fill the GPU), warps, how many of them split the x rows, and how many tile columns
    ahead the program's rows of a tile are asked into L2 (0: not at all, `l2_prefetch`)."""
    block_n: int
    split_k: int = 0
    num_warps: int = 4
    warps_m: int = 1
    prefetch: int = 0


DEFAULTS = {"hybrid": Config(64, 0, 4)}
LARGE_M_DEFAULT = Config(128, 0, 8, 1)  # past 16 x rows: 8 warps, so that both formats' registers fit


def default(layout: str, m: int):
    """Past MOST_M rows (only the Hopper kernel's tuned configs run there) the rebuild, as before that kernel."""
    if m > MOST_M:
        return rebuild.CONFIG
    return DEFAULTS[layout] if m <= 16 else LARGE_M_DEFAULT


def supports(layout: str, x2d: torch.Tensor, tensors=None) -> bool:
    """HYBRID grids of DENSE, NV24 and ZERO tiles of 128 (the last tile column narrower where K % 128 != 0; K a
    multiple of 8 and above 64, where no grid of 64-input tiles has as many columns), stored in x's dtype, times 2
    to MOST_M rows of bf16 or fp16 x on CUDA (from the buffers' sizes and dtypes: no data read). Also one row of x
    where the grid holds both DENSE and NV24 tiles (the decode kernel runs both formats' arithmetic on every tile
    and is issue-bound there, this one runs each tile's own: RESULTS.md), or in fp16, which the decode kernel does
    not take (the tile kernel would run it, slower). Past MOST_M rows, the grids `hybrid_wgmma` takes (its
    configs are candidates here)."""
    if layout != "hybrid" or tensors is None or not (1 <= x2d.shape[0] and x2d.is_cuda):
        return False
    if x2d.shape[0] > MOST_M:
        return hybrid_wgmma.supports(layout, x2d, tensors)
    grid, dense, values = tensors[0], tensors[2], tensors[3]
    if x2d.shape[0] == 1 and x2d.dtype == torch.bfloat16 and not (dense.numel() and values.numel()):
        return False
    k = x2d.shape[1]
    return (x2d.dtype in DTYPES and dense.dtype == x2d.dtype and k % 8 == 0 and k > TILE // 2
            and grid.shape[1] == -(-k // TILE) and not any(t.numel() for t in tensors[5:]))


PREFETCH_DISTANCES = (0, 2)  # tile columns ahead, up to 16 x rows; past them, and further ahead, slower (RESULTS.md)


def candidates(layout: str, m: int) -> list[Config]:
    """Past 16 x rows one row tile a warp (a DENSE tile row takes twice an NV24 one's registers), and the warps
    also split the x rows (warps along N, warps along M); up to 16 rows with and without the L2 prefetch.
    (`tuning` adds `hybrid_wgmma`'s where that kernel takes the grid.)"""
    if m > 16:
        return [Config(16 * wn, split, wn * wm, wm) for (wn, wm), split in
                itertools.product([(8, 1), (4, 2), (4, 1), (2, 2)], (0, 2, 4)) if wm <= x_rows_for(m, MAX_M) // 8]
    return [Config(16 * w * r, split, w, 1, ahead) for w, r, split, ahead in
            itertools.product((2, 4), (1, 2), (0, 2, 4), PREFETCH_DISTANCES)]


def dense_layout(block_n: int, num_warps: int, warps_m: int = 1):
    """LVD over a DENSE tile's pairs (BLOCK_N, 64), numbered 16 c + 4 j + e: thread c's 16 pairs of rows g and
    g + 8 (stored at 16 j + 4 c + e, `dense_pair_at`), as the module docstring says (the warps along M, the low
    warp bits, repeat them)."""
    w = num_warps // warps_m
    per_warp = block_n // (16 * w)
    return gl.DistributedLinearLayout(
        reg_bases=[[0, 1], [0, 2], [0, 4], [0, 8], [8, 0]] + [[16 * w << i, 0] for i in bits(per_warp)],
        lane_bases=[[0, 16], [0, 32], [1, 0], [2, 0], [4, 0]],
        warp_bases=[[0, 0]] * len(bits(warps_m)) + [[16 << i, 0] for i in bits(w)], block_bases=[],
        shape=[block_n, 64])


DENSE_X_BITS = dict(in_registers=(1, 2), in_lanes=(4, 8), step_lanes=(16, 32))  # `x_layout` for `x_to_dense_steps`


@gluon.jit
def dense_pair_at(pairs):
    """Where pair 16 c + 4 j + e of a thread's registers (c of its quad) is stored in a DENSE tile row: at
    16 j + 4 c + e."""
    return pairs % 4 + pairs // 4 % 4 * 16 + pairs // 16 * 4


@gluon.jit
def x_to_dense_steps(steps, x):
    """x's pairs (BLOCK_M, 64) of a chunk into shared memory (4 planes x BLOCK_M rows, 16): plane j holds pairs
    16 j + 4 c + e of a row (dense steps 2 j and 2 j + 1) at 4 c + e, thread c's B registers side by side."""
    BM: gl.constexpr = x.shape[0]
    v = gl.reshape(x, [BM, 4, 16])  # (row, j, 4 c + e)
    steps.store(gl.reshape(gl.permute(v, [1, 0, 2]), [4 * BM, 16]))


@gluon.jit
def eight_steps(t):
    """The 8 steps of t (..., 2 s2, 2 s1, 2 s0), each t[..., s2, s1, s0], in a fixed order."""
    low, high = gl.split(t)
    a0, a1, a2, a3 = steps_of(low)
    a4, a5, a6, a7 = steps_of(high)
    return a0, a1, a2, a3, a4, a5, a6, a7


@gluon.jit
def mma_dense(acc, a, b, dtype: gl.constexpr):
    """acc + A times B of one m16n8k16 step for every (n-tile, m-tile): A and the accumulator 4 registers each
    in LD, B 2 (registers r0 of b)."""
    if dtype == gl.bfloat16:
        return gl.inline_asm_elementwise(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
            "{$0, $1, $2, $3}, {$4, $5, $6, $7}, {$8, $9}, {$12, $13, $14, $15};",
            "=f,=f,=f,=f,r,r,r,r,r,r,r,r,f,f,f,f", [a, b, acc], dtype=gl.float32, is_pure=True, pack=4)
    return gl.inline_asm_elementwise(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{$0, $1, $2, $3}, {$4, $5, $6, $7}, {$8, $9}, {$12, $13, $14, $15};",
        "=f,=f,=f,=f,r,r,r,r,r,r,r,r,f,f,f,f", [a, b, acc], dtype=gl.float32, is_pure=True, pack=4)


@gluon.jit
def dense_accumulate_steps(acc, pairs, steps, dtype: gl.constexpr, LS: gl.constexpr, LD: gl.constexpr):
    """acc + one DENSE tile: its pairs (BLOCK_N, 64) in LVD and x from `x_to_dense_steps`' buffer, 8 steps, each
    plane of x read (16 bytes an m-tile) right before its two steps."""
    v = gl.reshape(pairs, [pairs.shape[0] // 16, 2, 8, 4, 2, 2, 2, 2])  # (n-tile, r0, g, c, s2, s1, s0, b: r1)
    a0, a1, a2, a3, a4, a5, a6, a7 = eight_steps(gl.permute(v, [0, 2, 3, 7, 1, 4, 5, 6]))  # steps 0 4 2 6 1 5 3 7
    acc = dense_plane(acc, a0, a4, steps, 0, dtype, LS, LD)
    acc = dense_plane(acc, a2, a6, steps, 1, dtype, LS, LD)
    acc = dense_plane(acc, a1, a5, steps, 2, dtype, LS, LD)
    return dense_plane(acc, a3, a7, steps, 3, dtype, LS, LD)


@gluon.jit
def dense_plane(acc, a_even, a_odd, steps, j: gl.constexpr, dtype: gl.constexpr, LS: gl.constexpr,
                LD: gl.constexpr):
    """acc + dense steps 2 j and 2 j + 1 (A registers a_even, a_odd) with B from plane j."""
    BM: gl.constexpr = steps.shape[0] // 4
    x = steps.slice(j * BM, BM).load(LS)
    even, odd = gl.split(gl.permute(gl.reshape(x, [BM // 8, 8, 4, 2, 2]), [0, 1, 2, 4, 3]))  # (.., c, i, step)
    a_shape: gl.constexpr = [a_even.shape[0], 1, 8, 4, 2, 2]
    acc = mma_dense(acc, operand(gl.reshape(a_even, a_shape), LD), dense_b(even, LD), dtype)
    return mma_dense(acc, operand(gl.reshape(a_odd, a_shape), LD), dense_b(odd, LD), dtype)


@gluon.jit
def dense_b(x, LD: gl.constexpr):
    """The B operand (1, m-tile, g, c, r1, r0) of a dense step from x (m-tile, g, c, i): register i as r0, copied
    to r1 (`mma_dense` reads r0's)."""
    t = gl.permute(gl.join(x, x), [0, 1, 2, 4, 3])
    return operand(gl.reshape(t, [1, x.shape[0], 8, 4, 2, 2]), LD)


@gluon.jit
def tile_entry(formats_ptr, offsets_ptr, at, live, TILE: gl.constexpr):
    """(format code, offset rounded to whole rows of TILE inputs, which it is: the compiler then knows its
    alignment) of the tile at `at`; ZERO's code (nothing loaded) unless `live`."""
    code = gl.load(formats_ptr + at, mask=live, other=CODE_ZERO).to(gl.int32)
    return code, gl.load(offsets_ptr + at, mask=live, other=0) // TILE * TILE


@gluon.jit
def tile_loads(dense_ptr, values_ptr, meta_ptr, code, base, dense_at, dense_ok, value_at, value_ok, word_at,
               word_ok, HAS_DENSE: gl.constexpr, HAS_NV24: gl.constexpr):
    """(DENSE pairs, NV24 pairs, NV24 metadata words) of a tile, each masked off unless the tile has that format
    (NV24 metadata then NO_INPUTS); the absent formats' loads are not built."""
    pairs = 0
    values = 0
    words = 0
    if HAS_DENSE:
        pairs = gl.load(dense_ptr + base // 2 + dense_at, mask=dense_ok & (code == CODE_DENSE), other=0,
                        eviction_policy=STREAM)
    if HAS_NV24:
        is_nv24 = code == CODE_NV24
        values = gl.load(values_ptr + base // 4 + value_at, mask=value_ok & is_nv24, other=0, eviction_policy=STREAM)
        words = gl.load(meta_ptr + base // 32 + word_at, mask=word_ok & is_nv24, other=NO_INPUTS,
                        eviction_policy=STREAM)
    return pairs, values, words


@gluon.jit
def ask_tile_l2(formats_ptr, offsets_ptr, dense_ptr, values_ptr, meta_ptr, at, live, first_row, rows,
                TILE: gl.constexpr, HAS_DENSE: gl.constexpr, HAS_NV24: gl.constexpr):
    """Ask L2 for the program's `rows` rows from first_row of the tile at `at` (unless not `live`): a tile is
    stored whole, so they are one span of bytes of its format (DENSE 256 a row, NV24 128 of values and 16 of
    metadata)."""
    code, base = tile_entry(formats_ptr, offsets_ptr, at, live, TILE)
    start = base + first_row * TILE  # in weights
    if HAS_DENSE:
        ask_l2_span(dense_ptr + start // 2, rows * (2 * TILE), (code == CODE_DENSE).to(gl.int32))
    if HAS_NV24:
        is_nv24 = (code == CODE_NV24).to(gl.int32)
        ask_l2_span(values_ptr + start // 4, rows * TILE, is_nv24)
        ask_l2_span(meta_ptr + start // 32, rows * (TILE // 8), is_nv24)


@gluon.jit
def edge_tile(acc, pairs_ptr, x_at, x_ok, xd_at, xd_ok, pairs_k, formats_ptr, offsets_ptr, dense_ptr, values_ptr,
              meta_ptr, at, chunk, width, rows_d, pairs_d, rows_v, rows_w, rows_in, steps, dense_steps,
              dtype: gl.constexpr, HAS_DENSE: gl.constexpr, HAS_NV24: gl.constexpr, LV: gl.constexpr,
              LM: gl.constexpr, LS: gl.constexpr, LD: gl.constexpr):
    """acc + the tile at `at` of the last tile column (x's chunk `chunk`), `width` inputs wide (a multiple of 8
    below TILE). It is stored as its own (rows x width) matrix: its rows are width / 2 DENSE pairs, width / 4
    NV24 value pairs and width / 8 metadata bytes apart, and its offset is a multiple of 8 only. Past the width
    the weights load as zeros (metadata NO_INPUTS) and x as zeros, so the full tile's steps run unchanged."""
    code = gl.load(formats_ptr + at).to(gl.int32)
    base = gl.load(offsets_ptr + at)
    if HAS_DENSE:
        if code == CODE_DENSE:
            row_pairs = width // 2
            ok = gl.expand_dims(rows_d < rows_in, 1) & gl.expand_dims(pairs_d < row_pairs, 0)
            at_d = base // 2 + gl.expand_dims(rows_d * row_pairs, 1) + gl.expand_dims(pairs_d, 0)
            pairs = gl.load(dense_ptr + at_d, mask=ok, other=0, eviction_policy=STREAM)
            x_to_dense_steps(dense_steps, x_loads(pairs_ptr, xd_at, xd_ok, chunk, pairs_k))
            acc = dense_accumulate_steps(acc, pairs, dense_steps, dtype, LS, LD)
    if HAS_NV24:
        if code == CODE_NV24:
            row_pairs = width // 4
            cols = gl.arange(0, 32, layout=gl.SliceLayout(0, LV))
            ok = gl.expand_dims(rows_v < rows_in, 1) & gl.expand_dims(cols < row_pairs, 0)
            at_v = base // 4 + gl.expand_dims(rows_v * row_pairs, 1) + gl.expand_dims(cols, 0)
            values = gl.load(values_ptr + at_v, mask=ok, other=0, eviction_policy=STREAM)
            byte_at, byte_ok = byte_addresses(rows_w, rows_w < rows_in, width // 8, LM)
            bytes_ptr = meta_ptr.to(gl.pointer_type(gl.uint8), bitcast=True) + base // 8
            words = words_from_bytes(bytes_ptr, byte_at, byte_ok, 0, width // 8)
            x_to_steps(steps, x_loads(pairs_ptr, x_at, x_ok, chunk, pairs_k))
            acc = accumulate_steps(acc, values, words, steps, dtype, LS, LD)
    return acc


@gluon.jit
def hybrid_mma_kernel(x_ptr, out_ptr, bias_ptr, formats_ptr, offsets_ptr, dense_ptr, values_ptr, meta_ptr, M, N,
                      K, stride_xm, stride_xk, pairs_k, grid_cols, HAS_BIAS: gl.constexpr, BLOCK_M: gl.constexpr,
                      BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, SPLIT_K: gl.constexpr, USE_DOT: gl.constexpr,
                      DOT_DTYPE: gl.constexpr, PRECISION: gl.constexpr, ROUND_BF16: gl.constexpr,
                      HAS_DENSE: gl.constexpr, HAS_NV24: gl.constexpr, EDGE: gl.constexpr, LV: gl.constexpr,
                      LM: gl.constexpr, LVD: gl.constexpr, LG: gl.constexpr, LGD: gl.constexpr, LS: gl.constexpr,
                      LD: gl.constexpr, MMA: gl.constexpr, PDL: gl.constexpr, PREFETCH: gl.constexpr = 0):
    """formats (TN, TK) uint8 and offsets (TN, TK) int64 of the grid (`hybrid`), the DENSE buffer as int32
    pairs, the NV24 values as int32 pairs and metadata as int32 words; x as for `nv24_mma.nv24_mma_kernel`.
    PREFETCH: tile columns ahead that the program's rows of a tile are asked into L2."""
    wait_for_inputs(PDL)
    dtype: gl.constexpr = x_ptr.dtype.element_ty
    pairs_ptr = x_ptr.to(gl.pointer_type(gl.int32), bitcast=True)
    grid_m = gl.cdiv(M, BLOCK_M)
    pid_m, pid_n = gl.program_id(0) % grid_m, gl.program_id(0) // grid_m
    tile_row = pid_n * BLOCK_N // BLOCK_K  # the tile is BLOCK_K square
    rows_in = gl.minimum(N - tile_row * BLOCK_K, BLOCK_K)
    first_row = pid_n * BLOCK_N - tile_row * BLOCK_K
    per_split = gl.cdiv(grid_cols, SPLIT_K)
    first = gl.program_id(1) * per_split
    end = gl.minimum(first + per_split, grid_cols)
    loop_end = gl.minimum(end, grid_cols - 1) if EDGE else end  # the last column's tiles are narrower

    rows_d = first_row + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, LVD))
    pairs_d = dense_pair_at(gl.arange(0, 64, layout=gl.SliceLayout(0, LVD)))
    dense_at = gl.expand_dims(rows_d * 64, 1) + gl.expand_dims(pairs_d, 0)
    dense_ok = gl.expand_dims(rows_d < rows_in, 1)
    rows_v = first_row + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, LV))
    value_at = gl.expand_dims(rows_v * 32, 1) + gl.expand_dims(gl.arange(0, 32, layout=gl.SliceLayout(0, LV)), 0)
    value_ok = gl.expand_dims(rows_v < rows_in, 1)
    rows_w = first_row + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, gl.SliceLayout(2, LM)))
    word_at, word_ok = word_addresses(rows_w, rows_w < rows_in, 4, LM)
    x_at, x_ok = x_addresses(pid_m, M, stride_xm, BLOCK_M, LG)  # x in NV24's step order
    xd_at, xd_ok = x_addresses(pid_m, M, stride_xm, BLOCK_M, LGD)  # and in the dense one
    plain: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [1, 0])
    steps, dense_steps = 0, 0  # shared x of the formats present
    if HAS_NV24:
        steps = gl.allocate_shared_memory(gl.int32, [4 * BLOCK_M, 16], plain)
    if HAS_DENSE:
        dense_steps = gl.allocate_shared_memory(gl.int32, [4 * BLOCK_M, 16], plain)
    entries = tile_row * grid_cols

    acc = gl.zeros([BLOCK_N // 16, BLOCK_M // 8, 8, 4, 2, 2], gl.float32, layout=LD)
    code, base = tile_entry(formats_ptr, offsets_ptr, entries + first, first < loop_end, BLOCK_K)
    pairs, values, words = tile_loads(dense_ptr, values_ptr, meta_ptr, code, base, dense_at, dense_ok, value_at,
                                      value_ok, word_at, word_ok, HAS_DENSE, HAS_NV24)
    x_chunk = x_loads(pairs_ptr, x_at, x_ok & HAS_NV24, first, pairs_k)
    xd_chunk = x_loads(pairs_ptr, xd_at, xd_ok & HAS_DENSE, first, pairs_k)
    now = code
    code, base = tile_entry(formats_ptr, offsets_ptr, entries + first + 1, first + 1 < loop_end, BLOCK_K)
    for col in range(first, loop_end):  # tile entries two columns ahead, weights and x one
        if PREFETCH:
            ask_tile_l2(formats_ptr, offsets_ptr, dense_ptr, values_ptr, meta_ptr, entries + col + PREFETCH,
                        col + PREFETCH < loop_end, first_row, gl.minimum(rows_in - first_row, BLOCK_N), BLOCK_K,
                        HAS_DENSE, HAS_NV24)
        code_n, base_n = tile_entry(formats_ptr, offsets_ptr, entries + col + 2, col + 2 < loop_end, BLOCK_K)
        pairs_n, values_n, words_n = tile_loads(dense_ptr, values_ptr, meta_ptr, code, base, dense_at, dense_ok,
                                                value_at, value_ok, word_at, word_ok, HAS_DENSE, HAS_NV24)
        x_next = x_loads(pairs_ptr, x_at, x_ok & HAS_NV24 & (col + 1 < loop_end), col + 1, pairs_k)
        xd_next = x_loads(pairs_ptr, xd_at, xd_ok & HAS_DENSE & (col + 1 < loop_end), col + 1, pairs_k)
        if HAS_DENSE:
            if now == CODE_DENSE:
                x_to_dense_steps(dense_steps, xd_chunk)
                acc = dense_accumulate_steps(acc, pairs, dense_steps, dtype, LS, LD)
        if HAS_NV24:
            if now == CODE_NV24:
                x_to_steps(steps, x_chunk)
                acc = accumulate_steps(acc, values, words, steps, dtype, LS, LD)
        pairs, values, words, now, code, base = pairs_n, values_n, words_n, code, code_n, base_n
        x_chunk, xd_chunk = x_next, xd_next
    if EDGE:
        if (first < end) & (end == grid_cols):
            acc = edge_tile(acc, pairs_ptr, x_at, x_ok, xd_at, xd_ok, pairs_k, formats_ptr, offsets_ptr, dense_ptr,
                            values_ptr, meta_ptr, entries + grid_cols - 1, grid_cols - 1,
                            K - (grid_cols - 1) * BLOCK_K, rows_d, pairs_d, rows_v, rows_w, rows_in, steps,
                            dense_steps, dtype, HAS_DENSE, HAS_NV24, LV, LM, LS, LD)
    acc = gl.reshape(gl.permute(acc, [0, 4, 2, 1, 3, 5]), [BLOCK_N, BLOCK_M])  # (n-tile, r1, g), (m-tile, c, r0)
    release_dependents(PDL)
    store_transposed(gl.convert_layout(acc, MMA), out_ptr, bias_ptr, pid_m, pid_n, M, N, HAS_BIAS, BLOCK_M,
                     BLOCK_N, SPLIT_K, MMA)


def matmul(x2d: torch.Tensor, layout: str, tensors, dims, bias, config: Config, split_k=None, out=None,
           partials=None):
    """x2d (M, K) @ W.T + bias for a HYBRID weight that `supports` takes; a `hybrid_wgmma` or `sparse_wgmma`
    config (a candidate only where that kernel takes the grid) runs that kernel."""
    if isinstance(config, hybrid_wgmma.Config):
        return hybrid_wgmma.matmul(x2d, layout, tensors, dims, bias, config, split_k, out, partials)
    if isinstance(config, sparse_wgmma.Config):
        return sparse_wgmma.matmul(x2d, layout, tensors, dims, bias, config, split_k, out, partials)
    n, k = dims[0], dims[1]
    grid, offsets, dense, values, meta = tensors[:5]
    m, block_m = x2d.shape[0], x_rows_for(x2d.shape[0], MAX_M)
    if split_k is None:
        split_k = split_for(config, -(-m // block_m) * -(-n // config.block_n), grid.shape[1], config.num_warps,
                            x2d.device)
    warps, warps_m = config.num_warps, config.warps_m
    lv, lm, ld, mma = operand_layouts(config.block_n, block_m, warps, warps_m=warps_m)
    tiling = Tiling(block_m, config.block_n, TILE, split_k)
    pairs = x_as_pairs(x2d if x2d.stride(0) % 2 == 0 else x2d.contiguous())
    has_dense, has_nv24 = dense.numel() > 0, values.numel() > 0
    words = [as_words(t) for t in (dense, values, meta)]
    return launch(hybrid_mma_kernel, pairs, n, k, bias, tiling, [grid, offsets, *words],
                  (pairs.shape[1] // 2, grid.shape[1]),
                  dict(HAS_DENSE=has_dense, HAS_NV24=has_nv24, EDGE=k % TILE != 0, LV=lv, LM=lm,
                       LVD=dense_layout(config.block_n, warps, warps_m), LG=x_layout(block_m, warps),
                       LGD=x_layout(block_m, warps, **DENSE_X_BITS), LS=step_layout(block_m, warps, warps_m), LD=ld,
                       MMA=mma, num_warps=warps, PREFETCH=config.prefetch), out, partials, dependent=True)
