"""Single-row decode kernels: x (1, K) @ W.T + bias for INT4, NV24, NV24_INT4, BSR_INT4 and HYBRID grids of DENSE /
NV24 / ZERO tiles, one weight pass. On the GPU `gluon_decode`'s kernels run in their place (the same
arithmetic, with explicit register layouts that keep each K block out of shared memory); these run under the
CPU interpreter and where a block is too small for one warp.

At M == 1 a layer is a stream of weight bytes (a 4096 x 4096 INT4 layer is 8.9 MB against 8 KB of x), so the
kernels are built around the weight loads: every stored byte is read once, as 32-bit words (int32 views of the
packed tensors, made on the host), with 16-byte contiguous loads along each row, and unpacked with shifts and
masks. Nothing is converted with an integer-to-float instruction: a 4-bit q is moved to the top of an fp32
mantissa, f = 1 + q / 16 (one shift and one and-or, a single LOP3 with the bits of 1.0 held in a register:
`one_bits`), so q * x = 16 * (f * x - x); a bf16 value is the high or low half of its word shifted into an fp32.
The activations are tiny and stay in L1; each program loads the x values of its words once per K block and
reuses them for all its rows.

Kernel guide. Program (pid_n, pid_k) owns BLOCK_N output rows and the pid_k-th of SPLIT_K slices of the K
blocks (BSR_INT4: one block row and every SPLIT_K-th group of BLOCK_B kept blocks, the row pointers read on the
device; HYBRID: BLOCK_N rows of one tile row, K blocks = tiles). INT4, NV24 and NV24_INT4 keep an fp32
accumulator of the weight tile's shape through the loop and reduce it once at the end; BSR_INT4 and HYBRID
reduce each block to a (BLOCK_N,) accumulator. All but NV24_INT4 load K block i + 1 while they compute block i
(masked off past the slice): the loads of a block are otherwise all waited for before the next are issued, and
at M == 1 that latency, not bandwidth, sets the time. NV24_INT4 is bound by its selects instead, and the
registers of a second block slow it down. Per K block, for its rows:

    int4       a (BLOCK_N, G, W) tile of words, G quantization groups of W = GROUP / 8 words; nibble i (bits
               4i..4i+3) of word w = input 8w + i (the packed byte order read as little-endian words). Per word
               d = sum_i f_i * x[8w + i] and xs = sum_i x[8w + i], the word's 8 inputs one contiguous (vector)
               load shared by the program's rows; with a = 16 s and b = m - 16 s of its group, the block adds
               sum a * d + b * xs (fp32 x: sum (q s + m) x, each weight first, `int4_word_products`). With
               G * W >= 32 * num_warps each thread holds one word column of every row (about 35 instructions a
               word on sm_90); smaller blocks split the 8 inputs over threads.
    bsr_int4   the same per stored block (block_n rows x GROUP inputs), BLOCK_B blocks at once, each block's x
               from its column index.
    nv24       (bf16 only) the meta bytes (BLOCK_N, B) and one value word per group of 4 (BLOCK_N, B, 2), two
               groups a meta byte; x loaded as contiguous runs of 8 and split into the four inputs of each group;
               the meta nibble picks x[4g + idx] with three selects.
    nv24_int4  (BLOCK_N, G, W) value words, 4 groups of 4 a word (a byte each: v0 low nibble, v1 high) and the
               meta read as int16 words, 4 nibbles matching the 4 value bytes; W = GROUP / 8 words per
               quantization group of 2 * GROUP inputs. d = sum f * x_kept, xs = sum x_kept (row-dependent;
               fp32 x: each weight first, as INT4).
    hybrid     (bf16, no INT4 / NV24_INT4 tiles) per tile its format code and offset (two scalar loads), then
               the DENSE rows (bf16) and the NV24 meta / value words, loaded with masks that keep only the tile's
               own format; both products are added (a ZERO tile moves no weight bytes). With K % 8 == 0 offsets
               and widths are hinted as multiples of 8.
The epilogue (bias, cast, or fp32 partials summed by the split-K reduction) is `tiling`'s with BLOCK_M = 1.
Launch grids depend only on N, K and the config: safe inside CUDA graphs and torch.compile.
"""
from __future__ import annotations

import dataclasses

import torch
import triton
import triton.language as tl

from . import gluon_decode
from .hybrid import CODE_DENSE, CODE_NV24, CODE_ZERO
from .tiling import Tiling, launch, sm_count, store_result

LAYOUTS = ("int4", "nv24", "nv24_int4", "bsr_int4")


@dataclasses.dataclass(frozen=True)
class Config:
    """Rows per program (BSR_INT4: blocks per iteration), inputs per K block (BSR_INT4 and HYBRID: their
    block or tile), split-K slices (0: as many as fill the GPU, `fill_split`) and launch options."""
    block_n: int
    block_k: int
    split_k: int = 1
    num_warps: int = 4
    num_stages: int = 2


DEFAULTS = {  # layout -> Config where the tuned table has no entry: the H100's choice on most Llama shapes. HYBRID
    # fills the GPU with split-K (one tile at a time per program); the others keep one slice, as the reduction's
    # launch costs more than the idle SMs on small layers (`benchmarks/decode_fill.py`)
    "int4": Config(16, 1024, 1, 4), "nv24": Config(8, 512, 1, 8), "nv24_int4": Config(8, 2048, 1, 4),
    "bsr_int4": Config(4, 0, 4, 4, 1), "hybrid": Config(16, 0, 0, 4),
}
PROGRAMS_PER_SM = 2


def fill_split(row_programs: int, k_steps: int, sms: int) -> int:
    """Split-K slices that bring a grid of `row_programs` to PROGRAMS_PER_SM programs per SM, at most one per
    K block: a layer with few rows (a 1024 x 4096 projection has 64 programs of 16 rows) otherwise leaves most
    SMs without weights to stream. Used where a config asks for split_k = 0."""
    return max(1, min(PROGRAMS_PER_SM * sms // max(1, row_programs), k_steps))


@triton.jit
def one_bits(N):
    """0x3F800000, the bits of fp32 1.0, derived from the non-negative kernel argument N so that it lives in a
    register: (nibble & mask) | one then compiles to a single three-input LOP3, which takes one immediate."""
    return (N >> 31) | 0x3F800000


@triton.jit
def nibble_as_float(words, I: tl.constexpr, one):
    """1 + q / 16 in fp32 for the nibble q at bits 4I..4I+3 of each word: q moved to the top of the mantissa."""
    if 4 * I <= 19:
        moved = words << (19 - 4 * I)
    else:
        moved = words >> (4 * I - 19)
    return ((moved & 0x00780000) | one).to(tl.float32, bitcast=True)


@triton.jit
def load_x(x_ptr, offs, K, stride_xk):
    return tl.load(x_ptr + offs * stride_xk, mask=offs < K, other=0.0).to(tl.float32)


@triton.jit
def dequantized(f, s, m):
    """q * s + m for f = 1 + q / 16 (`nibble_as_float`): one weight, computed as `int4.dequantize` does."""
    return (f - 1.0) * 16.0 * s + m


@triton.jit
def int4_word_products(words, x, s, m, one, PER_WEIGHT: tl.constexpr):
    """sum_i w_i * x[..., i] per word (nibble i at bits 4i), w = q * s + m; words (A, B, W), s and m (A, B, 1),
    x (A or 1, B or 1, W, 8) fp32: each word's 8 inputs, loaded as one contiguous run (one vector load) and
    shared by the rows that broadcast over it. Shared by the group: 16 s * d + (m - 16 s) * xs with
    d = sum_i (1 + q_i / 16) * x_i and xs = sum_i x_i; PER_WEIGHT (fp32 x): each weight first (`dequantized`),
    since the shared form rounds at the size of 16 s * d, far above fp32's precision where w is near 0."""
    shift = 19 - 4 * tl.arange(0, 8)
    w = words[:, :, :, None]
    moved = tl.where(shift >= 0, w << tl.maximum(shift, 0), w >> tl.maximum(-shift, 0))
    f = ((moved & 0x00780000) | one).to(tl.float32, bitcast=True)
    if PER_WEIGHT:
        return tl.sum(dequantized(f, s[:, :, :, None], m[:, :, :, None]) * x, axis=3)
    return 16 * s * tl.sum(f * x, axis=3) + (m - 16 * s) * tl.sum(x, axis=3)


@triton.jit
def group_at(rows, row_ok, row_groups, step, live, G: tl.constexpr):
    """(index, mask) of the G groups of K block `step` in each row (masked off unless `live`)."""
    groups = step * G + tl.arange(0, G)
    return rows.to(tl.int64)[:, None] * row_groups + groups[None, :], row_ok[:, None] & (groups < row_groups) & live


@triton.jit
def group_words(ptr, at, ok, W: tl.constexpr):
    """(BLOCK_N, G, W) words: the W words of each group `at`."""
    return tl.load(ptr + at[:, :, None] * W + tl.arange(0, W)[None, None, :], mask=ok[:, :, None], other=0)


@triton.jit
def group_loads(q_ptr, scales_ptr, mins_ptr, rows, row_ok, row_groups, step, live, G: tl.constexpr,
                W: tl.constexpr):
    """(scales, mins (BLOCK_N, G) fp32, words (BLOCK_N, G, W)) of K block `step` (all zero unless `live`):
    G groups of W words a row, one scale and minimum a group."""
    at, ok = group_at(rows, row_ok, row_groups, step, live, G)
    s = tl.load(scales_ptr + at, mask=ok, other=0.0).to(tl.float32)
    m = tl.load(mins_ptr + at, mask=ok, other=0.0).to(tl.float32)
    return s, m, group_words(q_ptr, at, ok, W)


@triton.jit
def k_slice(steps, SPLIT_K: tl.constexpr):
    """(first, end) K block of this program's split-K slice."""
    per_split = tl.cdiv(steps, SPLIT_K)
    first = tl.program_id(1) * per_split
    return first, tl.minimum(first + per_split, steps)


@triton.jit
def int4_block_loads(q_ptr, scales_ptr, mins_ptr, x_ptr, rows, row_ok, row_groups, K, stride_xk, step, live,
                     G: tl.constexpr, W: tl.constexpr):
    """(scales, mins (BLOCK_N, G), words (BLOCK_N, G, W), x (1, G, W, 8) fp32) of K block `step`, all zero
    unless `live`."""
    s, m, words = group_loads(q_ptr, scales_ptr, mins_ptr, rows, row_ok, row_groups, step, live, G, W)
    kbase = 8 * ((step * G + tl.arange(0, G))[:, None] * W + tl.arange(0, W)[None, :])
    x = load_x(x_ptr, (kbase[:, :, None] + tl.arange(0, 8)[None, None, :])[None], tl.where(live, K, 0), stride_xk)
    return s, m, words, x


@triton.jit
def int4_decode_kernel(x_ptr, out_ptr, bias_ptr, q_ptr, scales_ptr, mins_ptr, M, N, K, stride_xm, stride_xk,
                       HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       SPLIT_K: tl.constexpr, USE_DOT: tl.constexpr, DOT_DTYPE: tl.constexpr,
                       PRECISION: tl.constexpr, ROUND_BF16: tl.constexpr, GROUP: tl.constexpr):
    """q_ptr: int32 words (N, Kp / 8)."""
    PER_WEIGHT: tl.constexpr = x_ptr.dtype.element_ty == tl.float32  # see `int4_word_products`
    G: tl.constexpr = BLOCK_K // GROUP
    W: tl.constexpr = GROUP // 8
    one = one_bits(N)
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    row_groups = tl.cdiv(K, GROUP)
    first, end = k_slice(tl.cdiv(row_groups, G), SPLIT_K)
    acc = tl.zeros((BLOCK_N, G, W), tl.float32)
    s, m, words, x = int4_block_loads(q_ptr, scales_ptr, mins_ptr, x_ptr, rows, row_ok, row_groups, K, stride_xk,
                                      first, first < end, G, W)
    for step in range(first, end):
        s_n, m_n, words_n, x_n = int4_block_loads(q_ptr, scales_ptr, mins_ptr, x_ptr, rows, row_ok, row_groups, K,
                                                  stride_xk, step + 1, step + 1 < end, G, W)
        acc += int4_word_products(words, x, s[:, :, None], m[:, :, None], one, PER_WEIGHT)
        s, m, words, x = s_n, m_n, words_n, x_n
    out = tl.sum(tl.sum(acc, axis=2), axis=1)[None, :]
    store_result(out, out_ptr, bias_ptr, tl.arange(0, 1), rows, 1, N, tl.program_id(1), HAS_BIAS, SPLIT_K, ROUND_BF16)


@triton.jit
def bsr_loads(col_ptr, q_ptr, scales_ptr, mins_ptr, first, count, i0, rows, BLOCK_B: tl.constexpr,
              BLOCK_N: tl.constexpr, W: tl.constexpr):
    """(cols (BLOCK_B,), scales, mins (BLOCK_B, BLOCK_N), words (BLOCK_B, BLOCK_N, W)) of kept blocks
    i0 .. i0 + BLOCK_B of a block row (zeros past `count`)."""
    ids = i0 + tl.arange(0, BLOCK_B)
    ok = ids < count
    blocks = (first + ids).to(tl.int64)
    cols = tl.load(col_ptr + blocks, mask=ok, other=0).to(tl.int32)
    at = blocks[:, None] * BLOCK_N + rows[None, :]
    s = tl.load(scales_ptr + at, mask=ok[:, None], other=0.0).to(tl.float32)
    m = tl.load(mins_ptr + at, mask=ok[:, None], other=0.0).to(tl.float32)
    words = tl.load(q_ptr + at[:, :, None] * W + tl.arange(0, W)[None, None, :], mask=ok[:, None, None], other=0)
    return cols, s, m, words


@triton.jit
def bsr_int4_decode_kernel(x_ptr, out_ptr, bias_ptr, row_ptr, col_ptr, q_ptr, scales_ptr, mins_ptr, M, N, K,
                           stride_xm, stride_xk, HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr,
                           BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
                           USE_DOT: tl.constexpr, DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
                           ROUND_BF16: tl.constexpr, BLOCK_B: tl.constexpr):
    """BLOCK_N = block_n and BLOCK_K = group; q_ptr: int32 words (nnz, block_n, group / 8)."""
    PER_WEIGHT: tl.constexpr = x_ptr.dtype.element_ty == tl.float32  # see `int4_word_products`
    W: tl.constexpr = BLOCK_K // 8
    STRIDE: tl.constexpr = SPLIT_K * BLOCK_B
    one = one_bits(N)
    pid_n, pid_k = tl.program_id(0), tl.program_id(1)
    first = tl.load(row_ptr + pid_n)
    count = tl.load(row_ptr + pid_n + 1) - first
    rows = tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_N,), tl.float32)
    cols, s, m, words = bsr_loads(col_ptr, q_ptr, scales_ptr, mins_ptr, first, count, pid_k * BLOCK_B, rows, BLOCK_B,
                                  BLOCK_N, W)
    for i0 in range(pid_k * BLOCK_B, count, STRIDE):
        cols_n, s_n, m_n, words_n = bsr_loads(col_ptr, q_ptr, scales_ptr, mins_ptr, first, count, i0 + STRIDE, rows,
                                              BLOCK_B, BLOCK_N, W)
        ok = i0 + tl.arange(0, BLOCK_B) < count
        kbase = tl.where(ok, cols * BLOCK_K, K)[:, None, None] + 8 * tl.arange(0, W)[None, None, :]
        x = load_x(x_ptr, kbase[:, :, :, None] + tl.arange(0, 8)[None, None, None, :], K, stride_xk)
        part = int4_word_products(words, x, s[:, :, None], m[:, :, None], one, PER_WEIGHT)
        acc += tl.sum(tl.sum(part, axis=2), axis=0)
        cols, s, m, words = cols_n, s_n, m_n, words_n
    store_result(acc[None, :], out_ptr, bias_ptr, tl.arange(0, 1), pid_n * BLOCK_N + rows, 1, N, pid_k, HAS_BIAS,
                 SPLIT_K, ROUND_BF16)


@triton.jit
def pick(idx, x0, x1, x2, x3):
    """x_idx elementwise, idx in 0..3."""
    return tl.where(idx < 2, tl.where(idx == 0, x0, x1), tl.where(idx == 2, x2, x3))


@triton.jit
def quad_split(x):
    """(x0, x1, x2, x3): the four inputs of each group of 4, x (..., 2, 2) holding input 2a + b at [..., a, b]."""
    even, odd = tl.split(x)
    x0, x2 = tl.split(even)
    x1, x3 = tl.split(odd)
    return x0, x1, x2, x3


@triton.jit
def nv24_loads(values_ptr, meta_ptr, rows, row_ok, row_bytes, step, live, B: tl.constexpr):
    """(meta (BLOCK_N, B) int32, words (BLOCK_N, B, 2)) of K block `step`: B meta bytes a row and the two
    value words (groups of 4) of each (zeros unless `live`)."""
    pairs = step * B + tl.arange(0, B)
    ok = row_ok[:, None] & (pairs < row_bytes)[None, :] & live
    at = rows.to(tl.int64)[:, None] * row_bytes + pairs[None, :]
    meta = tl.load(meta_ptr + at, mask=ok, other=0).to(tl.int32)
    words = tl.load(values_ptr + at[:, :, None] * 2 + tl.arange(0, 2)[None, None, :], mask=ok[:, :, None], other=0)
    return meta, words


@triton.jit
def nv24_decode_kernel(x_ptr, out_ptr, bias_ptr, values_ptr, meta_ptr, M, N, K, stride_xm, stride_xk,
                       HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       SPLIT_K: tl.constexpr, USE_DOT: tl.constexpr, DOT_DTYPE: tl.constexpr,
                       PRECISION: tl.constexpr, ROUND_BF16: tl.constexpr):
    """values_ptr: int32 words (N, Kp / 4), one group of 4 inputs each; meta_ptr: uint8 (N, Kp / 8)."""
    B: tl.constexpr = BLOCK_K // 8  # meta bytes (pairs of groups) per K block
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    row_bytes = tl.cdiv(K, 8)
    first, end = k_slice(tl.cdiv(row_bytes, B), SPLIT_K)
    acc = tl.zeros((BLOCK_N, B, 2), tl.float32)
    meta, words = nv24_loads(values_ptr, meta_ptr, rows, row_ok, row_bytes, first, first < end, B)
    for step in range(first, end):
        meta_n, words_n = nv24_loads(values_ptr, meta_ptr, rows, row_ok, row_bytes, step + 1, step + 1 < end, B)
        offs = 8 * (step * B + tl.arange(0, B))[:, None] + tl.arange(0, 8)[None, :]
        x0, x1, x2, x3 = quad_split(tl.reshape(load_x(x_ptr, offs, K, stride_xk), (1, B, 2, 2, 2)))
        nibbles = (meta[:, :, None] >> (4 * tl.arange(0, 2))[None, None, :]) & 0xF
        v0 = (words << 16).to(tl.float32, bitcast=True)
        v1 = (words & -65536).to(tl.float32, bitcast=True)
        acc += v0 * pick(nibbles & 3, x0, x1, x2, x3) + v1 * pick(nibbles >> 2, x0, x1, x2, x3)
        meta, words = meta_n, words_n
    out = tl.sum(tl.sum(acc, axis=2), axis=1)[None, :]
    store_result(out, out_ptr, bias_ptr, tl.arange(0, 1), rows, 1, N, tl.program_id(1), HAS_BIAS, SPLIT_K, ROUND_BF16)


@triton.jit
def nv24_int4_decode_kernel(x_ptr, out_ptr, bias_ptr, q_ptr, scales_ptr, mins_ptr, meta_ptr, M, N, K, stride_xm,
                            stride_xk, HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                            BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr, USE_DOT: tl.constexpr,
                            DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr, ROUND_BF16: tl.constexpr,
                            GROUP: tl.constexpr):
    """q_ptr: int32 words (N, Kp / 16), 4 groups of 4 each; meta_ptr: int16 words (N, Kp / 16), the same 4."""
    SPAN: tl.constexpr = 2 * GROUP  # inputs per quantization group
    PER_WEIGHT: tl.constexpr = x_ptr.dtype.element_ty == tl.float32  # see `int4_word_products`
    G: tl.constexpr = BLOCK_K // SPAN
    W: tl.constexpr = SPAN // 16
    one = one_bits(N)
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    row_groups = tl.cdiv(K, SPAN)
    first, end = k_slice(tl.cdiv(row_groups, G), SPLIT_K)
    acc = tl.zeros((BLOCK_N, G, W), tl.float32)
    for step in range(first, end):
        s, m, words = group_loads(q_ptr, scales_ptr, mins_ptr, rows, row_ok, row_groups, step, True, G, W)
        at, ok = group_at(rows, row_ok, row_groups, step, True, G)
        nibbles = group_words(meta_ptr, at, ok, W).to(tl.int32)
        s3, m3 = s[:, :, None], m[:, :, None]
        quad0 = 16 * ((step * G + tl.arange(0, G))[:, None] * W + tl.arange(0, W)[None, :])  # first input a word
        d = tl.zeros((BLOCK_N, G, W), tl.float32)
        xs = tl.zeros((BLOCK_N, G, W), tl.float32)
        for j in tl.static_range(4):
            quad = quad0 + 4 * j
            x0 = load_x(x_ptr, quad, K, stride_xk)[None]
            x1 = load_x(x_ptr, quad + 1, K, stride_xk)[None]
            x2 = load_x(x_ptr, quad + 2, K, stride_xk)[None]
            x3 = load_x(x_ptr, quad + 3, K, stride_xk)[None]
            xa = pick((nibbles >> (4 * j)) & 3, x0, x1, x2, x3)
            xb = pick((nibbles >> (4 * j + 2)) & 3, x0, x1, x2, x3)
            fa, fb = nibble_as_float(words, 2 * j, one), nibble_as_float(words, 2 * j + 1, one)
            if PER_WEIGHT:  # each weight first, as `int4_word_products`
                d += dequantized(fa, s3, m3) * xa + dequantized(fb, s3, m3) * xb
            else:
                d += fa * xa + fb * xb
                xs += xa + xb
        acc += d if PER_WEIGHT else 16 * s3 * d + (m3 - 16 * s3) * xs
    out = tl.sum(tl.sum(acc, axis=2), axis=1)[None, :]
    store_result(out, out_ptr, bias_ptr, tl.arange(0, 1), rows, 1, N, tl.program_id(1), HAS_BIAS, SPLIT_K,
                 ROUND_BF16)


@triton.jit
def hybrid_tile_loads(formats_ptr, offsets_ptr, dense_ptr, values_ptr, meta_ptr, grid_cols, tile_row, col, live, rows,
                      row_ok, K,
                      HAS_DENSE: tl.constexpr, HAS_NV24: tl.constexpr, BLOCK_N: tl.constexpr, TILE: tl.constexpr,
                      ALIGNED: tl.constexpr):
    """(dense (BLOCK_N, B, 8) bf16, meta (BLOCK_N, B) int32, value words (BLOCK_N, B, 2)) of tile column `col`
    for the program's rows, B = TILE / 8: each format's loads masked off unless the tile is of that format (and
    `live`)."""
    B: tl.constexpr = TILE // 8
    code = tl.load(formats_ptr + tile_row * grid_cols + col, mask=live, other=CODE_ZERO).to(tl.int32)
    base = tl.load(offsets_ptr + tile_row * grid_cols + col, mask=live, other=0)
    width = tl.minimum(K - col * TILE, TILE)
    if ALIGNED:  # K % 8 == 0: every tile offset and width is a multiple of 8 weights (16-byte loads)
        base, width = tl.multiple_of(base, 8), tl.multiple_of(width, 8)
    pairs = tl.arange(0, B)
    dense = tl.zeros((1, 1, 1), tl.bfloat16)
    meta = tl.zeros((1, 1), tl.int32)
    words = tl.zeros((1, 1, 1), tl.int32)
    if HAS_DENSE:
        local = 8 * pairs[:, None] + tl.arange(0, 8)[None, :]
        ok = (row_ok & (code == CODE_DENSE) & live)[:, None, None] & (local < width)[None]
        dense = tl.load(dense_ptr + (base + rows.to(tl.int64) * width)[:, None, None] + local[None], mask=ok,
                        other=0.0)
    if HAS_NV24:
        row_bytes = (base + rows.to(tl.int64) * (tl.cdiv(width, 8) * 8)) // 8
        ok = (row_ok & (code == CODE_NV24) & live)[:, None] & (8 * pairs < width)[None, :]
        meta = tl.load(meta_ptr + row_bytes[:, None] + pairs[None, :], mask=ok, other=0).to(tl.int32)
        words = tl.load(values_ptr + (2 * (row_bytes[:, None] + pairs[None, :]))[:, :, None]
                        + tl.arange(0, 2)[None, None, :], mask=ok[:, :, None], other=0)
    return dense, meta, words


@triton.jit
def hybrid_decode_kernel(x_ptr, out_ptr, bias_ptr, formats_ptr, offsets_ptr, dense_ptr, values_ptr, meta_ptr, M, N, K,
                         stride_xm, stride_xk, grid_cols, HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr,
                         BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr, USE_DOT: tl.constexpr,
                         DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr, ROUND_BF16: tl.constexpr,
                         HAS_DENSE: tl.constexpr, HAS_NV24: tl.constexpr, ALIGNED: tl.constexpr):
    """A HYBRID grid of DENSE, NV24 and ZERO tiles, BLOCK_K = tile, BLOCK_N dividing it; dense_ptr bf16, values_ptr
    the NV24 values as int32 words, meta_ptr uint8."""
    B: tl.constexpr = BLOCK_K // 8
    pid_n = tl.program_id(0)
    tile_row = pid_n * BLOCK_N // BLOCK_K
    rows = pid_n * BLOCK_N - tile_row * BLOCK_K + tl.arange(0, BLOCK_N)  # inside the tile
    row_ok = rows < tl.minimum(N - tile_row * BLOCK_K, BLOCK_K)
    first, end = k_slice(grid_cols, SPLIT_K)
    acc = tl.zeros((BLOCK_N,), tl.float32)
    dense, meta, words = hybrid_tile_loads(formats_ptr, offsets_ptr, dense_ptr, values_ptr, meta_ptr, grid_cols,
                                           tile_row, first, first < end, rows, row_ok, K, HAS_DENSE, HAS_NV24,
                                           BLOCK_N, BLOCK_K, ALIGNED)
    for col in range(first, end):
        dense_n, meta_n, words_n = hybrid_tile_loads(formats_ptr, offsets_ptr, dense_ptr, values_ptr, meta_ptr,
                                                     grid_cols, tile_row, col + 1, col + 1 < end, rows, row_ok, K,
                                                     HAS_DENSE, HAS_NV24, BLOCK_N, BLOCK_K, ALIGNED)
        x = load_x(x_ptr, col * BLOCK_K + 8 * tl.arange(0, B)[:, None] + tl.arange(0, 8)[None, :], K, stride_xk)
        if HAS_DENSE:
            acc += tl.sum(tl.sum(dense.to(tl.float32) * x[None], axis=2), axis=1)
        if HAS_NV24:
            x0, x1, x2, x3 = quad_split(tl.reshape(x, (1, B, 2, 2, 2)))
            nibbles = (meta[:, :, None] >> (4 * tl.arange(0, 2))[None, None, :]) & 0xF
            v0 = (words << 16).to(tl.float32, bitcast=True)
            v1 = (words & -65536).to(tl.float32, bitcast=True)
            part = v0 * pick(nibbles & 3, x0, x1, x2, x3) + v1 * pick(nibbles >> 2, x0, x1, x2, x3)
            acc += tl.sum(tl.sum(part, axis=2), axis=1)
        dense, meta, words = dense_n, meta_n, words_n
    store_result(acc[None, :], out_ptr, bias_ptr, tl.arange(0, 1), pid_n * BLOCK_N + tl.arange(0, BLOCK_N), 1, N,
                 tl.program_id(1), HAS_BIAS, SPLIT_K, ROUND_BF16)


KERNELS = {"int4": int4_decode_kernel, "nv24": nv24_decode_kernel, "nv24_int4": nv24_int4_decode_kernel,
           "bsr_int4": bsr_int4_decode_kernel, "hybrid": hybrid_decode_kernel}


def supports(layout: str, m: int, dtype: torch.dtype, tensors=None) -> bool:
    """M == 1; NV24 only with bf16 values (the halves of a word shifted into fp32 are bf16's bits); HYBRID only
    in bf16 with no INT4 or NV24_INT4 tiles (from the buffer sizes `tensors` hold: no data is read)."""
    if m != 1:
        return False
    if layout == "hybrid":
        return dtype == torch.bfloat16 and tensors is not None and not any(t.numel() for t in tensors[5:])
    return layout in LAYOUTS and (layout != "nv24" or dtype == torch.bfloat16)


def word_views(layout: str, tensors, dims) -> list[torch.Tensor]:
    """The packed tensors with the weight bytes (and NV24_INT4's meta) viewed as 32-bit (16-bit) words."""
    tensors = list(tensors)
    if layout == "int4":
        tensors[0] = tensors[0].view(torch.int32)
    elif layout == "nv24":
        tensors[0] = tensors[0].view(torch.int32)
    elif layout == "nv24_int4":
        tensors[0], tensors[3] = tensors[0].view(torch.int32), tensors[3].view(torch.int16)
    elif layout == "hybrid":  # grid, offsets, dense, nv24 values, nv24 meta (no int4 tiles)
        tensors = [*tensors[:3], tensors[3].view(torch.int32) if tensors[3].numel() else None, tensors[4]]
    else:  # bsr_int4: (nnz, block_n, group / 2) bytes
        tensors[2] = tensors[2].view(torch.int32)
    return tensors


def block_k(layout: str, dims, config: Config) -> int:
    """Inputs per K block: a power of two of whole groups (the format's span), at most the padded K."""
    n, k, group = dims[0], dims[1], dims[2]
    span = {"int4": group, "nv24": 8, "nv24_int4": 2 * group}[layout]
    padded = triton.cdiv(k, span) * span
    return max(span, min(config.block_k, triton.next_power_of_2(padded)))


def rows_and_inputs(layout: str, dims, config: Config) -> tuple[int, int]:
    """(rows, inputs) of a program's block: BLOCK_N and BLOCK_K of its Tiling."""
    if layout == "hybrid":
        return min(config.block_n, dims[3]), dims[3]
    if layout == "bsr_int4":
        return dims[3], dims[2]
    return config.block_n, block_k(layout, dims, config)


def split_for(layout: str, dims, config: Config, device: torch.device) -> int:
    """The config's split-K slices, with 0 resolved by `fill_split` (one slice off the GPU)."""
    if config.split_k or device.type != "cuda":
        return max(1, config.split_k)
    block_n, inputs = rows_and_inputs(layout, dims, config)
    return fill_split(triton.cdiv(dims[0], block_n), triton.cdiv(dims[1], inputs), sm_count(device.index or 0))


def matmul(x2d: torch.Tensor, layout: str, tensors, dims, bias, config: Config, split_k=None, out=None,
           partials=None):
    """x2d (1, K) @ W.T + bias for an INT4, NV24, NV24_INT4, BSR_INT4 or HYBRID (DENSE / NV24 / ZERO) weight."""
    n, k, group = dims[0], dims[1], dims[2]
    views, extra = word_views(layout, tensors, dims), ()
    if layout == "hybrid":
        views = [t if t is None or t.numel() else None for t in views]  # a format without tiles: no pointer
        constexprs = {"HAS_DENSE": views[2] is not None, "HAS_NV24": views[3] is not None, "ALIGNED": k % 8 == 0}
        extra = (views[0].shape[1],)
    elif layout == "bsr_int4":
        constexprs = {"BLOCK_B": config.block_n}
    else:
        constexprs = {} if layout == "nv24" else {"GROUP": group}
    split = split_k if split_k is not None else split_for(layout, dims, config, x2d.device)
    tiling = Tiling(1, *rows_and_inputs(layout, dims, config), split)
    kernel, dependent = KERNELS[layout], False
    if x2d.is_cuda:
        constexprs.update(num_warps=config.num_warps, num_stages=config.num_stages)
        explicit = gluon_decode.explicit_kernel(layout, tiling.block_n, tiling.block_k, dims, config, x2d.dtype)
        if explicit is not None:
            kernel, more, layout_constexprs = explicit
            extra, x2d = (*extra, *more), gluon_decode.x_as_pairs(x2d)
            constexprs.update(layout_constexprs)
            dependent = True
    return launch(kernel, x2d, n, k, bias, tiling, views, extra, constexprs, out, partials, dependent)
